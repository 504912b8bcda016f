"""Pure dropout functions: inverted vs test-time scaling, noise shapes, reference formulas."""

import keras
import numpy as np
import pytest

from keras_regkit.ops import dropout as D
from keras_regkit.ops.drop_block import drop_block_2d, drop_block_gamma


def np_(x):
    return keras.ops.convert_to_numpy(x)


def test_inverted_dropout_zeroes_or_scales_and_preserves_mean():
    x = np.ones((400, 500), "float32")
    y = np_(D.dropout(x, 0.3, seed=keras.random.SeedGenerator(0)))
    assert set(np.unique(np.round(y, 6))) <= {0.0, np.float32(1 / 0.7).round(6)}
    n = y.size
    assert abs((y == 0).sum() - 0.3 * n) <= 5 * np.sqrt(n * 0.21)
    assert abs(y.mean() - 1.0) < 5 * np.sqrt(0.3 / 0.7 / n)


def test_test_time_scaling_has_the_same_expected_activation():
    x = np.full((500, 400), 2.0, "float32")
    train = np_(D.dropout(x, 0.4, seed=keras.random.SeedGenerator(1), scaling="test_time"))
    assert set(np.unique(train)) <= {0.0, 2.0}  # survivors unscaled
    infer = np_(D.scale_for_inference(x, 0.4))
    np.testing.assert_allclose(infer, 2.0 * 0.6)
    inverted = np_(D.dropout(x, 0.4, seed=keras.random.SeedGenerator(1)))
    # Same mask, so inverted = test_time / keep: both unbiased for their own inference output.
    np.testing.assert_allclose(inverted, train / 0.6, rtol=1e-6)
    assert abs(train.mean() - infer.mean()) < 0.02


def test_noise_shape_broadcasts_and_none_follows_input():
    x = np.ones((8, 50, 6), "float32")
    y = np_(D.dropout(x, 0.5, noise_shape=(None, 1, None), seed=3))
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1, :], y.shape))


@pytest.mark.parametrize("noise_shape", [(8, 3, 6), (8, 50), (2, 50, 6)])
def test_noise_shape_that_cannot_broadcast_raises(noise_shape):
    with pytest.raises(ValueError, match="noise_shape"):
        D.dropout(np.ones((8, 50, 6), "float32"), 0.5, noise_shape=noise_shape, seed=1)


def test_rate_extremes():
    x = np.arange(12, dtype="float32").reshape(3, 4)
    np.testing.assert_array_equal(np_(D.dropout(x, 0.0, seed=1)), x)
    np.testing.assert_array_equal(np_(D.dropout(x, 1.0, seed=1)), np.zeros_like(x))
    rate = keras.Variable(1.0, dtype="float32", trainable=False)
    np.testing.assert_array_equal(np_(D.dropout(x, rate, seed=1)), np.zeros_like(x))


def test_drop_path_drops_whole_examples():
    x = np.ones((2000, 3, 4), "float32")
    y = np_(D.drop_path(x, 0.25, seed=keras.random.SeedGenerator(2)))
    per_example = y.reshape(2000, -1)
    assert np.all(per_example.min(1) == per_example.max(1))
    dropped = (per_example[:, 0] == 0).sum()
    assert abs(dropped - 500) <= 5 * np.sqrt(2000 * 0.25 * 0.75)
    np.testing.assert_allclose(per_example[per_example[:, 0] > 0], 1 / 0.75, rtol=1e-6)


def test_gaussian_dropout_and_noise_match_numpy_moments():
    x = np.full((400, 500), 3.0, "float32")
    y = np_(D.gaussian_dropout(x, 0.2, seed=keras.random.SeedGenerator(4)))
    std = 3.0 * np.sqrt(0.2 / 0.8)
    assert abs(y.mean() - 3.0) < 5 * std / np.sqrt(y.size)
    assert abs(y.std() - std) / std < 0.01
    z = np_(D.gaussian_noise(x, 0.5, seed=keras.random.SeedGenerator(4)))
    assert abs(z.mean() - 3.0) < 5 * 0.5 / np.sqrt(z.size)
    assert abs(z.std() - 0.5) / 0.5 < 0.01


def test_alpha_dropout_matches_numpy_reference_and_self_normalizes():
    rate = 0.2
    x = np.random.default_rng(0).normal(size=(500, 400)).astype("float32")
    gen_a, gen_b = keras.random.SeedGenerator(5), keras.random.SeedGenerator(5)
    y = np_(D.alpha_dropout(x, rate, seed=gen_a))
    keep = np_(D.keep_mask(x.shape, rate, gen_b))  # the same draw as inside alpha_dropout
    alpha_p = -1.6732632423543772 * 1.0507009873554805
    a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
    b = -a * alpha_p * rate
    np.testing.assert_allclose(y, a * np.where(keep, x, alpha_p) + b, rtol=1e-5, atol=1e-6)
    assert abs(y.mean()) < 0.02 and abs(y.std() - 1) < 0.02


def test_drop_block_gamma_is_the_papers():
    assert drop_block_gamma(0.1, 7, 32, 32) == pytest.approx(0.1 / 49 * 1024 / 26**2)


def _blocks_cover_zeros(zero, size):
    """Every zero lies in some all-zero size x size square (the mask is a union of blocks)."""
    h, w = zero.shape
    covered = np.zeros_like(zero)
    for i in range(h - size + 1):
        for j in range(w - size + 1):
            if zero[i : i + size, j : j + size].all():
                covered[i : i + size, j : j + size] = True
    return np.array_equal(covered, zero)


@pytest.mark.parametrize("block_size", [1, 3, 4])
def test_drop_block_drops_whole_blocks_at_the_target_rate(block_size):
    x = np.ones((16, 20, 20, 8), "float32")
    y = np_(drop_block_2d(x, 0.2, block_size, seed=keras.random.SeedGenerator(6)))
    zero = y == 0
    for n in range(2):
        for c in range(2):
            assert _blocks_cover_zeros(zero[n, :, :, c], block_size)
    # Expected dropped fraction ~= rate (exact only when blocks do not overlap).
    assert 0.14 < zero.mean() < 0.22
    # Rescaled by count / count_kept.
    np.testing.assert_allclose(y[~zero], zero.size / (~zero).sum(), rtol=1e-5)


def test_drop_block_channels_first_drops_blocks_in_its_spatial_axes():
    x = np.ones((8, 3, 20, 20), "float32")
    y = np_(drop_block_2d(x, 0.2, 4, seed=keras.random.SeedGenerator(9), data_format="channels_first"))
    zero = y == 0
    for n in range(2):
        for c in range(3):
            assert _blocks_cover_zeros(zero[n, c], 4)
    assert 0.14 < zero.mean() < 0.22


@pytest.mark.parametrize("block_size", [2, 3, 5, 7, 8])
def test_window_or_matches_numpy_sliding_window(block_size):
    from keras_regkit.ops.drop_block import _window_or

    mask = np.random.default_rng(block_size).random((2, 11, 9, 3)) < 0.1
    got = np_(_window_or(keras.ops.convert_to_tensor(mask), 1, block_size))
    windows = np.lib.stride_tricks.sliding_window_view(mask, block_size, axis=1)
    np.testing.assert_array_equal(got, windows.any(axis=-1))


@pytest.mark.parametrize("block_size", [0, 13])
def test_drop_block_bad_block_size(block_size):
    with pytest.raises(ValueError, match=r"block_size must be in \[1, min\(H, W\)\] = \[1, 12\], got"):
        drop_block_2d(np.ones((1, 12, 12, 1), "float32"), 0.1, block_size, seed=1)
