"""The Dropout-family layers: the shared layer contract, Keras parity, and the extensions."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_regkit import layers as L
from tests.backend_utils import gradient
from tests.layer_checks import check_layer


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "cls, kwargs, shape",
    [
        (L.Dropout, {"rate": 0.3, "seed": 1}, (4, 6)),
        (L.Dropout, {"rate": 0.3, "noise_shape": (None, 1, 5), "seed": 2}, (4, 3, 5)),
        (L.SpatialDropout1D, {"rate": 0.3, "seed": 1}, (2, 5, 4)),
        (L.SpatialDropout2D, {"rate": 0.3, "seed": 1}, (2, 5, 5, 4)),
        (L.SpatialDropout3D, {"rate": 0.3, "seed": 1}, (2, 3, 3, 3, 4)),
        (L.GaussianDropout, {"rate": 0.3, "seed": 1}, (4, 6)),
        (L.GaussianNoise, {"stddev": 0.3, "seed": 1}, (4, 6)),
        (L.AlphaDropout, {"rate": 0.3, "seed": 1}, (4, 6)),
        (L.DropPath, {"rate": 0.3, "seed": 1}, (4, 6)),
        (L.DropBlock2D, {"rate": 0.2, "block_size": 3, "seed": 1}, (2, 8, 8, 3)),
        (L.DropBlock2D, {"rate": 0.2, "block_size": 2, "data_format": "channels_first", "seed": 1}, (2, 3, 6, 5)),
        (L.SpatialDropout2D, {"rate": 0.3, "data_format": "channels_first", "seed": 1}, (2, 4, 5, 5)),
    ],
)
def test_layer_contract(cls, kwargs, shape):
    check_layer(cls, kwargs, shape, identity_in_inference=True)


def test_test_time_dropout_contract():
    layer = check_layer(L.Dropout, {"rate": 0.25, "scaling": "test_time", "seed": 3}, (4, 6))
    x = np.ones((4, 6), "float32")
    np.testing.assert_allclose(np_(layer(x, training=False)), 0.75 * x)


# check_layer builds from kwargs only: these subclasses give the wrappers a fresh Dense each time.
@keras.saving.register_keras_serializable(package="keras_regkit_tests")
class DropConnectDense3(L.DropConnect):
    def __init__(self, layer=None, **kwargs):
        super().__init__(layer or keras.layers.Dense(3), **kwargs)


@keras.saving.register_keras_serializable(package="keras_regkit_tests")
class WeightNoiseDense3(L.WeightNoise):
    def __init__(self, layer=None, **kwargs):
        super().__init__(layer or keras.layers.Dense(3), **kwargs)


@pytest.mark.parametrize("cls, arg", [(DropConnectDense3, {"rate": 0.3}), (WeightNoiseDense3, {"stddev": 0.1})])
def test_kernel_wrappers_contract(cls, arg):
    layer = check_layer(cls, {**arg, "seed": 1}, (4, 5), check_mixed_precision=True)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    np.testing.assert_allclose(np_(layer(x, training=False)), np_(layer.layer(x)), rtol=1e-6)


@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_dropout_statistics_match_keras(rate):
    x = np.ones((300, 400), "float32")
    ours = np_(L.Dropout(rate, seed=1)(x, training=True))
    theirs = np_(keras.layers.Dropout(rate, seed=1)(x, training=True))
    n, sd = x.size, np.sqrt(x.size * rate * (1 - rate))
    for y in (ours, theirs):
        assert abs((y == 0).sum() - rate * n) < 5 * sd
        np.testing.assert_allclose(np.unique(y[y != 0]), 1 / (1 - rate), rtol=1e-6)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: L.SpatialDropout1D(0.5, seed=2), lambda: keras.layers.SpatialDropout1D(0.5, seed=2)),
        (lambda: L.SpatialDropout2D(0.5, seed=2), lambda: keras.layers.SpatialDropout2D(0.5, seed=2)),
        (lambda: L.GaussianDropout(0.3, seed=2), lambda: keras.layers.GaussianDropout(0.3, seed=2)),
        (lambda: L.GaussianNoise(0.3, seed=2), lambda: keras.layers.GaussianNoise(0.3, seed=2)),
    ],
)
def test_keras_parity_same_seed(ours, theirs):
    """Spatial masks follow Keras's noise shape; Gaussian layers draw the same normals."""
    shape = {1: (64, 3, 40), 2: (64, 2, 2, 40)}
    layer_a, layer_b = ours(), theirs()
    x = np.random.default_rng(1).normal(size=shape.get(getattr(layer_a, "rank", 1), (64, 3, 40))).astype("float32")
    a, b = np_(layer_a(x, training=True)), np_(layer_b(x, training=True))
    if isinstance(layer_a, L.Dropout):
        zero = a == 0
        axes = tuple(range(1, x.ndim - 1))
        assert np.array_equal(zero.all(axis=axes), zero.any(axis=axes))  # whole channels
        n, sd = 64 * 40, np.sqrt(64 * 40 * 0.25)  # (example, channel) draws at rate 0.5
        for out in (a, b):
            assert abs((out == 0).all(axis=axes).sum() - 0.5 * n) < 5 * sd
    else:
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_alpha_dropout_matches_keras_formula_and_statistics():
    """Same affine map as Keras (values where both keep, and the dropped value), same moments."""
    x = np.random.default_rng(2).normal(size=(400, 300)).astype("float32")
    a = np_(L.AlphaDropout(0.2, seed=4)(x, training=True))
    b = np_(keras.layers.AlphaDropout(0.2, seed=4)(x, training=True))
    alpha_p = -1.6732632423543772 * 1.0507009873554805
    coef = ((1 - 0.2) * (1 + 0.2 * alpha_p**2)) ** -0.5
    dropped_value = coef * alpha_p - coef * alpha_p * 0.2
    dropped_a = np.isclose(a, dropped_value, rtol=0, atol=1e-6)
    dropped_b = np.isclose(b, dropped_value, rtol=0, atol=1e-6)
    both = ~dropped_a & ~dropped_b
    np.testing.assert_allclose(a[both], b[both], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a[both], coef * x[both] - coef * alpha_p * 0.2, rtol=1e-5, atol=1e-6)
    assert abs(dropped_a.mean() - dropped_b.mean()) < 0.01
    assert abs(a.mean() - b.mean()) < 0.02 and abs(a.std() - b.std()) < 0.02


