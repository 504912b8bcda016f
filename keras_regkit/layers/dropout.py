"""Dropout and spatial dropout: drop-in replacements for the Keras 3 layers.

Reference:
    Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from Overfitting",
    JMLR 15 (2014). Tompson et al., "Efficient Object Localization Using Convolutional
    Networks", CVPR 2015 (spatial dropout).
"""

from __future__ import annotations

import numbers
from typing import Sequence

import keras

from keras_regkit import _validation
from keras_regkit.layers._stochastic import (
    ScheduledRateMixin,
    build_weightless,
    check_data_format,
)
from keras_regkit.layers._twin import twin_config
from keras_regkit.ops import dropout as dropout_ops


def check_noise_shape(owner: str, noise_shape) -> tuple | None:
    """``noise_shape`` as a tuple of positive ints and ``None``s (or ``None``).

    Raises ``ValueError`` for anything else (a string, a non-iterable, a float, bool or
    non-positive entry), as Keras does.
    """
    if noise_shape is None:
        return None
    allowed = "None or a tuple of positive ints and None entries"
    if isinstance(noise_shape, str):
        raise ValueError(f"{owner}: noise_shape must be {allowed}, got {noise_shape!r}")
    try:
        noise_shape = tuple(noise_shape)
    except TypeError:
        raise ValueError(f"{owner}: noise_shape must be {allowed}, got {noise_shape!r}") from None
    for index, dim in enumerate(noise_shape):
        if dim is None:
            continue
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim <= 0:
            raise ValueError(
                f"{owner}: noise_shape must be {allowed}, got {noise_shape!r} "
                f"(entry {index} is {dim!r})"
            )
    return tuple(None if dim is None else int(dim) for dim in noise_shape)


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
    Same distribution as ``keras.layers.Dropout``, different individual masks.

    The layer has exactly Keras's state and config: no weights, one seed generator, and
    ``get_config()`` equal to Keras's (``scaling`` appears only when it is not the default),
    so weight files, ``set_weights`` lists and ``.keras`` files move between the two. Its
    ``rate`` can still be changed between epochs (``DropoutSchedule``) without retracing: the
    current value rides in the seed generator's state (see ``keras_regkit.layers._stochastic``),
    which is not a weight, so restoring the best weights never rewinds a schedule.

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
        ValueError: ``rate`` outside [0, 1], a bad ``scaling``, a ``noise_shape`` that is not
            a tuple of positive ints and ``None``s or, at call time, one that does not
            broadcast to the input.
        TypeError: ``rate`` not a real number.

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
        self._init_rate(rate, seed)
        self.noise_shape = check_noise_shape(owner, noise_shape)
        self.scaling = _validation.check_choice(owner, "scaling", scaling, dropout_ops.SCALINGS)
        self.supports_masking = True
        build_weightless(self)

    def _noise_shape(self, inputs):
        return self.noise_shape

    def call(self, inputs, training=False):
        if not self.schedulable:  # constructed with rate 0: the identity, as Keras
            return inputs
        if training:
            return dropout_ops.dropout(
                inputs,
                self.rate_tensor,
                noise_shape=self._noise_shape(inputs),
                seed=self.seed_generator,
                scaling=self.scaling,
            )
        if self.scaling == "test_time":
            return dropout_ops.scale_for_inference(inputs, self.rate_tensor)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            **super().get_config(),
            "rate": self.rate,
            "seed": self.seed,
            "noise_shape": self.noise_shape,
            "scaling": self.scaling,
        }
        return twin_config(self, config, keras.layers.Dropout)


