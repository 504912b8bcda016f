"""BatchNormalization: parity with Keras, the extensions, errors and serialization."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_regkit.layers import BatchNormalization
from keras_regkit.layers._twin import keras_arguments
from tests.backend_utils import training_step
from tests.conftest import requires_backend
from tests.layer_checks import check_layer


def np_(x, dtype=None):
    """A tensor or variable as NumPy, on every backend (torch tensors may require grad)."""
    return np.asarray(keras.ops.convert_to_numpy(x), dtype)


TF = keras.backend.backend() == "tensorflow"
#: Keras's BatchNormalization has renorm since 3.14; before, only ours can be checked.
needs_keras_renorm = pytest.mark.skipif(
    "renorm" not in keras_arguments(keras.layers.BatchNormalization),
    reason=f"keras {keras.__version__} has no BatchNormalization(renorm=...) to compare with",
)
FUSED_CHOICES = [None, False] if TF else [False]


def _pair(shape, axis, rng, **kwargs):
    """A Keras layer and ours with the same (random) gamma and beta."""
    ref = keras.layers.BatchNormalization(axis=axis, momentum=0.8, **kwargs)
    ours = BatchNormalization(axis=axis, momentum=0.8, **{k: v for k, v in kwargs.items()})
    ref.build(shape)
    ours.build(shape)
    weights = []
    for w in ref.weights:
        value = np_(w)
        if w.name in ("gamma", "beta"):
            value = rng.normal(size=value.shape).astype("float32")
        weights.append(value)
    ref.set_weights(weights)
    ours.set_weights(weights)
    return ref, ours


CASES = [
    pytest.param("dense", (32, 16), -1, {}, id="dense"),
    pytest.param("nhwc", (4, 6, 5, 8), -1, {}, id="nhwc"),
    pytest.param("nchw", (4, 8, 6, 5), 1, {}, id="nchw"),
    pytest.param("sequence", (4, 7, 6), -1, {}, id="sequence"),
    pytest.param("dense-renorm", (32, 16), -1,
                 {"renorm": True, "renorm_clipping": {"rmax": 1.5, "rmin": 0.7, "dmax": 0.5}},
                 marks=needs_keras_renorm, id="dense-renorm"),
    pytest.param("nhwc-renorm", (4, 6, 5, 8), -1, {"renorm": True}, marks=needs_keras_renorm, id="nhwc-renorm"),
    pytest.param("no-center-scale", (4, 6, 5, 8), -1, {"center": False, "scale": False}, id="no-center-scale"),
]


@pytest.mark.parametrize("fused", FUSED_CHOICES)
@pytest.mark.parametrize("name,shape,axis,kwargs", CASES)
def test_matches_keras_outputs_gradients_and_moving_statistics(name, shape, axis, kwargs, fused, rng):
    ref, ours = _pair(shape, axis, rng, **kwargs)
    ours.fused = fused
    ours.build(shape) if not ours.built else None
    ours._layout = ours._fused_layout(shape)
    for step in range(3):
        x = (rng.normal(size=shape) * (step + 1) + 3.0).astype("float32")
        upstream = rng.normal(size=shape).astype("float32")
        y_ref, g_ref, s_ref = training_step(ref, x, upstream)
        y_ours, g_ours, s_ours = training_step(ours, x, upstream)
        np.testing.assert_allclose(y_ours, y_ref, rtol=1e-5, atol=2e-5)
        for a, b in zip(g_ours, g_ref):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4)
        for a, b in zip(s_ours, s_ref):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    x = rng.normal(size=shape).astype("float32")
    np.testing.assert_allclose(np_(ours(x)), np_(ref(x)), rtol=1e-5, atol=2e-5)
    assert [w.name for w in ours.weights] == [w.name for w in ref.weights]


def test_masked_sequence_matches_keras(rng):
    shape = (3, 5, 4)
    ref, ours = _pair(shape, -1, rng)
    x = rng.normal(size=shape).astype("float32")
    mask = rng.random(shape[:2]) > 0.4
    upstream = rng.normal(size=shape).astype("float32")
    y_ref, g_ref, s_ref = training_step(ref, x, upstream, mask=mask)
    y_ours, g_ours, s_ours = training_step(ours, x, upstream, mask=mask)
    np.testing.assert_allclose(y_ours, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_ours + s_ours, g_ref + s_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_same_constructor_defaults_as_keras():
    """Default arguments give Keras's config exactly; extensions appear once they are used."""
    assert BatchNormalization(name="bn").get_config() == keras.layers.BatchNormalization(name="bn").get_config()
    extra = {"virtual_batch_size": 8, "unbiased_variance": True, "fused": False}
    config = BatchNormalization(name="bn", **extra).get_config()
    assert {k: config[k] for k in extra} == extra


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_inputs_keep_float32_statistics(dtype, rng):
    shape = (8, 4, 4, 6)
    ref = keras.layers.BatchNormalization(dtype=f"mixed_{dtype}")
    ours = BatchNormalization(dtype=f"mixed_{dtype}")
    x = (rng.normal(size=shape) + 2).astype("float32")
    y_ref = np_(ref(x.astype(dtype), training=True), "float32")
    y_ours = ours(x.astype(dtype), training=True)
    assert keras.backend.standardize_dtype(y_ours.dtype) == dtype
    tol = 1e-2 if dtype == "float16" else 6e-2
    np.testing.assert_allclose(np_(y_ours, "float32"), y_ref, rtol=tol, atol=tol)
    for a, b in zip(ours.weights, ref.weights):
        assert keras.backend.standardize_dtype(a.dtype) == "float32"
        np.testing.assert_allclose(np_(a), np_(b), rtol=1e-3, atol=1e-3)


