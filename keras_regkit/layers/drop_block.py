"""DropBlock2D: structured dropout of contiguous regions.

Reference:
    Ghiasi, Lin, Le, "DropBlock: A regularization method for convolutional networks",
    NeurIPS 2018.
"""

from __future__ import annotations

import keras

from keras_regkit import _validation
from keras_regkit.layers._stochastic import ScheduledRateMixin, check_data_format
from keras_regkit.ops import drop_block as drop_block_ops


@keras.saving.register_keras_serializable(package="keras_regkit")
class DropBlock2D(ScheduledRateMixin, keras.layers.Layer):
    """Zeroes ``block_size`` x ``block_size`` squares of each feature map in training.

    Block seeds are drawn with the paper's ``gamma`` (``keras_regkit.ops.drop_block``) so that
    about ``rate`` of the units are dropped, and the output is rescaled by
    ``count / count_kept``. The paper ramps ``rate`` linearly from 0 during training:
    ``keras_regkit.callbacks.DropoutSchedule`` does that without retracing (the rate rides in
    the layer's random state, not in its weights).

    Args:
        rate: float in [0, 1], target fraction of dropped units (``1 - keep_prob``).
        block_size: int >= 1, side of the dropped squares (at most the feature map's side).
        data_format: ``"channels_last"`` or ``"channels_first"`` (default: Keras config).
        seed: int seed.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: 4-D tensor.
        training: Python bool; identity unless ``True``.

    Returns:
        A tensor of the input's shape.

    Raises:
        ValueError: ``rate`` outside [0, 1], ``block_size`` < 1 or, when built, larger than
            the feature map.

    Reference:
        Ghiasi et al., NeurIPS 2018, Algorithm 1 and eq. (1).
    """

    def __init__(
        self,
        rate: float,
        block_size: int,
        data_format: str | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.block_size = _validation.check_int("DropBlock2D", "block_size", block_size, minimum=1)
        self.data_format = check_data_format("DropBlock2D", data_format)
        self._init_rate(rate, seed)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        spatial = input_shape[2:4] if self.data_format == "channels_first" else input_shape[1:3]
        known = [d for d in spatial if d is not None]
        if known and self.block_size > min(known):
            raise ValueError(
                f"DropBlock2D: block_size must be an integer in [1, {min(known)}] (the feature "
                f"map is {tuple(spatial)}), got {self.block_size}"
            )

    def call(self, inputs, training=False):
        if training and self.schedulable:
            return drop_block_ops.drop_block_2d(
                inputs,
                self.rate_tensor,
                self.block_size,
                seed=self.seed_generator,
                data_format=self.data_format,
            )
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "block_size": self.block_size,
            "data_format": self.data_format,
            "seed": self.seed,
        }
