"""InstanceNormalization: ``GroupNormalization(groups=-1)`` under its own name and config."""

from __future__ import annotations

from typing import Any

import keras
from keras import constraints, initializers, regularizers

from keras_regkit import _validation as check
from keras_regkit.ops import normalization as norm


@keras.saving.register_keras_serializable(package="keras_regkit")
class InstanceNormalization(keras.layers.Layer):
    """Instance normalization: each example's channels normalized over their own positions.

    For every example and every channel, the values over all other axes (the spatial or
    time axes) are normalized with their own mean and biased variance, then scaled by
    ``gamma`` and shifted by ``beta`` (per channel). Nothing depends on the other examples
    of the batch, so training and inference compute the same thing, at any batch size.

    The numbers are those of ``keras.layers.GroupNormalization(groups=-1, axis=axis,
    epsilon=epsilon)`` (statistics in float32 even for float16 inputs, output in the
    layer's compute dtype), and so are the weights: ``gamma`` then ``beta``, each of shape
    ``(channels,)``, absent when ``scale`` / ``center`` is False. ``set_weights`` lists and
    ``.weights.h5`` files therefore move between the two layers in both directions. (A
    ``.weights.h5`` file addresses a layer held in a list, such as the layers of a Sequential
    or Functional model, by its class name; a file moves where the layer is an attribute of
    a custom layer, e.g. a residual block. ``get_weights``/``set_weights`` work everywhere.)
    The config holds this layer's own arguments (there is no ``groups``).

    Args:
        axis: Integer, the channel axis (``-1`` for channels last, ``1`` for channels
            first); not the batch axis 0.
        epsilon: Positive float added to the variance.
        center: If True, add the learned per-channel offset ``beta``.
        scale: If True, multiply by the learned per-channel ``gamma``.
        beta_initializer, gamma_initializer: Initializers of ``beta`` and ``gamma``.
        beta_regularizer, gamma_regularizer: Optional regularizers.
        beta_constraint, gamma_constraint: Optional constraints.
        **kwargs: Base layer keyword arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: Input tensor of rank >= 3 (batch, ..., channels or batch, channels, ...).

    Returns:
        A tensor of the input's shape, in the layer's compute dtype.

    Raises:
        TypeError: If ``axis`` is not an integer or ``epsilon`` not a real number.
        ValueError: If ``epsilon`` is not a positive finite number; at build time, if the
            input has rank < 3, ``axis`` is out of range or the batch axis, or the size of
            the channel axis is unknown.

    Reference:
        Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing Ingredient for
        Fast Stylization", arXiv:1607.08022, 2016.
    """

    def __init__(
        self,
        axis: int = -1,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        beta_regularizer: Any = None,
        gamma_regularizer: Any = None,
        beta_constraint: Any = None,
        gamma_constraint: Any = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = "InstanceNormalization"
        self.axis = check.check_int(owner, "axis", axis)
        self.epsilon = check.check_range(owner, "epsilon", epsilon, 0.0, None, low_inclusive=False)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.supports_masking = True
        # As GroupNormalization: inputs keep their dtype, statistics run in float32.
        self.autocast = False
        self.gamma = self.beta = None

    def _channel_axis(self, input_shape) -> int:
        rank = len(input_shape)
        if rank < 3:
            raise ValueError(
                "InstanceNormalization: inputs must have rank >= 3 (batch, ..., channels), "
                f"got shape {tuple(input_shape)}"
            )
        if not -rank < self.axis < rank or self.axis % rank == 0:
            raise ValueError(
                f"InstanceNormalization: axis must be in [{1 - rank}, -1] or [1, {rank - 1}] (not the "
                f"batch axis) for inputs of rank {rank}, got {self.axis}"
            )
        return self.axis % rank

    def build(self, input_shape):
        channels = input_shape[self._channel_axis(input_shape)]
        if channels is None:
            raise ValueError(
                "InstanceNormalization: axis must name an axis of known size, got "
                f"{self.axis} for input shape {tuple(input_shape)}"
            )
        self.input_spec = keras.layers.InputSpec(ndim=len(input_shape), axes={self.axis: channels})
        if self.scale:
            self.gamma = self.add_weight(
                shape=(channels,), name="gamma", initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer, constraint=self.gamma_constraint, autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                shape=(channels,), name="beta", initializer=self.beta_initializer,
                regularizer=self.beta_regularizer, constraint=self.beta_constraint, autocast=False,
            )

    def call(self, inputs):
        outputs = norm.instance_norm(inputs, self.axis, self.gamma, self.beta, self.epsilon)
        return keras.ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        self._channel_axis(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = {
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
        }
        return {**super().get_config(), **config}