def test_inference_by_default_and_when_not_trainable(rng):
    layer = BatchNormalization(momentum=0.5)
    x = (rng.normal(size=(16, 3)) * 2 + 5).astype("float32")
    layer.build(x.shape)
    before = [np_(w).copy() for w in layer.weights]
    expected = x / np.sqrt(1.0 + 1e-3)  # moving mean 0, variance 1
    np.testing.assert_allclose(np_(layer(x)), expected, rtol=1e-5)
    layer.trainable = False
    np.testing.assert_allclose(np_(layer(x, training=True)), expected, rtol=1e-5)
    for a, w in zip(before, layer.weights):
        np.testing.assert_array_equal(a, np_(w))


def _ghost_reference(x, group, eps, gamma, beta):
    """NumPy ghost batch norm over consecutive groups (the last may be smaller)."""
    out, means, variances, sizes = [], [], [], []
    for start in range(0, len(x), group):
        chunk = x[start:start + group].astype("float64")
        axes = tuple(range(chunk.ndim - 1))
        mean, var = chunk.mean(axes), chunk.var(axes)
        out.append((chunk - mean) / np.sqrt(var + eps) * gamma + beta)
        means.append(mean)
        variances.append(var)
        sizes.append(chunk.size / chunk.shape[-1])
    return np.concatenate(out), np.array(means), np.array(variances), np.array(sizes)


@pytest.mark.parametrize("batch", [12, 14])
@pytest.mark.parametrize("unbiased", [False, True])
def test_ghost_batches_match_numpy(batch, unbiased, rng):
    shape = (batch, 3, 2, 4)
    x = (rng.normal(size=shape) * 2 + 1).astype("float32")
    layer = BatchNormalization(virtual_batch_size=4, momentum=0.7, unbiased_variance=unbiased,
                               gamma_initializer="random_normal", beta_initializer="random_normal")
    layer.build(shape)
    gamma, beta = np_(layer.gamma), np_(layer.beta)
    y = np_(layer(x, training=True))
    expected, means, variances, sizes = _ghost_reference(x, 4, 1e-3, gamma, beta)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    weights = sizes[:, None] / sizes.sum()
    if unbiased:
        variances = variances * (sizes / (sizes - 1))[:, None]
    np.testing.assert_allclose(np_(layer.moving_mean), 0.3 * (weights * means).sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_(layer.moving_variance), 0.7 + 0.3 * (weights * variances).sum(0),
                               rtol=1e-5, atol=1e-6)


