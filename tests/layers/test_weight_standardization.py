"""WSConv1D/WSConv2D: Keras's Conv weights and config, standardized kernels, gradients, errors."""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_regkit.layers import WSConv1D, WSConv2D
from keras_regkit.ops.weight_standardization import standardize_kernel
from tests.backend_utils import gradient
from tests.backend_utils import training_step
from tests.layer_checks import check_layer, move_weights_file

KERAS_CLASS = {WSConv1D: keras.layers.Conv1D, WSConv2D: keras.layers.Conv2D}


def np_(x, dtype=None):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype)


def standardized(kernel, epsilon=1e-5):
    """Qiao et al.'s weight standardization in float64 NumPy: per output channel (last axis)."""
    kernel = np.asarray(kernel, "float64")
    axes = tuple(range(kernel.ndim - 1))
    mean = kernel.mean(axis=axes, keepdims=True)
    variance = kernel.var(axis=axes, keepdims=True)  # population variance
    return (kernel - mean) / np.sqrt(variance + epsilon)


def standardized_gradient(kernel, upstream, epsilon=1e-5):
    """``d sum(upstream * standardized(kernel)) / d kernel``, the closed form (as BN's backward)."""
    kernel, upstream = np.asarray(kernel, "float64"), np.asarray(upstream, "float64")
    axes = tuple(range(kernel.ndim - 1))
    n = np.prod([kernel.shape[a] for a in axes])
    inv = 1.0 / np.sqrt(kernel.var(axis=axes, keepdims=True) + epsilon)
    w_hat = (kernel - kernel.mean(axis=axes, keepdims=True)) * inv
    return inv / n * (n * upstream - upstream.sum(axis=axes, keepdims=True)
                      - w_hat * (upstream * w_hat).sum(axis=axes, keepdims=True))


def _plain_twin(layer, input_shape, kernel=None):
    """The Keras convolution with ``layer``'s config and (a given or the NumPy-standardized) kernel."""
    config = layer.get_config()
    epsilon = config.pop("standardization_epsilon")
    config.pop("name")
    plain = KERAS_CLASS[type(layer)].from_config(config)
    plain.build(input_shape)
    weights = layer.get_weights()
    weights[0] = standardized(weights[0], epsilon).astype("float32") if kernel is None else kernel
    plain.set_weights(weights)
    return plain


def _random_weights(layer, rng, spread=0.3):
    """Kernels far from standardized (offset, scaled per output channel) and a random bias."""
    weights = []
    for w in layer.weights:
        value = rng.normal(size=w.shape)
        if w.name == "kernel":
            value = value * rng.uniform(0.05, 2.0, size=w.shape[-1]) + rng.normal(size=w.shape[-1]) * spread
        weights.append(value.astype("float32"))
    layer.set_weights(weights)


CASES = [
    pytest.param(WSConv2D, {"filters": 5, "kernel_size": 3}, (2, 7, 6, 3), id="2d-valid"),
    pytest.param(WSConv2D, {"filters": 4, "kernel_size": (3, 2), "padding": "same", "strides": 2,
                            "activation": "relu"}, (2, 8, 7, 3), id="2d-same-strided-relu"),
    pytest.param(WSConv2D, {"filters": 6, "kernel_size": 3, "groups": 2}, (2, 6, 6, 4), id="2d-groups"),
    pytest.param(WSConv2D, {"filters": 4, "kernel_size": 3, "data_format": "channels_first",
                            "padding": "same"}, (2, 3, 6, 5), id="2d-channels-first"),
    pytest.param(WSConv2D, {"filters": 4, "kernel_size": 3, "dilation_rate": 2, "use_bias": False},
                 (2, 9, 8, 2), id="2d-dilated-no-bias"),
    pytest.param(WSConv2D, {"filters": 4, "kernel_size": 3, "standardization_epsilon": 0.3},
                 (2, 6, 6, 3), id="2d-large-epsilon"),
    pytest.param(WSConv1D, {"filters": 5, "kernel_size": 3}, (2, 9, 3), id="1d-valid"),
    pytest.param(WSConv1D, {"filters": 4, "kernel_size": 3, "padding": "causal", "dilation_rate": 2},
                 (2, 10, 3), id="1d-causal-dilated"),
    pytest.param(WSConv1D, {"filters": 6, "kernel_size": 2, "groups": 3, "strides": 2},
                 (2, 9, 6), id="1d-groups-strided"),
    pytest.param(WSConv1D, {"filters": 4, "kernel_size": 3, "data_format": "channels_first",
                            "padding": "causal"}, (2, 3, 8), id="1d-channels-first-causal"),
]


