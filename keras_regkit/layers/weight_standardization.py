"""WSConv1D and WSConv2D: Keras convolutions whose kernels are standardized at every call."""

from __future__ import annotations

import keras
from keras import ops

from keras_regkit import _validation as check
from keras_regkit.ops.weight_standardization import compute_dtype, standardize_kernel


class _WeightStandardized:
    """The shared part of the WS convolutions; mixed in before a ``keras.layers.ConvND``.

    The layer is built by the Keras class (same ``kernel`` and ``bias`` variables), and only
    ``call`` differs: the kernel is read in its variable dtype (float32 under mixed precision:
    the variables are created without autocasting), standardized there, and cast to the
    compute dtype, as is the bias, which is what Keras's autocasting does for the plain layer.
    """

    _owner = "WSConv"

    def _init_standardization(self, standardization_epsilon) -> None:
        self.standardization_epsilon = check.check_range(
            self._owner, "standardization_epsilon", standardization_epsilon, 0.0, None, low_inclusive=False
        )

    def add_weight(self, *args, **kwargs):
        # Called by the Keras class's build(): kernel and bias are read in their own dtype
        # (float32 under mixed precision); call() casts them to the compute dtype itself.
        kwargs["autocast"] = False
        return super().add_weight(*args, **kwargs)

    def standardized_kernel(self):
        """The kernel used by the convolution: ``standardize_kernel(kernel)``, in the compute dtype."""
        kernel = ops.cast(self.kernel, compute_dtype(self.kernel.dtype))
        return ops.cast(standardize_kernel(kernel, self.standardization_epsilon), self.compute_dtype)

    def call(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)
        padding = self.padding
        if padding == "causal":  # Conv1D only: pad the start of the time axis, then "valid"
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            time = [[left, 0]]
            pads = [[0, 0]] + (time + [[0, 0]] if self.data_format == "channels_last" else [[0, 0]] + time)
            inputs = ops.pad(inputs, pads)
            padding = "valid"
        outputs = ops.conv(
            inputs,
            self.standardized_kernel(),
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            if self.data_format == "channels_last":
                bias_shape = (1,) * (self.rank + 1) + (self.filters,)
            else:
                bias_shape = (1, self.filters) + (1,) * self.rank
            outputs = ops.add(outputs, ops.reshape(ops.cast(self.bias, self.compute_dtype), bias_shape))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        # Always kept: without it, a WS layer would load as a plain convolution.
        config["standardization_epsilon"] = self.standardization_epsilon
        return config


_DOC_TAIL = """
    At every call the kernel is standardized per output channel before the convolution:
    ``w_hat = (w - mean) / sqrt(var + standardization_epsilon)``, with the mean and the
    population variance of each output channel taken over its fan-in (every kernel axis but
    the last, so per group when ``groups > 1``). The stored ``kernel`` variable stays
    unstandardized; gradients flow through the standardization into it. Under mixed precision
    the standardization runs in float32 (the variable's dtype) and the output has the dtype
    of the plain Keras layer's.

    Arguments, weights (``kernel`` of shape ``kernel_size + (in_channels // groups,
    filters)``, then ``bias``), ``compute_output_shape`` and config are those of the Keras
    layer, plus ``standardization_epsilon`` (always in the config). Weights therefore load
    from and into a plain Keras convolution (``set_weights`` lists and ``.weights.h5``
    files, both ways; a ``.weights.h5`` file addresses a layer held in a list, such as the
    layers of a Sequential or Functional model, by its class name, so a file moves where the
    layer is an attribute of a custom layer, e.g. a residual block). The plain convolution
    computes the same outputs once given the standardized kernel (``standardized_kernel()``).

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
            activation, use_bias, kernel_initializer, bias_initializer,
            kernel_regularizer, bias_regularizer, activity_regularizer,
            kernel_constraint, bias_constraint: As for ``{keras_name}``.
        standardization_epsilon: Positive float added to the kernel's variance.
        **kwargs: Base layer keyword arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: Input tensor, as for ``{keras_name}``.

    Returns:
        The convolution of the inputs with the standardized kernel (plus bias, then
        activation), in the layer's compute dtype.

    Raises:
        TypeError: If ``standardization_epsilon`` is not a real number.
        ValueError: If ``standardization_epsilon`` is not a positive finite number, and
            wherever ``{keras_name}`` raises.

    Reference:
        Qiao, Wang, Liu, Shen & Yuille, "Micro-Batch Training with Batch-Channel
        Normalization and Weight Standardization", arXiv:1903.10520, 2019; with group
        normalization in Kolesnikov et al., "Big Transfer (BiT)", ECCV 2020.
    """


@keras.saving.register_keras_serializable(package="keras_regkit")
class WSConv2D(_WeightStandardized, keras.layers.Conv2D):
    __doc__ = "2D convolution with weight standardization: ``keras.layers.Conv2D`` plus WS.\n" + _DOC_TAIL.format(
        keras_name="keras.layers.Conv2D"
    )
    _owner = "WSConv2D"

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        data_format=None,
        dilation_rate=(1, 1),
        groups: int = 1,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        standardization_epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(
            filters=filters, kernel_size=kernel_size, strides=strides, padding=padding,
            data_format=data_format, dilation_rate=dilation_rate, groups=groups,
            activation=activation, use_bias=use_bias, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs,
        )
        self._init_standardization(standardization_epsilon)


@keras.saving.register_keras_serializable(package="keras_regkit")
class WSConv1D(_WeightStandardized, keras.layers.Conv1D):
    __doc__ = "1D convolution with weight standardization: ``keras.layers.Conv1D`` plus WS.\n" + _DOC_TAIL.format(
        keras_name="keras.layers.Conv1D"
    )
    _owner = "WSConv1D"

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        data_format=None,
        dilation_rate=1,
        groups: int = 1,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        standardization_epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(
            filters=filters, kernel_size=kernel_size, strides=strides, padding=padding,
            data_format=data_format, dilation_rate=dilation_rate, groups=groups,
            activation=activation, use_bias=use_bias, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs,
        )
        self._init_standardization(standardization_epsilon)