def test_ghost_batch_equal_to_batch_is_plain_batch_norm(rng):
    x = rng.normal(size=(8, 5)).astype("float32")
    ghost = BatchNormalization(virtual_batch_size=8)
    plain = BatchNormalization(fused=False)
    np.testing.assert_allclose(np_(ghost(x, training=True)), np_(plain(x, training=True)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_(ghost.moving_variance), np_(plain.moving_variance), rtol=1e-6)


def test_ghost_batch_gradient_matches_finite_differences(rng):
    if keras.backend.backend() == "jax" and not __import__("jax").config.jax_enable_x64:
        pytest.skip("float64 finite differences need JAX_ENABLE_X64")
    if keras.backend.backend() == "torch":
        # Keras's torch backend rounds float64 layers to float32 precision (even
        # keras.layers.Dense(dtype="float64") does), too coarse for h = 1e-6.
        pytest.skip("float64 finite differences need float64 arithmetic")
    x = rng.normal(size=(6, 3)).astype("float64")
    upstream = rng.normal(size=(6, 3)).astype("float64")
    layer = BatchNormalization(virtual_batch_size=4, dtype="float64", gamma_initializer="random_normal")
    layer.build(x.shape)
    _, grads, _ = training_step(layer, x, upstream)
    numeric = np.zeros_like(x)
    h = 1e-6
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        f_plus = np.sum(np_(layer(plus, training=True)) * upstream)
        f_minus = np.sum(np_(layer(minus, training=True)) * upstream)
        numeric[index] = (f_plus - f_minus) / (2 * h)
    np.testing.assert_allclose(grads[0], numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(64, 10), (4, 5, 5, 3)])
