"""mc_predict: dropout active, BatchNormalization (and everything else) in inference mode."""

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import layers as L


def _model(dropout_layer):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(64)(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = dropout_layer(h)
    return keras.Model(inputs, keras.layers.Dense(2)(h))


def _shift_bn(model):
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    bn.moving_mean.assign(np.full((64,), 3.0, "float32"))
    bn.moving_variance.assign(np.full((64,), 4.0, "float32"))
    return bn


@pytest.mark.parametrize(
    "make", [lambda: keras.layers.Dropout(0.3, seed=1), lambda: L.Dropout(0.3, seed=1)], ids=["keras", "regkit"]
)
def test_mean_matches_inference_and_batchnorm_stays_in_inference(make):
    model = _model(make())
    bn = _shift_bn(model)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    mean, std = keras_regkit.mc_predict(model, x, samples=400)
    deterministic = keras.ops.convert_to_numpy(model(x, training=False))
    # The head is linear, so E[output] is the deterministic inference output...
    scale = np.abs(deterministic).mean()
    assert np.abs(mean - deterministic).mean() < 0.1 * scale
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), 3.0)  # untouched
    # ...which training=True (batch statistics) would not give.
    batch_stats = keras.ops.convert_to_numpy(model(x, training=True))
    assert np.abs(batch_stats - deterministic).mean() > 0.3 * scale
    assert std.shape == deterministic.shape and np.all(std > 0)


def test_without_active_noise_every_sample_is_the_inference_output():
    model = _model(L.Dropout(0.0))
    _shift_bn(model)
    x = np.random.default_rng(1).normal(size=(8, 6)).astype("float32")
    mean, std = keras_regkit.mc_predict(model, x, samples=3, batch_size=3)
    np.testing.assert_allclose(mean, keras.ops.convert_to_numpy(model(x, training=False)), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(std, 0.0)


def test_std_matches_numpy_reference_of_the_same_samples():
    """A single Dropout before a sum: every sample is reproducible from the same seed state."""
    inputs = keras.Input((50,))
    outputs = L.Dropout(0.5, seed=3)(inputs)
    model = keras.Model(inputs, outputs)
    x = np.ones((4, 50), "float32")
    mean, std = keras_regkit.mc_predict(model, x, samples=5)
    reference = L.Dropout(0.5, seed=3)
    draws = np.stack([keras.ops.convert_to_numpy(reference(x, training=True)) for _ in range(5)])
    np.testing.assert_allclose(mean, draws.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, draws.std(0), rtol=1e-5, atol=1e-6)


def test_layers_are_restored_and_nested_models_covered():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.GaussianNoise(1.0, seed=0)])
    inputs = keras.Input((4,))
    model = keras.Model(inputs, inner(inputs))
    x = np.zeros((3, 4), "float32")
    _, std = keras_regkit.mc_predict(model, x, samples=10)
    assert np.all(std > 0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)), 0.0)
    assert "call" not in inner.layers[0].__dict__


@pytest.mark.parametrize("samples", [0, -3])
def test_samples_below_one_raises(samples):
    with pytest.raises(ValueError, match=f"mc_predict: samples must be an integer >= 1, got {samples}"):
        keras_regkit.mc_predict(_model(L.Dropout(0.1)), np.ones((2, 6), "float32"), samples=samples)


def test_bad_batch_size_raises():
    with pytest.raises(ValueError, match="mc_predict: batch_size must be an integer >= 1, got 0"):
        keras_regkit.mc_predict(_model(L.Dropout(0.1)), np.ones((2, 6), "float32"), samples=2, batch_size=0)
