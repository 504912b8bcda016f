"""DropPath (stochastic depth) for residual branches.

Reference:
    Huang, Sun, Liu, Sedra, Weinberger, "Deep Networks with Stochastic Depth", ECCV 2016.
"""

from __future__ import annotations

import keras

from keras_regkit.layers._stochastic import ScheduledRateMixin, build_weightless
from keras_regkit.ops import dropout as dropout_ops


@keras.saving.register_keras_serializable(package="keras_regkit")
class DropPath(ScheduledRateMixin, keras.layers.Layer):
    """Drops a residual branch for whole examples: ``y = shortcut + DropPath(rate)(branch)``.

    In training each example's branch output is zeroed with probability ``rate`` and the
    surviving ones are scaled by ``1 / (1 - rate)`` (so inference is the identity, unlike the
    paper's test-time scaling by the survival probability, which it is equivalent to in
    expectation). ``rate`` is schedulable (``DropoutSchedule``), e.g. the paper's linear decay
    rule over depth at construction and a ramp over epochs.

    Args:
        rate: float in [0, 1], probability of dropping the branch for an example.
        seed: int seed.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: the branch output, any rank >= 1 with examples on axis 0.
        training: Python bool; identity unless ``True``.

    Returns:
        A tensor of the input's shape.

    Raises:
        ValueError: ``rate`` outside [0, 1].

    Reference:
        Huang et al., ECCV 2016.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self._init_rate(rate, seed)
        build_weightless(self)

    def call(self, inputs, training=False):
        if training and self.schedulable:
            return dropout_ops.drop_path(inputs, self.rate_tensor, seed=self.seed_generator)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
