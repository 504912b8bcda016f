"""Dropout and spatial dropout: drop-in replacements for the Keras 3 layers.

Reference:
    Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from Overfitting",
    JMLR 15 (2014). Tompson et al., "Efficient Object Localization Using Convolutional
    Networks", CVPR 2015 (spatial dropout).
"""

from __future__ import annotations

from typing import Sequence

import keras

from keras_regkit import _validation
from keras_regkit.layers._stochastic import ScheduledRateMixin, check_data_format
from keras_regkit.ops import dropout as dropout_ops


def _check_noise_shape(owner: str, noise_shape) -> tuple | None:
    if noise_shape is None:
        return None
    message = f"{owner}: noise_shape must be a tuple of positive ints or None, got {noise_shape!r}"
    if isinstance(noise_shape, str):
        raise TypeError(message)
    try:
        noise_shape = tuple(noise_shape)
    except TypeError:
        raise TypeError(message) from None
    for dim in noise_shape:
        if dim is not None:
            _validation.check_int(owner, "noise_shape entry", dim, minimum=1)
    return noise_shape


@keras.saving.register_keras_serializable(package="keras_regkit")
class Dropout(ScheduledRateMixin, keras.layers.Layer):
    """Dropout, as ``keras.layers.Dropout``, plus the paper's test-time scaling.

    In training each unit is zeroed with probability ``rate``. With ``scaling="inverted"``
    (the default, as Keras) survivors are multiplied by ``1 / (1 - rate)`` and inference is
    the identity; with ``scaling="test_time"`` (Srivastava et al. 2014) survivors are left
    unscaled and inference multiplies by the keep probability ``1 - rate``. Both give the
    same expected activation; a network trained with one maps to the other by scaling the
    weights that read the dropped units by ``1 - rate`` (or its inverse).

    The mask is drawn from raw random bits, two 16-bit draws per 32-bit random word
    (``keras_regkit.ops.random_bits``): the realised drop probability is
    ``ceil(rate * 2**16) / 2**16``, within ``2**-16`` of ``rate`` (exact zeros at ``rate = 1``).
    Same distribution as ``keras.layers.Dropout``, different individual masks. ``rate`` lives
    in a non-trainable float32 variable, so it can be changed between epochs
    (``DropoutSchedule``) without retracing.

    Args:
        rate: float in [0, 1], fraction of the units to drop (``1`` returns zeros).
        noise_shape: shape of the binary mask, broadcast against the input; ``None``
            entries take the input's size (e.g. ``(None, 1, None)`` shares a mask over time).
        seed: int seed for the layer's ``keras.random.SeedGenerator``.
        scaling: ``"inverted"`` or ``"test_time"``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: tensor of any rank.
        training: Python bool; dropout only applies when ``True``.

    Returns:
        A tensor of the input's shape and dtype.

    Raises:
        ValueError: ``rate`` outside [0, 1], a bad ``scaling``, a ``noise_shape`` entry < 1
            or, at call time, a ``noise_shape`` that does not broadcast to the input.
        TypeError: ``noise_shape`` not a sequence of ints/None.

    Reference:
        Srivastava et al., JMLR 15 (2014), sections 1 and 4.
    """

    def __init__(
        self,
        rate: float,
        noise_shape: Sequence[int | None] | None = None,
        seed: int | None = None,
        scaling: str = "inverted",
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.noise_shape = _check_noise_shape(owner, noise_shape)
        self.scaling = _validation.check_choice(owner, "scaling", scaling, dropout_ops.SCALINGS)
        self._init_rate(rate, seed)
        self.supports_masking = True
        self.built = True

    def _noise_shape(self, inputs):
        return self.noise_shape

    def call(self, inputs, training=False):
        if training:
            return dropout_ops.dropout(
                inputs,
                self.rate_variable,
                noise_shape=self._noise_shape(inputs),
                seed=self.seed_generator,
                scaling=self.scaling,
            )
        if self.scaling == "test_time":
            return dropout_ops.scale_for_inference(inputs, self.rate_variable)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "noise_shape": self.noise_shape,
            "seed": self.seed,
            "scaling": self.scaling,
        }


class _SpatialDropout(Dropout):
    """Base of the spatial dropouts: one mask entry per (example, channel)."""

    rank = None

    def __init__(
        self, rate: float, data_format: str | None = None, seed: int | None = None, **kwargs
    ):
        super().__init__(rate, seed=seed, **kwargs)
        self.data_format = check_data_format(type(self).__name__, data_format)
        self.input_spec = keras.layers.InputSpec(ndim=self.rank + 2)

    def _noise_shape(self, inputs):
        spatial = (1,) * self.rank
        if self.data_format == "channels_first":
            return (None, None) + spatial
        return (None,) + spatial + (None,)

    def get_config(self):
        config = super().get_config()
        del config["noise_shape"], config["scaling"]
        return {**config, "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="keras_regkit")
class SpatialDropout1D(_SpatialDropout):
    """Drops whole 1-D feature maps (channels), as ``keras.layers.SpatialDropout1D``.

    Args:
        rate: float in [0, 1], fraction of the channels to drop.
        data_format: accepted for symmetry with the 2-D/3-D layers; Keras's
            ``SpatialDropout1D`` is always channels-last, which is the default here.
        seed: int seed.

    Call arguments:
        inputs: 3-D tensor ``(batch, steps, channels)``.
        training: Python bool.

    Returns:
        A tensor of the input's shape.

    Raises:
        ValueError: ``rate`` outside [0, 1].

    Reference:
        Tompson et al., CVPR 2015.
    """

    rank = 1

    def __init__(
        self, rate: float, seed: int | None = None, data_format: str = "channels_last", **kwargs
    ):
        super().__init__(rate, data_format=data_format, seed=seed, **kwargs)


@keras.saving.register_keras_serializable(package="keras_regkit")
class SpatialDropout2D(_SpatialDropout):
    """Drops whole 2-D feature maps, as ``keras.layers.SpatialDropout2D``.

    Args:
        rate: float in [0, 1], fraction of the channels to drop.
        data_format: ``"channels_last"`` or ``"channels_first"`` (default: Keras config).
        seed: int seed.

    Call arguments:
        inputs: 4-D tensor.
        training: Python bool.

    Returns:
        A tensor of the input's shape.

    Raises:
        ValueError: ``rate`` outside [0, 1].

    Reference:
        Tompson et al., CVPR 2015.
    """

    rank = 2


@keras.saving.register_keras_serializable(package="keras_regkit")
class SpatialDropout3D(_SpatialDropout):
    """Drops whole 3-D feature maps, as ``keras.layers.SpatialDropout3D``.

    Args:
        rate: float in [0, 1], fraction of the channels to drop.
        data_format: ``"channels_last"`` or ``"channels_first"`` (default: Keras config).
        seed: int seed.

    Call arguments:
        inputs: 5-D tensor.
        training: Python bool.

    Returns:
        A tensor of the input's shape.

    Raises:
        ValueError: ``rate`` outside [0, 1].

    Reference:
        Tompson et al., CVPR 2015.
    """

    rank = 3
