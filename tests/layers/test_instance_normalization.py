"""InstanceNormalization: Keras's GroupNormalization(groups=-1) numbers and weights, own config, errors."""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_regkit.layers import InstanceNormalization
from keras_regkit.ops.normalization import instance_norm
from tests.backend_utils import training_step
from tests.layer_checks import check_layer, move_weights_file


def np_(x, dtype=None):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype)


def reference(x, axis, gamma=None, beta=None, epsilon=1e-3):
    """Instance normalization in float64 NumPy (Ulyanov et al. 2016)."""
    x = np.asarray(x, "float64")
    rank = x.ndim
    channel = axis % rank
    axes = tuple(a for a in range(1, rank) if a != channel)
    mean = x.mean(axis=axes, keepdims=True)
    variance = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(variance + epsilon)
    shape = [1] * rank
    shape[channel] = x.shape[channel]
    if gamma is not None:
        y = y * np.reshape(gamma, shape)
    if beta is not None:
        y = y + np.reshape(beta, shape)
    return y


def _step(layer, x, upstream):
    """``(y, [dx] + [d weights])`` of ``sum(layer(x) * upstream)`` on every backend."""
    y, grads, _ = training_step(layer, x, upstream)
    return y, grads


def _pair(shape, axis, rng, **kwargs):
    """Keras's GroupNormalization(groups=-1) and ours, with the same random weights."""
    ref = keras.layers.GroupNormalization(groups=-1, axis=axis, **kwargs)
    ours = InstanceNormalization(axis=axis, **kwargs)
    ref.build(shape)
    ours.build(shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in ref.weights]
    ref.set_weights(weights)
    ours.set_weights(weights)
    return ref, ours


CASES = [
    pytest.param((4, 7, 6), -1, id="rank3"),
    pytest.param((3, 6, 5, 4), -1, id="nhwc"),
    pytest.param((3, 4, 6, 5), 1, id="nchw"),
    pytest.param((2, 4, 3, 5, 3), -1, id="rank5"),
    pytest.param((2, 3, 4, 3, 5), 1, id="rank5-channels-first"),
    pytest.param((3, 5, 4, 6), 2, id="middle-axis"),
    pytest.param((3, 5, 4, 6), -2, id="negative-middle-axis"),
]
CENTER_SCALE = [(True, True), (False, True), (True, False), (False, False)]