@pytest.mark.parametrize("cls,kwargs,shape", CASES)
def test_output_equals_keras_conv_with_the_standardized_kernel(cls, kwargs, shape, rng):
    layer = cls(**kwargs)
    layer.build(shape)
    _random_weights(layer, rng)
    raw = [w.copy() for w in layer.get_weights()]
    x = rng.normal(size=shape).astype("float32")
    plain = _plain_twin(layer, shape)
    y = layer(x)
    np.testing.assert_allclose(np_(y), np_(plain(x)), rtol=1e-4, atol=1e-4)
    assert tuple(y.shape) == tuple(plain.compute_output_shape(shape)) == tuple(layer.compute_output_shape(shape))
    # The stored variable stays unstandardized.
    for a, b in zip(layer.get_weights(), raw):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np_(layer.standardized_kernel()), np_(plain.kernel), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls,kwargs,shape", CASES)
def test_gradients_flow_through_the_standardization(cls, kwargs, shape, rng):
    """dL/dkernel = the NumPy WS backward of the plain conv's gradient at the standardized kernel."""
    layer = cls(**kwargs)
    layer.build(shape)
    _random_weights(layer, rng)
    plain = _plain_twin(layer, shape)
    x = rng.normal(size=shape).astype("float32")
    upstream = rng.normal(size=tuple(plain.compute_output_shape(shape))).astype("float32")
    _, grads, _ = training_step(layer, x, upstream)
    _, plain_grads, _ = training_step(plain, x, upstream)
    epsilon = layer.standardization_epsilon
    expected_kernel = standardized_gradient(layer.get_weights()[0], plain_grads[1], epsilon)
    np.testing.assert_allclose(grads[0], plain_grads[0], rtol=1e-4, atol=1e-4)  # inputs
    scale = np.abs(expected_kernel).max()
    np.testing.assert_allclose(grads[1], expected_kernel, rtol=1e-3, atol=1e-4 * scale)  # kernel
    assert np.abs(grads[1]).max() > 0
    for a, b in zip(grads[2:], plain_grads[2:]):  # bias
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("epsilon", [1e-5, 0.1])
@pytest.mark.parametrize("kernel_shape", [(3, 4), (3, 2, 5), (3, 3, 2, 4), (2, 2, 2, 3, 2)])
def test_standardize_kernel_matches_numpy_values_and_gradient(kernel_shape, epsilon, rng):
    kernel = (rng.normal(size=kernel_shape) * 0.2 + 0.1).astype("float64")
    upstream = rng.normal(size=kernel_shape)
    tensor = keras.ops.convert_to_tensor(kernel)  # float32 on JAX without x64
    out = standardize_kernel(tensor, epsilon)
    assert out.dtype == tensor.dtype
    # keras.ops on torch reduces float64 in float32 (ops.mean): float64 is tight only on TensorFlow.
    tight = keras.backend.standardize_dtype(tensor.dtype) == "float64" and keras.backend.backend() == "tensorflow"
    np.testing.assert_allclose(np_(out), standardized(kernel, epsilon), rtol=1e-10 if tight else 1e-5,
                               atol=1e-12 if tight else 1e-5)
    grad = gradient(lambda w: keras.ops.multiply(standardize_kernel(w, epsilon), upstream), kernel)
    np.testing.assert_allclose(grad, standardized_gradient(kernel, upstream, epsilon), rtol=1e-8 if tight else 1e-4,
                               atol=1e-10 if tight else 1e-4)
    # And against central finite differences of the NumPy formula, for a few entries.
    for index in [(0,) * len(kernel_shape), tuple(d - 1 for d in kernel_shape)]:
        step = np.zeros_like(kernel)
        step[index] = 1e-6
        numeric = ((standardized(kernel + step, epsilon) - standardized(kernel - step, epsilon)) * upstream).sum() / 2e-6
        np.testing.assert_allclose(grad[index], numeric, rtol=1e-5 if tight else 1e-3, atol=1e-7 if tight else 1e-4)