def test_unbiased_variance_uses_bessel_correction(shape, rng):
    x = (rng.normal(size=shape) * 3).astype("float32")
    layer = BatchNormalization(unbiased_variance=True, momentum=0.0)
    layer(x, training=True)
    axes = tuple(range(len(shape) - 1))
    np.testing.assert_allclose(np_(layer.moving_variance), x.astype("float64").var(axes, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(np_(layer.moving_mean), x.astype("float64").mean(axes), rtol=1e-5, atol=1e-6)


@requires_backend("tensorflow")
@pytest.mark.parametrize("shape,axis", [((16, 6), -1), ((4, 5, 5, 6), -1), ((4, 6, 5, 5), 1), ((4, 6, 5), 1)])
@pytest.mark.parametrize("unbiased", [False, True])
def test_fused_fast_path_equals_generic_path(shape, axis, unbiased, rng):
    import tensorflow as tf

    x = (rng.normal(size=shape) * 2 + 1).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    results = []
    for fused in (True, False):
        layer = BatchNormalization(axis=axis, fused=fused, unbiased_variance=unbiased, momentum=0.5)
        y, grads, state = training_step(layer, x, upstream)
        infer = tf.function(lambda t: layer(t, training=False))(x)
        results.append([y, np_(infer)] + grads + state)
        assert (layer._layout is not None) == fused
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)


def test_jit_compiled_training_step_matches_eager(rng):
    shape = (8, 4, 4, 3)
    x = rng.normal(size=shape).astype("float32")
    eager = BatchNormalization(momentum=0.5)
    model = keras.Sequential([keras.Input(shape[1:]), BatchNormalization(momentum=0.5), keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    model.fit(x, np.zeros((8, 1)), batch_size=8, epochs=1, verbose=0, shuffle=False)
    eager(x, training=True)
    bn = model.layers[0]
    np.testing.assert_allclose(np_(bn.moving_mean), np_(eager.moving_mean), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_(bn.moving_variance), np_(eager.moving_variance), rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple),
    axis_index=st.integers(0, 3),
    scale_factor=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_property_matches_keras_on_random_shapes(shape, axis_index, scale_factor):
    rng = np.random.default_rng(len(shape) * 10 + axis_index)
    axis = axis_index % len(shape)
    if shape[axis] is None:
        return
    x = (rng.normal(size=shape) * scale_factor).astype("float32")
    ref, ours = _pair(shape, axis, rng)
    y_ref = np_(ref(x, training=True))
    y_ours = np_(ours(x, training=True))
    assert y_ours.shape == shape and y_ours.dtype == np.float32
    # Keras computes x * inv - mean * inv, which cancels when the variance is tiny
    # next to the mean: its error grows with |x| / sqrt(epsilon).
    np.testing.assert_allclose(y_ours, y_ref, rtol=1e-4, atol=1e-4 + 1e-5 * scale_factor)
    for a, b in zip(ours.weights, ref.weights):
        np.testing.assert_allclose(np_(a), np_(b), rtol=1e-5, atol=1e-5 * scale_factor**2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"momentum": 1.5}, r"momentum must be in \[0, 1\], got 1.5"),
        ({"momentum": -0.1}, r"momentum must be in \[0, 1\]"),
        ({"epsilon": 0.0}, r"epsilon must be in \(0, inf\), got 0.0"),
        ({"renorm": True, "renorm_clipping": {"rmax": 2, "bogus": 1}}, r"unknown keys \['bogus'\]"),
        ({"renorm": True, "renorm_clipping": {"rmax": 1, "rmin": 2}}, r"rmax >= rmin"),
        ({"renorm": True, "renorm_clipping": {"dmax": -1}}, r"dmax'\] must be >= 0"),
        ({"virtual_batch_size": 0}, r"virtual_batch_size must be an integer >= 1, got 0"),
        ({"renorm_momentum": 2.0}, r"renorm_momentum must be in \[0, 1\]"),
        ({"fused": "yes"}, r"fused must be one of None, True, False"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchNormalization(**kwargs)


def test_momentum_one_freezes_moving_statistics(rng):
    layer = BatchNormalization(momentum=1.0)
    layer(rng.normal(size=(8, 3)).astype("float32"), training=True)
    np.testing.assert_array_equal(np_(layer.moving_mean), np.zeros(3))
    np.testing.assert_array_equal(np_(layer.moving_variance), np.ones(3))


def test_axis_out_of_range_and_bad_mask_raise():
    with pytest.raises(ValueError, match=r"axis must be in \[-2, 1\] for inputs of rank 2 .*got 3"):
        BatchNormalization(axis=3).build((4, 5))
    with pytest.raises(TypeError, match="axis must be an integer"):
        BatchNormalization(axis=1.5)
    layer = BatchNormalization()
    with pytest.raises(ValueError, match=r"mask must have rank rank\(inputs\) - 1"):
        layer(np.ones((2, 3, 4), "float32"), training=True, mask=np.ones((2,), bool))


def test_fused_true_where_it_cannot_apply_raises():
    with pytest.raises(ValueError, match="fused=True needs"):
        BatchNormalization(fused=True, renorm=True).build((4, 3))


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        ({}, (4, 6)),
        ({"axis": 1}, (4, 3, 5, 5)),
        ({"renorm": True, "renorm_clipping": {"rmax": 3.0}}, (4, 5, 5, 3)),
        ({"virtual_batch_size": 2, "unbiased_variance": True}, (4, 5, 3)),
        ({"gamma_regularizer": "l2", "beta_constraint": "non_neg", "synchronized": True}, (4, 6)),
    ],
)
def test_layer_contract_and_serialization(kwargs, shape):
    check_layer(BatchNormalization, kwargs, shape)


def test_keras_file_round_trip_of_trained_model(tmp_path, rng):
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3),
        BatchNormalization(virtual_batch_size=8, renorm=True),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1),
    ])
    model.compile("adam", "mse")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert isinstance(loaded.layers[1], BatchNormalization)