@pytest.mark.parametrize("center,scale", CENTER_SCALE)
@pytest.mark.parametrize("shape,axis", CASES)
def test_matches_group_normalization_outputs_and_gradients(shape, axis, center, scale, rng):
    ref, ours = _pair(shape, axis, rng, center=center, scale=scale, epsilon=1e-2)
    x = (rng.normal(size=shape) * 3.0 + 2.0).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    y_ref, g_ref = _step(ref, x, upstream)
    y_ours, g_ours = _step(ours, x, upstream)
    np.testing.assert_allclose(y_ours, y_ref, rtol=1e-5, atol=1e-5)
    assert len(g_ours) == len(g_ref) == 1 + int(center) + int(scale)
    for a, b in zip(g_ours, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # Independent check against the paper's formula.
    gamma = np_(ours.gamma) if scale else None
    beta = np_(ours.beta) if center else None
    np.testing.assert_allclose(y_ours, reference(x, axis, gamma, beta, 1e-2), rtol=1e-4, atol=1e-4)
    # Training and inference compute the same thing.
    np.testing.assert_array_equal(np_(ours(x, training=False)), y_ours)


def test_pure_function_matches_numpy(rng):
    x = rng.normal(size=(3, 5, 4, 6)).astype("float32") * 2.0 - 1.0
    gamma, beta = rng.normal(size=6).astype("float32"), rng.normal(size=6).astype("float32")
    y = instance_norm(keras.ops.convert_to_tensor(x), -1, gamma, beta, 1e-3)
    np.testing.assert_allclose(np_(y), reference(x, -1, gamma, beta, 1e-3), rtol=1e-4, atol=1e-4)
    y = instance_norm(keras.ops.convert_to_tensor(x), 1, None, None, 1e-3)
    np.testing.assert_allclose(np_(y), reference(x, 1, epsilon=1e-3), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="axis"):
        instance_norm(keras.ops.convert_to_tensor(x), 0)
    with pytest.raises(ValueError, match="rank"):
        instance_norm(keras.ops.convert_to_tensor(x[:, :, 0, 0]), -1)


@pytest.mark.parametrize("epsilon", [1e-5, 1e-3, 0.5])
def test_epsilon_is_the_same_as_keras(epsilon, rng):
    shape = (2, 6, 3)
    ref, ours = _pair(shape, -1, rng, epsilon=epsilon)
    # Small variances make epsilon matter.
    x = (rng.normal(size=shape) * 0.05).astype("float32")
    np.testing.assert_allclose(np_(ours(x)), np_(ref(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_(ours(x)), reference(x, -1, np_(ours.gamma), np_(ours.beta), epsilon),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("input_dtype", ["float16", "float32"])
@pytest.mark.parametrize("shape,axis", [((2, 5, 4, 3), -1), ((2, 3, 5, 4), 1)])
def test_mixed_float16_matches_group_normalization(shape, axis, input_dtype, rng):
    keras.config.set_dtype_policy("mixed_float16")
    ref = keras.layers.GroupNormalization(groups=-1, axis=axis)
    ours = InstanceNormalization(axis=axis)
    ref.build(shape)
    ours.build(shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in ref.weights]
    ref.set_weights(weights)
    ours.set_weights(weights)
    # Large values: float16 statistics would overflow (sum of squares > 65504).
    x = (rng.normal(size=shape) * 50.0 + 200.0).astype(input_dtype)
    y_ref, y_ours = ref(x), ours(x)
    assert keras.backend.standardize_dtype(y_ours.dtype) == keras.backend.standardize_dtype(y_ref.dtype) == "float16"
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in ours.weights)
    np.testing.assert_allclose(np_(y_ours, "float32"), np_(y_ref, "float32"), rtol=1e-2, atol=2e-2)
    expected = reference(np.asarray(x, "float16"), axis, weights[0], weights[1])
    np.testing.assert_allclose(np_(y_ours, "float32"), expected, rtol=1e-2, atol=2e-2)


@pytest.mark.parametrize("shape,axis", [((4, 6, 5, 3), -1), ((4, 3, 6, 5), 1)])
def test_jit_compiled_model_matches_group_normalization(shape, axis, rng):
    x = rng.normal(size=shape).astype("float32") + 1.0
    target = rng.normal(size=shape).astype("float32")
    weights = [rng.normal(size=(shape[axis],)).astype("float32") for _ in range(2)]
    results = []
    for layer in (keras.layers.GroupNormalization(groups=-1, axis=axis, epsilon=1e-3),
                  InstanceNormalization(axis=axis, epsilon=1e-3)):
        inputs = keras.Input(shape[1:])
        model = keras.Model(inputs, layer(inputs))
        layer.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=True)
        predicted = model.predict(x, batch_size=shape[0], verbose=0)
        model.train_on_batch(x, target)
        results.append((predicted, [np_(w) for w in layer.weights]))
    (p_ref, w_ref), (p_ours, w_ours) = results
    np.testing.assert_allclose(p_ours, p_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p_ours, reference(x, axis, *weights), rtol=1e-4, atol=1e-4)
    for a, b in zip(w_ours, w_ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("center,scale", CENTER_SCALE)
@pytest.mark.parametrize("axis", [-1, 1])
def test_same_weights_as_group_normalization_and_set_weights_both_ways(axis, center, scale, rng):
    shape = (2, 4, 5, 6)
    ref = keras.layers.GroupNormalization(groups=-1, axis=axis, center=center, scale=scale)
    ours = InstanceNormalization(axis=axis, center=center, scale=scale)
    ref.build(shape)
    ours.build(shape)
    assert [w.name for w in ours.weights] == [w.name for w in ref.weights]
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in ref.weights]
    assert [w.trainable for w in ours.weights] == [w.trainable for w in ref.weights]
    x = rng.normal(size=shape).astype("float32")
    # Keras -> ours
    values = [rng.normal(size=w.shape).astype("float32") for w in ref.weights]
    ref.set_weights(values)
    ours.set_weights(ref.get_weights())
    np.testing.assert_allclose(np_(ours(x)), np_(ref(x)), rtol=1e-5, atol=1e-5)
    # ours -> Keras
    values = [rng.normal(size=w.shape).astype("float32") for w in ours.weights]
    ours.set_weights(values)
    ref.set_weights(ours.get_weights())
    np.testing.assert_allclose(np_(ref(x)), np_(ours(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("direction", ["keras_to_ours", "ours_to_keras"])
def test_weights_files_move_both_ways(direction, tmp_path, rng):
    shape = (2, 5, 4, 3)
    x = rng.normal(size=shape).astype("float32")
    source, target = move_weights_file(keras.layers.GroupNormalization(groups=-1),
                                       InstanceNormalization(), shape[1:], direction, tmp_path, rng)
    assert len(target.get_weights()) == 2
    np.testing.assert_allclose(np_(target(x)), np_(source(x)), rtol=1e-5, atol=1e-5)


def test_config_holds_its_own_arguments():
    layer = InstanceNormalization(axis=1, epsilon=1e-4, center=False, gamma_regularizer="l2",
                                  beta_constraint="non_neg", name="inorm")
    config = layer.get_config()
    assert "groups" not in config
    own = {"axis", "epsilon", "center", "scale", "beta_initializer", "gamma_initializer", "beta_regularizer",
           "gamma_regularizer", "beta_constraint", "gamma_constraint"}
    assert own <= set(config)
    assert set(config) - own <= {"name", "trainable", "dtype"}
    assert (config["axis"], config["epsilon"], config["center"], config["scale"]) == (1, 1e-4, False, True)
    clone = InstanceNormalization.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is InstanceNormalization and restored.get_config() == config


@pytest.mark.parametrize("shape", [(None, None, 3), (None, 4, None)])
def test_unknown_channel_size_raises_naming_axis(shape):
    layer = InstanceNormalization(axis=-1)
    if shape[-1] is None:
        with pytest.raises(ValueError, match=r"InstanceNormalization: axis must .*got -1"):
            layer.build(shape)
    else:
        layer.build(shape)  # unknown spatial sizes are fine
        assert layer.gamma.shape == (3,)


@pytest.mark.parametrize("epsilon,error", [(0.0, ValueError), (-1e-3, ValueError), (math.inf, ValueError),
                                           (math.nan, ValueError), ("1e-3", TypeError), (None, TypeError),
                                           (True, TypeError)])
def test_bad_epsilon_raises_at_construction(epsilon, error):
    with pytest.raises(error, match=r"InstanceNormalization: epsilon must .*got"):
        InstanceNormalization(epsilon=epsilon)


def test_bad_axis_and_rank_raise():
    with pytest.raises(TypeError, match="InstanceNormalization: axis must be an integer"):
        InstanceNormalization(axis=1.5)
    with pytest.raises(ValueError, match=r"InstanceNormalization: axis must .*got 0"):
        InstanceNormalization(axis=0).build((2, 4, 3))
    with pytest.raises(ValueError, match=r"InstanceNormalization: axis must .*got 3"):
        InstanceNormalization(axis=3).build((2, 4, 3))
    with pytest.raises(ValueError, match=r"InstanceNormalization: axis must .*got -3"):
        InstanceNormalization(axis=-3).build((2, 4, 3))
    with pytest.raises(ValueError, match=r"InstanceNormalization: inputs must have rank >= 3"):
        InstanceNormalization().build((2, 4))


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        ({}, (3, 5, 4)),
        ({"axis": 1, "center": False}, (2, 3, 4, 5)),
        ({"scale": False, "gamma_initializer": "random_normal"}, (2, 4, 3, 3)),
        ({"beta_initializer": "random_normal", "gamma_regularizer": "l2"}, (2, 3, 2, 2, 4)),
    ],
)
def test_layer_contract_and_serialization(kwargs, shape):
    check_layer(InstanceNormalization, kwargs, shape)


def test_keras_file_round_trip_in_a_model(tmp_path, rng):
    inputs = keras.Input((6, 5, 3))
    hidden = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    outputs = InstanceNormalization(epsilon=1e-4, beta_initializer="random_normal")(hidden)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([rng.normal(size=(4,)).astype("float32") for _ in range(2)])
    x = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[-1]) is InstanceNormalization
    assert loaded.layers[-1].get_config() == model.layers[-1].get_config()
    np.testing.assert_array_equal(np_(loaded(x)), np_(model(x)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(
    dims=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    batch=st.integers(1, 3),
    axis_choice=st.sampled_from(["last", "first"]),
    dtype=st.sampled_from(["float32", "float16"]),
    scale=st.floats(0.1, 100.0),
    epsilon=st.sampled_from([1e-5, 1e-3, 0.1]),
)
def test_property_shape_dtype_and_values(dims, batch, axis_choice, dtype, scale, epsilon):
    shape = (batch, *dims)
    axis = -1 if axis_choice == "last" else 1
    rng = np.random.default_rng(len(dims) * 10 + batch)
    x = (rng.normal(size=shape) * scale).astype(dtype)
    layer = InstanceNormalization(axis=axis, epsilon=epsilon, beta_initializer="random_normal")
    y = layer(x)
    assert tuple(y.shape) == shape == tuple(layer.compute_output_shape(shape))
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    expected = reference(x.astype("float64"), axis, np_(layer.gamma), np_(layer.beta), epsilon)
    # Keras's arrangement x * inv + (beta - mean * inv) cancels where the variance is tiny:
    # float32 round-off of |x| / sqrt(epsilon). Float16 inputs come back rounded to float16,
    # as from GroupNormalization.
    cancellation = 4e-7 * float(np.abs(x.astype("float64")).max()) / math.sqrt(epsilon)
    tolerance = 1e-4 if dtype == "float32" else 5e-3
    np.testing.assert_allclose(np_(y), expected, rtol=tolerance, atol=tolerance + cancellation)