def test_standardized_kernel_has_zero_mean_and_unit_variance_per_output_channel(rng):
    kernel = rng.normal(size=(3, 3, 8, 6)).astype("float32") * 0.7 + 0.4
    out = np_(standardize_kernel(keras.ops.convert_to_tensor(kernel), 1e-5), "float64")
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 1, 2)), kernel.var(axis=(0, 1, 2)) / (kernel.var(axis=(0, 1, 2)) + 1e-5),
                               rtol=1e-4)
    with pytest.raises(ValueError, match="rank >= 2"):
        standardize_kernel(keras.ops.ones((4,)))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_kernels_are_standardized_in_float32(dtype, rng):
    kernel = (rng.normal(size=(3, 3, 2, 4)) * 1e-3).astype("float32")
    tensor = keras.ops.cast(keras.ops.convert_to_tensor(kernel), dtype)
    out = standardize_kernel(tensor, 1e-12)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    # Half-precision squares of 1e-3 values lose most of their bits (float16 subnormals
    # below 6e-5); in float32 the result is the NumPy one up to the final rounding.
    expected = standardized(np_(keras.ops.cast(tensor, "float32")), 1e-12)
    np.testing.assert_allclose(np_(keras.ops.cast(out, "float32")), expected, rtol=1e-2, atol=1e-2)


def test_output_is_invariant_to_affine_changes_of_each_output_channel_kernel(rng):
    """WS removes each output channel's kernel offset and scale (for variances >> epsilon)."""
    shape = (2, 6, 6, 3)
    layer = WSConv2D(4, 3, standardization_epsilon=1e-8)
    layer.build(shape)
    _random_weights(layer, rng)
    x = rng.normal(size=shape).astype("float32")
    before = np_(layer(x))
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * np.array([0.5, 3.0, 10.0, 0.25], "float32") + np.array([1.0, -2.0, 0.0, 0.5], "float32"),
                       bias])
    np.testing.assert_allclose(np_(layer(x)), before, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("cls", [WSConv1D, WSConv2D])
def test_same_arguments_weights_and_config_as_keras(cls):
    import inspect

    ours = inspect.signature(cls.__init__).parameters
    theirs = inspect.signature(KERAS_CLASS[cls].__init__).parameters
    assert [p for p in ours if p != "standardization_epsilon"] == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].default == parameter.default, name
    assert ours["standardization_epsilon"].default == 1e-5

    kwargs = {"filters": 4, "kernel_size": 3, "strides": 1, "padding": "same", "groups": 1,
              "kernel_regularizer": "l2", "bias_constraint": "non_neg", "activation": "tanh"}
    shape = (2, 6, 3) if cls is WSConv1D else (2, 6, 6, 3)
    layer, plain = cls(**kwargs, name="c"), KERAS_CLASS[cls](**kwargs, name="c")
    layer.build(shape)
    plain.build(shape)
    assert [w.name for w in layer.weights] == [w.name for w in plain.weights] == ["kernel", "bias"]
    assert [tuple(w.shape) for w in layer.weights] == [tuple(w.shape) for w in plain.weights]
    config = layer.get_config()
    assert config.pop("standardization_epsilon") == 1e-5  # kept at its default too
    assert config == plain.get_config()
    # A WS config never loads as a plain convolution, and back.
    assert "standardization_epsilon" in cls.from_config(layer.get_config()).get_config()
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is cls and restored.get_config() == layer.get_config()


