"""DropConnect and WeightNoise: regularizers that perturb a Dense layer's kernel, not its outputs.

References:
    Wan, Zeiler, Zhang, LeCun, Fergus, "Regularization of Neural Networks using DropConnect",
    ICML 2013.
    Graves, "Practical Variational Inference for Neural Networks", NeurIPS 2011; An, "The
    Effects of Adding Noise During Backpropagation Training on a Generalization Performance",
    Neural Computation 8 (1996) (weight noise).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_regkit import _validation
from keras_regkit._distribution import ReplicaSeedGenerator
from keras_regkit.layers._stochastic import ScheduledRateMixin
from keras_regkit.ops import dropout as dropout_ops


def _check_dense(owner: str, layer) -> keras.layers.Dense:
    if not isinstance(layer, keras.layers.Dense):
        raise TypeError(f"{owner}: layer must be a keras.layers.Dense (or subclass), got {layer!r}")
    return layer


def _dense_with_kernel(layer: keras.layers.Dense, inputs, kernel):
    """The Dense layer's forward pass with ``kernel`` in place of its own."""
    outputs = ops.matmul(inputs, ops.cast(kernel, inputs.dtype))
    if layer.use_bias:
        outputs = outputs + ops.cast(layer.bias, inputs.dtype)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


class _KernelWrapper(keras.layers.Wrapper):
    regkit_stochastic = True

    def build(self, input_shape=None):
        super().build(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # keras.layers.Wrapper.from_config pops "layer" from the caller's dict; work on a copy.
        return super().from_config(dict(config), custom_objects=custom_objects)


@keras.saving.register_keras_serializable(package="keras_regkit")
class DropConnect(ScheduledRateMixin, _KernelWrapper):
    """DropConnect around a ``Dense`` layer: drops kernel entries, not activations.

    In training each kernel entry is zeroed with probability ``rate`` (one mask per batch, as
    in most implementations; the paper draws one per example) and survivors are scaled by
    ``1 / (1 - rate)``, so inference simply uses the full kernel (the paper's inference instead
    moment-matches a Gaussian; inverted scaling keeps the same mean). The bias is not dropped.

    Args:
        layer: the ``keras.layers.Dense`` to wrap (its own weights are used).
        rate: float in [0, 1], drop probability of each weight; schedulable.
        seed: int seed.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: the Dense layer's input.
        training: Python bool; plain Dense unless ``True``.

    Returns:
        The Dense layer's output.

    Raises:
        TypeError: ``layer`` is not a ``keras.layers.Dense``.
        ValueError: ``rate`` outside [0, 1].

    Reference:
        Wan et al., ICML 2013.
    """

    def __init__(self, layer: keras.layers.Dense, rate: float, seed: int | None = None, **kwargs):
        super().__init__(_check_dense("DropConnect", layer), **kwargs)
        self._init_rate(rate, seed)

    def call(self, inputs, training=False):
        if not (training and self.schedulable):
            return self.layer(inputs)
        kernel = ops.convert_to_tensor(self.layer.kernel)
        kernel = dropout_ops.dropout(kernel, self.rate_tensor, seed=self.seed_generator)
        return _dense_with_kernel(self.layer, inputs, kernel)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_regkit")
class WeightNoise(_KernelWrapper):
    """Adds ``N(0, stddev**2)`` noise to a wrapped ``Dense`` kernel in training only.

    A fresh noise draw per step ("noise robustness", Goodfellow et al., Deep Learning, 7.5):
    to first order it penalises the sensitivity of the output to the weights.

    Args:
        layer: the ``keras.layers.Dense`` to wrap.
        stddev: float >= 0, standard deviation of the additive kernel noise.
        seed: int seed.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: the Dense layer's input.
        training: Python bool; plain Dense unless ``True``.

    Returns:
        The Dense layer's output.

    Raises:
        TypeError: ``layer`` is not a ``keras.layers.Dense``.
        ValueError: ``stddev`` negative or NaN.

    Reference:
        An, Neural Computation 8 (1996); Graves, NeurIPS 2011.
    """

    def __init__(self, layer: keras.layers.Dense, stddev: float, seed: int | None = None, **kwargs):
        super().__init__(_check_dense("WeightNoise", layer), **kwargs)
        self.stddev = _validation.check_range("WeightNoise", "stddev", stddev, 0.0, None)
        self.seed = seed
        self.seed_generator = ReplicaSeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.stddev == 0:
            return self.layer(inputs)
        kernel = ops.convert_to_tensor(self.layer.kernel)
        kernel = dropout_ops.gaussian_noise(kernel, self.stddev, seed=self.seed_generator)
        return _dense_with_kernel(self.layer, inputs, kernel)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}