class _SpatialDropout(Dropout):
    """Base of the spatial dropouts: one mask entry per (example, channel)."""

    rank = None
    keras_class = None

    def __init__(
        self,
        rate: float,
        data_format: str | None = None,
        seed: int | None = None,
        scaling: str = "inverted",
        **kwargs,
    ):
        if "noise_shape" in kwargs:
            raise TypeError(
                f"{type(self).__name__}: noise_shape is not an argument (the mask has one entry "
                f"per example and channel); got noise_shape={kwargs['noise_shape']!r}"
            )
        super().__init__(rate, seed=seed, scaling=scaling, **kwargs)
        self.data_format = check_data_format(type(self).__name__, data_format)
        self.input_spec = keras.layers.InputSpec(ndim=self.rank + 2)

    def _noise_shape(self, inputs):
        spatial = (1,) * self.rank
        if self.data_format == "channels_first":
            return (None, None) + spatial
        return (None,) + spatial + (None,)

    def get_config(self):
        base = keras.layers.Layer.get_config(self)
        config = {
            "rate": self.rate,
            "seed": self.seed,
            "name": base["name"],
            "dtype": base["dtype"],
            "trainable": base["trainable"],
            "data_format": self.data_format,
            "scaling": self.scaling,
        }
        return twin_config(self, config, self.keras_class)


_SPATIAL_RAISES = """
    Raises:
        ValueError: ``rate`` outside [0, 1], a bad ``data_format`` or ``scaling``.
        TypeError: ``rate`` not a real number, or a ``noise_shape`` argument (the mask
            shape is fixed; Keras's layer takes no ``noise_shape`` either).
"""


@keras.saving.register_keras_serializable(package="keras_regkit")
class SpatialDropout1D(_SpatialDropout):
    """Drops whole 1-D feature maps (channels), as ``keras.layers.SpatialDropout1D``.

    Args:
        rate: float in [0, 1], fraction of the channels to drop.
        seed: int seed.
        data_format: extension: ``"channels_last"`` (Keras's only layout, the default) or
            ``"channels_first"``.
        scaling: extension: ``"inverted"`` (Keras) or ``"test_time"`` (see ``Dropout``).

    Call arguments:
        inputs: 3-D tensor ``(batch, steps, channels)``.
        training: Python bool.

    Returns:
        A tensor of the input's shape.
    {raises}
    Reference:
        Tompson et al., CVPR 2015.
    """

    rank = 1
    keras_class = keras.layers.SpatialDropout1D

    def __init__(
        self,
        rate: float,
        seed: int | None = None,
        data_format: str = "channels_last",
        scaling: str = "inverted",
        **kwargs,
    ):
        super().__init__(rate, data_format=data_format, seed=seed, scaling=scaling, **kwargs)


@keras.saving.register_keras_serializable(package="keras_regkit")
class SpatialDropout2D(_SpatialDropout):
    """Drops whole 2-D feature maps, as ``keras.layers.SpatialDropout2D``.

    Args:
        rate: float in [0, 1], fraction of the channels to drop.
        data_format: ``"channels_last"`` or ``"channels_first"`` (default: Keras config).
        seed: int seed.
        scaling: extension: ``"inverted"`` (Keras) or ``"test_time"`` (see ``Dropout``).

    Call arguments:
        inputs: 4-D tensor.
        training: Python bool.

    Returns:
        A tensor of the input's shape.
    {raises}
    Reference:
        Tompson et al., CVPR 2015.
    """

    rank = 2
    keras_class = keras.layers.SpatialDropout2D


@keras.saving.register_keras_serializable(package="keras_regkit")
class SpatialDropout3D(_SpatialDropout):
    """Drops whole 3-D feature maps, as ``keras.layers.SpatialDropout3D``.

    Args:
        rate: float in [0, 1], fraction of the channels to drop.
        data_format: ``"channels_last"`` or ``"channels_first"`` (default: Keras config).
        seed: int seed.
        scaling: extension: ``"inverted"`` (Keras) or ``"test_time"`` (see ``Dropout``).

    Call arguments:
        inputs: 5-D tensor.
        training: Python bool.

    Returns:
        A tensor of the input's shape.
    {raises}
    Reference:
        Tompson et al., CVPR 2015.
    """

    rank = 3
    keras_class = keras.layers.SpatialDropout3D


for _cls in (SpatialDropout1D, SpatialDropout2D, SpatialDropout3D):
    _cls.__doc__ = _cls.__doc__.replace("{raises}", _SPATIAL_RAISES)