@pytest.mark.parametrize("cls", [WSConv1D, WSConv2D])
def test_set_weights_both_ways_with_keras_conv(cls, rng):
    shape = (2, 7, 3) if cls is WSConv1D else (2, 7, 6, 3)
    layer, plain = cls(5, 3, padding="same"), KERAS_CLASS[cls](5, 3, padding="same")
    layer.build(shape)
    plain.build(shape)
    x = rng.normal(size=shape).astype("float32")
    # Keras -> ours: WS of the Keras kernel.
    _random_weights(plain, rng)
    layer.set_weights(plain.get_weights())
    reference = _plain_twin(layer, shape)
    np.testing.assert_allclose(np_(layer(x)), np_(reference(x)), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(layer.get_weights()[0], plain.get_weights()[0])
    # ours -> Keras: the raw kernel moves.
    _random_weights(layer, rng)
    plain.set_weights(layer.get_weights())
    for a, b in zip(plain.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("direction", ["keras_to_ours", "ours_to_keras"])
@pytest.mark.parametrize("cls", [WSConv1D, WSConv2D])
def test_weights_files_move_both_ways(cls, direction, tmp_path, rng):
    shape = (2, 7, 3) if cls is WSConv1D else (2, 7, 6, 3)
    _, target = move_weights_file(KERAS_CLASS[cls](4, 3), cls(4, 3), shape[1:], direction, tmp_path, rng)
    assert len(target.get_weights()) == 2


@pytest.mark.parametrize("input_dtype", ["float16", "float32"])
@pytest.mark.parametrize("cls", [WSConv1D, WSConv2D])
def test_mixed_float16_standardizes_in_float32_with_keras_output_dtype(cls, input_dtype, rng):
    shape = (2, 8, 3) if cls is WSConv1D else (2, 8, 7, 3)
    keras.config.set_dtype_policy("mixed_float16")
    layer, plain = cls(4, 3, standardization_epsilon=1e-14), KERAS_CLASS[cls](4, 3)
    layer.build(shape)
    plain.build(shape)
    # Tiny weights: float16 would hold them as subnormals (steps of 6e-8, ~6% of each value),
    # so a kernel standardized from its float16 copy would be visibly off.
    kernel = (rng.normal(size=layer.kernel.shape) * 1e-6).astype("float32")
    bias = rng.normal(size=(4,)).astype("float32")
    layer.set_weights([kernel, bias])
    plain.set_weights([standardized(kernel, 1e-14).astype("float32"), bias])
    x = rng.normal(size=shape).astype(input_dtype)
    y, y_plain = layer(x), plain(x)
    assert keras.backend.standardize_dtype(y.dtype) == keras.backend.standardize_dtype(y_plain.dtype) == "float16"
    assert [keras.backend.standardize_dtype(w.dtype) for w in layer.weights] == ["float32", "float32"]
    np.testing.assert_allclose(np_(y, "float32"), np_(y_plain, "float32"), rtol=1e-2, atol=2e-2)
    # Against float64 math on the float16 inputs.
    keras.config.set_dtype_policy("float32")
    reference = _plain_twin(layer, shape)
    expected = np_(reference(np.asarray(x, "float16").astype("float32")))
    np.testing.assert_allclose(np_(y, "float32"), expected, rtol=1e-2, atol=3e-2)


def test_jit_compiled_model_matches_keras_conv(rng):
    shape = (4, 8, 8, 3)
    x = rng.normal(size=shape).astype("float32")
    target = rng.normal(size=(4, 6, 6, 5)).astype("float32")
    inputs = keras.Input(shape[1:])
    layer = WSConv2D(5, 3, standardization_epsilon=1e-4)
    model = keras.Model(inputs, layer(inputs))
    _random_weights(layer, rng)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", jit_compile=True)
    reference = _plain_twin(layer, shape)
    np.testing.assert_allclose(model.predict(x, verbose=0), np_(reference(x)), rtol=1e-4, atol=1e-4)
    kernel_before, bias_before = layer.get_weights()
    _, grads, _ = training_step(reference, x, 2.0 * (np_(reference(x)) - target) / target.size)
    model.train_on_batch(x, target)
    kernel_after, bias_after = layer.get_weights()
    expected = kernel_before - 0.05 * standardized_gradient(kernel_before, grads[1], 1e-4)
    np.testing.assert_allclose(kernel_after, expected, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(bias_after, bias_before - 0.05 * grads[2], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("cls", [WSConv1D, WSConv2D])
@pytest.mark.parametrize("value,error", [(0.0, ValueError), (-1e-5, ValueError), (math.inf, ValueError),
                                         (math.nan, ValueError), ("1e-5", TypeError), (None, TypeError),
                                         (True, TypeError)])
def test_bad_standardization_epsilon_raises_naming_it(cls, value, error):
    with pytest.raises(error, match=rf"{cls.__name__}: standardization_epsilon must .*got"):
        cls(4, 3, standardization_epsilon=value)


@pytest.mark.parametrize(
    "cls,kwargs,shape",
    [
        (WSConv2D, {"filters": 3, "kernel_size": 3}, (2, 6, 6, 2)),
        (WSConv2D, {"filters": 4, "kernel_size": 2, "groups": 2, "data_format": "channels_first",
                    "standardization_epsilon": 1e-3}, (2, 4, 5, 5)),
        (WSConv1D, {"filters": 3, "kernel_size": 3, "padding": "causal", "activation": "relu"}, (2, 7, 2)),
    ],
)
def test_layer_contract_and_serialization(cls, kwargs, shape):
    check_layer(cls, kwargs, shape)


def test_keras_file_round_trip_in_a_model(tmp_path, rng):
    inputs = keras.Input((8, 8, 3))
    hidden = WSConv2D(4, 3, padding="same", standardization_epsilon=1e-3)(inputs)
    outputs = WSConv1D(2, 2, standardization_epsilon=1e-4)(keras.layers.Reshape((64, 4))(hidden))
    model = keras.Model(inputs, outputs)
    for layer in (model.layers[1], model.layers[-1]):
        _random_weights(layer, rng)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    assert loaded.layers[1].get_config() == model.layers[1].get_config()
    np.testing.assert_array_equal(np_(loaded(x)), np_(model(x)))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(
    rank=st.sampled_from([1, 2]),
    size=st.integers(4, 7),
    kernel_size=st.integers(1, 3),
    strides=st.integers(1, 2),
    padding=st.sampled_from(["valid", "same"]),
    channels_first=st.booleans(),
    channels=st.integers(1, 3),
    filters=st.integers(1, 4),
    dtype=st.sampled_from(["float32", "float16"]),
)
def test_property_shapes_dtypes_and_values(rank, size, kernel_size, strides, padding, channels_first,
                                           channels, filters, dtype):
    cls = WSConv1D if rank == 1 else WSConv2D
    data_format = "channels_first" if channels_first else "channels_last"
    spatial = (size,) * rank
    shape = (2, channels, *spatial) if channels_first else (2, *spatial, channels)
    layer = cls(filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                bias_initializer="random_normal")
    rng = np.random.default_rng(size * 100 + kernel_size * 10 + filters)
    x = rng.normal(size=shape).astype(dtype)
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    plain = _plain_twin(layer, shape)
    expected = np_(plain(x.astype("float32")))
    assert tuple(y.shape) == expected.shape == tuple(layer.compute_output_shape(shape))
    np.testing.assert_allclose(np_(y), expected, rtol=1e-4, atol=1e-4)