def test_determinism_for_a_given_seed():
    x = np.ones((32, 64), "float32")
    for make in (lambda: L.Dropout(0.5, seed=3), lambda: L.DropPath(0.5, seed=3), lambda: L.DropBlock2D(0.2, 2, seed=3)):
        xi = x.reshape(2, 4, 4, 64) if isinstance(make(), L.DropBlock2D) else x
        a, b = make(), make()
        np.testing.assert_array_equal(np_(a(xi, training=True)), np_(b(xi, training=True)))


def test_test_time_and_inverted_models_map_by_weight_rescaling():
    """Train in one mode, copy weights to the other with the next layer's kernel scaled."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")
    rate = 0.3

    def model(scaling):
        inputs = keras.Input((8,))
        h = keras.layers.Dense(32, activation="relu")(inputs)
        h = L.Dropout(rate, seed=0, scaling=scaling)(h)
        return keras.Model(inputs, keras.layers.Dense(1)(h))

    trained = model("test_time")
    trained.compile("adam", "mse")
    trained.fit(x, y, epochs=2, verbose=0)
    mapped = model("inverted")
    w = trained.get_weights()
    kernel_index = [i for i, v in enumerate(trained.weights) if v.path.endswith("dense_1/kernel")]
    for i, v in enumerate(trained.weights):
        if v.path.endswith("kernel") and v.shape == (32, 1):
            w[i] = w[i] * (1 - rate)
    mapped.set_weights(w)
    del kernel_index
    np.testing.assert_allclose(np_(mapped(x, training=False)), np_(trained(x, training=False)), rtol=1e-5, atol=1e-5)
    # With the same mask, the inverted layer's training output is the test-time one / keep.
    h = np.abs(x[:, :1]) * np.ones((1, 32), "float32")
    t = np_(L.Dropout(rate, seed=5, scaling="test_time")(h, training=True))
    i = np_(L.Dropout(rate, seed=5)(h, training=True))
    np.testing.assert_allclose(i * (1 - rate), t, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [lambda: L.Dropout(0.1), lambda: L.SpatialDropout2D(0.1),
                                  lambda: L.DropPath(0.1), lambda: L.DropBlock2D(0.1, 2)])
def test_rate_is_settable_exactly_and_is_not_a_weight(make):
    layer = make()
    layer.rate = 0.35
    assert layer.rate == 0.35 and layer.get_config()["rate"] == 0.35  # the Python float, exactly
    assert layer.weights == [] and len(layer.seed_generator.state.shape) == 1
    np.testing.assert_allclose(np_(layer.rate_tensor), 0.35, rtol=1e-7)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\], got 1.5"):
        layer.rate = 1.5
    assert layer.rate == 0.35


@pytest.mark.parametrize("make", [lambda: L.Dropout(0.0), lambda: L.Dropout(0, scaling="test_time"),
                                  lambda: L.SpatialDropout1D(0.0), lambda: L.DropPath(0.0),
                                  lambda: L.DropBlock2D(0.0, 1), lambda: L.DropConnect(keras.layers.Dense(4), 0.0)])
def test_rate_zero_layers_keep_no_random_state_as_keras(make):
    layer = make()
    assert not layer.schedulable and not hasattr(layer, "seed_generator")
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    if isinstance(layer, L.DropBlock2D):
        x = x[..., None]
    expected = np_(layer.layer(x)) if isinstance(layer, L.DropConnect) else x
    np.testing.assert_allclose(np_(layer(x, training=True)), expected, rtol=1e-6)
    layer.rate = 0.0  # a no-op is fine
    with pytest.raises(ValueError, match=r"rate can only change on a layer constructed with rate > 0.*got rate=0.3"):
        layer.rate = 0.3


def test_rate_in_the_random_state_leaves_keras_random_stream_unchanged():
    """The schedulable layer draws exactly the seeds keras.random.SeedGenerator would."""
    ours = L.Dropout(0.3, seed=11).seed_generator
    theirs = keras.random.SeedGenerator(11)
    for _ in range(3):
        np.testing.assert_array_equal(np_(ours.next()), np_(theirs.next()))
    ours.set_rate(0.9)
    np.testing.assert_array_equal(np_(ours.next()), np_(theirs.next()))
    np.testing.assert_allclose(np_(ours.rate), 0.9, rtol=1e-7)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: L.Dropout(1.5), r"Dropout: rate must be in \[0, 1\], got 1.5"),
        (lambda: L.Dropout(-0.1), r"Dropout: rate must be in \[0, 1\], got -0.1"),
        (lambda: L.Dropout(0.1, scaling="upside"), r"Dropout: scaling must be one of 'inverted', 'test_time'"),
        (lambda: L.Dropout(0.1, noise_shape=(0, 3)), r"Dropout: noise_shape must be None or a tuple of "
                                                     r"positive ints and None entries, got \(0, 3\) \(entry 0 is 0\)"),
        (lambda: L.Dropout(0.1, noise_shape="Invalid"), r"Dropout: noise_shape must be .*, got 'Invalid'"),
        (lambda: L.Dropout(0.1, noise_shape=(2, 1.5)), r"Dropout: noise_shape .*\(entry 1 is 1.5\)"),
        (lambda: L.Dropout(0.1, noise_shape=3), r"Dropout: noise_shape must be .*, got 3"),
        (lambda: L.Dropout(0.1, noise_shape=(True, 2)), r"Dropout: noise_shape .*\(entry 0 is True\)"),
        (lambda: L.AlphaDropout(0.1, noise_shape=(-1,)), r"AlphaDropout: noise_shape .*\(entry 0 is -1\)"),
        (lambda: L.SpatialDropout2D(2.0), r"SpatialDropout2D: rate must be in \[0, 1\], got 2.0"),
        (lambda: L.GaussianDropout(1.01), r"GaussianDropout: rate must be in \[0, 1\]"),
        (lambda: L.AlphaDropout(-1), r"AlphaDropout: rate must be in \[0, 1\]"),
        (lambda: L.GaussianNoise(-0.5), r"GaussianNoise: stddev must be in \[0, inf\), got -0.5"),
        (lambda: L.DropPath(1.2), r"DropPath: rate must be in \[0, 1\]"),
        (lambda: L.DropBlock2D(0.1, 0), r"DropBlock2D: block_size must be an integer >= 1, got 0"),
        (lambda: L.DropBlock2D(1.1, 3), r"DropBlock2D: rate must be in \[0, 1\]"),
        (lambda: L.DropConnect(keras.layers.Dense(2), 1.1), r"DropConnect: rate must be in \[0, 1\]"),
        (lambda: L.WeightNoise(keras.layers.Dense(2), -1.0), r"WeightNoise: stddev must be in \[0, inf\)"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_types_and_late_errors():
    with pytest.raises(TypeError, match="DropConnect: layer must be a keras.layers.Dense"):
        L.DropConnect(keras.layers.Conv2D(2, 3), 0.1)
    with pytest.raises(TypeError, match=r"SpatialDropout2D: noise_shape is not an argument .* got noise_shape=\(1, 2\)"):
        L.SpatialDropout2D(0.5, noise_shape=(1, 2))
    with pytest.raises(TypeError, match="Dropout: rate must be a real number, got '0.5'"):
        L.Dropout("0.5")
    with pytest.raises(ValueError, match=r"DropBlock2D: block_size must be an integer in \[1, 5\]"):
        L.DropBlock2D(0.1, 7)(np.ones((1, 5, 9, 2), "float32"), training=True)
    with pytest.raises(ValueError, match="noise_shape must broadcast"):
        L.Dropout(0.5, noise_shape=(2, 3))(np.ones((4, 6), "float32"), training=True)


def test_rate_one_returns_zeros():
    x = np.ones((3, 4, 4, 2), "float32")
    for layer in (L.Dropout(1.0), L.DropPath(1.0), L.SpatialDropout2D(1.0), L.GaussianDropout(1.0), L.AlphaDropout(1.0)):
        np.testing.assert_array_equal(np_(layer(x, training=True)), 0.0)
    np.testing.assert_array_equal(np_(L.DropBlock2D(1.0, 2)(x, training=True)), 0.0)


def test_drop_connect_drops_weights_not_activations():
    dense = keras.layers.Dense(200, use_bias=False, kernel_initializer="ones")
    layer = L.DropConnect(dense, 0.5, seed=0)
    x = np.eye(50, dtype="float32")  # row i of the output reads row i of the masked kernel
    y = np_(layer(x, training=True))
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert abs((y == 0).mean() - 0.5) < 0.02


def test_weight_noise_perturbs_the_kernel_with_the_given_stddev():
    dense = keras.layers.Dense(300, use_bias=False, kernel_initializer="zeros")
    layer = L.WeightNoise(dense, 0.2, seed=0)
    y = np_(layer(np.eye(100, dtype="float32"), training=True))  # = the noise itself
    assert abs(y.std() - 0.2) < 0.01 and abs(y.mean()) < 0.005
    np.testing.assert_array_equal(np_(layer(np.eye(100, dtype="float32"), training=False)), 0.0)


def test_gradients_flow_through_masks():
    """d sum(dropout(x)) / dx = mask / keep, which equals the output itself at x = 1."""
    from keras_regkit.ops.dropout import dropout

    x = np.ones((4, 10), "float32")
    y = np_(dropout(x, 0.5, seed=1))
    np.testing.assert_allclose(gradient(lambda v: dropout(v, 0.5, seed=1), x), y)


def test_jit_compile_fit_runs_on_every_layer():
    inputs = keras.Input((8, 8, 3))
    h = L.DropBlock2D(0.1, 3, seed=0)(inputs)
    h = L.SpatialDropout2D(0.1, seed=0)(h)
    h = keras.layers.Flatten()(h)
    h = L.DropConnect(keras.layers.Dense(8), 0.2, seed=0)(h)
    h = L.WeightNoise(keras.layers.Dense(8), 0.01, seed=0)(h)
    h = L.Dropout(0.2, seed=0)(h)
    h = L.GaussianDropout(0.1, seed=0)(h)
    h = L.GaussianNoise(0.1, seed=0)(h)
    h = L.AlphaDropout(0.1, seed=0)(h)
    out = keras.layers.Dense(1)(h + L.DropPath(0.2, seed=0)(h))
    model = keras.Model(inputs, out)
    model.compile("sgd", "mse", jit_compile=True)
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32")
    history = model.fit(x, x[:, :1, 0, 0], epochs=2, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


@settings(max_examples=15, deadline=None)
@given(
    rank=st.integers(1, 4),
    rate=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    dtype=st.sampled_from(["float32", "float16"]),
)
def test_dropout_property_shapes_dtypes_values(rank, rate, dtype):
    shape = tuple(range(2, 2 + rank))
    x = (np.arange(np.prod(shape)).reshape(shape) % 7 + 1).astype(dtype)
    y = np_(L.Dropout(rate, seed=0, dtype=dtype)(x, training=True))
    assert y.shape == shape and y.dtype == np.dtype(dtype)
    kept = y != 0
    if rate < 1:
        np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-3)
    else:
        assert not kept.any()


@settings(max_examples=10, deadline=None)
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    block_fraction=st.floats(0.0, 1.0),
    rate=st.sampled_from([0.0, 0.1, 0.5]),
    channels_first=st.booleans(),
)
def test_drop_block_property_shapes_and_values(height, width, block_fraction, rate, channels_first):
    block_size = 1 + int(block_fraction * (min(height, width) - 1))
    data_format = "channels_first" if channels_first else "channels_last"
    shape = (3, 2, height, width) if channels_first else (3, height, width, 2)
    x = np.ones(shape, "float32")
    y = np_(L.DropBlock2D(rate, block_size, data_format=data_format, seed=0)(x, training=True))
    assert y.shape == shape and np.all(np.isfinite(y))
    kept = y != 0
    if kept.any():  # survivors all carry the same count / count_kept scale
        np.testing.assert_allclose(y[kept], y.size / kept.sum(), rtol=1e-5)
    if rate == 0:
        np.testing.assert_array_equal(y, x)
