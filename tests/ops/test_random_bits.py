"""Keep masks from raw random bits: statistics, quantization, and agreement with the fallback."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_regkit.ops.random_bits import keep_mask, realised_rate
from tests.conftest import requires_backend


#: The raw-bits fast path exists on TensorFlow and JAX; torch uses the portable fallback.
FAST_PATH = keras.backend.backend() in ("tensorflow", "jax")
needs_fast_path = pytest.mark.skipif(not FAST_PATH, reason="no raw-bits fast path on this backend")


def _mask(shape, rate, seed, fast=True):
    return keras.ops.convert_to_numpy(keep_mask(shape, rate, keras.random.SeedGenerator(seed), fast=fast))


def _binomial_ok(dropped, n, p, z=5.0):
    return abs(dropped - n * p) <= z * np.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("fast", [True, False])
def test_dropped_fraction_in_binomial_interval(rate, fast):
    mask = _mask((200, 500), rate, seed=3, fast=fast)
    assert _binomial_ok(int((~mask).sum()), mask.size, rate)


def _reference_mask(shape, rate, seed):
    """NumPy reference from the same raw words, drawn through the backends' public APIs."""
    size = int(np.prod(shape))
    words = (size + 1) // 2
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        raw = tf.random.stateless_uniform(
            (words,), seed=tf.constant([seed, 0], tf.int32), minval=None, maxval=None, dtype=tf.uint32
        ).numpy()
    else:
        import jax

        raw = np.asarray(jax.random.bits(np.array([seed, 0], np.uint32), (words,), dtype=np.uint32))
    halves = raw.astype("<u4").view("<i2")[:size]  # two signed 16-bit draws per word
    threshold = min(int(np.ceil(np.float32(rate) * 2**16)), 2**16 - 1)
    return (halves.astype(np.int32) + 2**15 >= threshold).reshape(shape)


@needs_fast_path
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.77, 0.99999])
@pytest.mark.parametrize("shape", [(64, 257), (3, 5, 7), (1,)])
def test_fast_path_equals_numpy_reference_on_the_same_bits(rate, shape):
    """Each 32-bit word gives two 16-bit draws v (as int16, shifted to [0, 2**16)), kept when
    v >= ceil(rate * 2**16)."""
    got = keras.ops.convert_to_numpy(keep_mask(shape, rate, 11))
    np.testing.assert_array_equal(got, _reference_mask(shape, rate, 11))


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.77])
def test_fast_path_and_fallback_have_the_same_statistics(rate):
    fast, slow = _mask((300, 400), rate, 4), _mask((300, 400), rate, 4, fast=False)
    n = fast.size
    for mask in (fast, slow):
        assert _binomial_ok(int((~mask).sum()), n, rate)
    # Two independent binomials: their difference is within 5 standard deviations.
    assert abs(int((~fast).sum()) - int((~slow).sum())) <= 5 * np.sqrt(2 * n * rate * (1 - rate))


@pytest.mark.skipif(FAST_PATH, reason="the fallback is tested where it is the only path")
def test_without_a_fast_path_fast_true_is_the_fallback():
    np.testing.assert_array_equal(_mask((64, 33), 0.3, 5), _mask((64, 33), 0.3, 5, fast=False))


def test_rate_zero_keeps_all_and_rate_one_drops_all_but_2_to_the_minus_16():
    assert _mask((1000,), 0.0, 1).all()
    assert not _mask((1000,), 1.0, 1, fast=False).any()
    if FAST_PATH:
        assert (~_mask((100000,), 1.0, 1)).mean() > 0.999


@needs_fast_path
def test_quantization_is_2_to_the_minus_16():
    """Rates in the same 2**-16 bucket give the same mask; realised rate = ceil(r*2**16)/2**16."""
    k = np.floor(0.3 * 2**16)
    low, high = (k + 0.25) / 2**16, (k + 0.75) / 2**16
    np.testing.assert_array_equal(_mask((4096,), low, 5), _mask((4096,), high, 5))
    for rate in (0.1, 1 / 3, 0.5, 0.999):
        assert 0.0 <= realised_rate(rate) - rate <= 2.0**-16
    # A large sample measures the realised rate: 2**22 draws resolve it to ~2.4e-4 (1 sd).
    mask = _mask((2**22,), 0.1, 8)
    assert abs((~mask).mean() - realised_rate(0.1)) < 5 * np.sqrt(0.09 / 2**22)


def test_same_seed_same_mask_and_generator_advances():
    gen_a, gen_b = keras.random.SeedGenerator(7), keras.random.SeedGenerator(7)
    first_a = keras.ops.convert_to_numpy(keep_mask((100,), 0.5, gen_a))
    first_b = keras.ops.convert_to_numpy(keep_mask((100,), 0.5, gen_b))
    second_a = keras.ops.convert_to_numpy(keep_mask((100,), 0.5, gen_a))
    np.testing.assert_array_equal(first_a, first_b)
    assert not np.array_equal(first_a, second_a)


def test_rate_as_variable():
    rate = keras.Variable(0.25, dtype="float32", trainable=False)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(keep_mask((5000,), rate, keras.random.SeedGenerator(2))), _mask((5000,), 0.25, 2)
    )
    if FAST_PATH:
        got = keras.ops.convert_to_numpy(keep_mask((5000,), rate, 3))
        np.testing.assert_array_equal(got, _reference_mask((5000,), 0.25, 3))


@requires_backend("tensorflow")
def test_xla_path_statistics_and_determinism():
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def masks():
        return keep_mask((100, 1000), 0.3, 42), keep_mask((100, 1000), 0.3, 42)

    a, b = (m.numpy() for m in masks())
    np.testing.assert_array_equal(a, b)  # a fixed int seed repeats the mask
    assert _binomial_ok(int((~a).sum()), a.size, 0.3)


@settings(max_examples=15, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple),
    rate=st.floats(0.0, 1.0),
)
def test_shapes_and_extreme_rates(shape, rate):
    mask = keras.ops.convert_to_numpy(keep_mask(shape, rate, 0))
    assert mask.shape == shape and mask.dtype == bool
    if FAST_PATH:
        np.testing.assert_array_equal(mask, _reference_mask(shape, rate, 0))
    else:
        np.testing.assert_array_equal(mask, keras.ops.convert_to_numpy(keep_mask(shape, rate, 0, fast=False)))
