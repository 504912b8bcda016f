"""Image ops against NumPy reference math given the drawn parameters."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_regkit.augment import (
    Cutout,
    GaussianBlur,
    GaussianNoise,
    RandomAffine,
    RandomBrightness,
    RandomContrast,
    RandomCrop,
    RandomErasing,
    RandomFlip,
    RandomGrayscale,
    RandomHue,
    RandomResizedCrop,
    RandomSaturation,
)

KEY = tf.constant([3, 7], tf.int64)


def batch(n=16, h=12, w=10, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c)).astype(np.float32)


def run(op, x, key=KEY):
    params = op.sample(key, x.shape[0], x.shape[1], x.shape[2])
    out, _ = op.apply(tf.constant(x), None, params)
    return out.numpy(), {k: v.numpy() for k, v in params.items()}


def test_flip_equals_numpy_reverse():
    x = batch()
    out, prm = run(RandomFlip("horizontal_and_vertical", p=0.5), x)
    for i in range(len(x)):
        ref = x[i]
        if prm["horizontal"][i]:
            ref = ref[:, ::-1]
        if prm["vertical"][i]:
            ref = ref[::-1]
        np.testing.assert_array_equal(out[i], ref)
    assert 0 < prm["horizontal"].sum() < len(x)  # per-example draws


def test_crop_with_padding_equals_numpy_slice():
    x = batch(32)
    op = RandomCrop(12, 10, padding=4)
    out, prm = run(op, x)
    padded = np.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)])
    for i in range(len(x)):
        t, l = prm["top"][i], prm["left"][i]
        np.testing.assert_array_equal(out[i], padded[i, t:t + 12, l:l + 10])
    assert len(set(zip(prm["top"], prm["left"]))) > 5  # each example its own offset
    assert prm["top"].min() >= 0 and prm["top"].max() <= 8


def test_crop_p0_is_central_crop():
    x = batch()
    out, _ = run(RandomCrop(8, 6, p=0.0), x)
    np.testing.assert_array_equal(out, x[:, 2:10, 2:8])


def test_cutout_equals_numpy_box():
    x = batch(32)
    out, prm = run(Cutout(4, 6, fill_value=7.0), x)
    for i in range(len(x)):
        ref = x[i].copy()
        t, l = prm["top"][i], prm["left"][i]
        ref[max(t, 0):max(t + 4, 0), max(l, 0):max(l + 6, 0)] = 7.0
        np.testing.assert_array_equal(out[i], ref)


def test_resized_crop_matches_tf_image_resize():
    x = batch(8, 20, 24)
    op = RandomResizedCrop(9, 11, scale=(0.2, 1.0), ratio=(0.5, 2.0))
    out, prm = run(op, x)
    for i in range(len(x)):
        t, l = prm["top"][i], prm["left"][i]
        h, w = prm["box_height"][i], prm["box_width"][i]
        assert 0 <= t and t + h <= 20 and 0 <= l and l + w <= 24
        ref = tf.image.resize(x[i, t:t + h, l:l + w], (9, 11), "bilinear").numpy()
        np.testing.assert_allclose(out[i], ref, atol=1e-3)


def test_resized_crop_box_distribution():
    op = RandomResizedCrop(8, 8, scale=(0.25, 0.5), ratio=(1.0, 2.0))
    prm = op.sample(KEY, 2000, 64, 64)
    h, w = prm["box_height"].numpy(), prm["box_width"].numpy()
    area = h * w / 64**2
    assert area.min() > 0.2 and area.max() < 0.55
    ratio = w / h  # width / height, as torchvision
    assert ratio.min() > 0.85 and ratio.max() < 2.3 and np.median(ratio) > 1.1


def test_affine_identity_and_pure_translation():
    x = batch()
    ident, _ = RandomAffine().apply(tf.constant(x), None, RandomAffine().sample(KEY, 16, 12, 10))
    np.testing.assert_allclose(ident.numpy(), x, atol=1e-3)
    op = RandomAffine(fill_mode="constant", interpolation="nearest")
    prm = {"angle": tf.zeros(16), "tx": tf.fill([16], 2.0), "ty": tf.fill([16], -1.0),
           "zoom": tf.ones(16), "shear": tf.zeros(16)}
    out = op.apply(tf.constant(x), None, prm)[0].numpy()
    ref = np.zeros_like(x)
    ref[:, :-1, 2:] = x[:, 1:, :-2]  # shifted right by 2 and up by 1
    np.testing.assert_array_equal(out, ref)


def test_affine_rotation_180_and_wrap():
    x = batch(4, 9, 9)
    op = RandomAffine(interpolation="nearest")
    prm = {"angle": tf.fill([4], 180.0), "tx": tf.zeros(4), "ty": tf.zeros(4),
           "zoom": tf.ones(4), "shear": tf.zeros(4)}
    np.testing.assert_array_equal(op.apply(tf.constant(x), None, prm)[0].numpy(),
                                  x[:, ::-1, ::-1])
    op = RandomAffine(fill_mode="wrap", interpolation="nearest")
    prm.update(angle=tf.zeros(4), tx=tf.fill([4], 3.0))
    np.testing.assert_array_equal(op.apply(tf.constant(x), None, prm)[0].numpy(),
                                  np.roll(x, 3, axis=2))


def test_colour_ops_formulas():
    x = batch()
    g = x @ np.array([0.299, 0.587, 0.114], np.float32)
    out, prm = run(RandomBrightness(0.5), x)
    np.testing.assert_allclose(out, np.clip(x * prm["factor"][:, None, None, None], 0, 255),
                               rtol=1e-5)
    out, prm = run(RandomSaturation(0.5), x)
    f = prm["factor"][:, None, None, None]
    np.testing.assert_allclose(out, np.clip(g[..., None] + f * (x - g[..., None]), 0, 255),
                               rtol=1e-4, atol=1e-3)
    out, prm = run(RandomContrast(0.5), x)
    m = g.mean(axis=(1, 2))[:, None, None, None]
    f = prm["factor"][:, None, None, None]
    np.testing.assert_allclose(out, np.clip(m + f * (x - m), 0, 255), rtol=1e-4, atol=1e-3)
    out, prm = run(RandomGrayscale(p=0.5), x)
    for i in range(len(x)):
        ref = np.repeat(g[i][..., None], 3, -1) if prm["apply"][i] else x[i]
        np.testing.assert_allclose(out[i], ref, rtol=1e-5)


def test_hue_matches_tf_image_adjust_hue():
    x = batch(6)
    out, prm = run(RandomHue(0.4), x)
    for i in range(len(x)):
        ref = tf.image.adjust_hue(x[i] / 255.0, float(prm["factor"][i])).numpy() * 255.0
        np.testing.assert_allclose(out[i], np.clip(ref, 0, 255), atol=0.05)


def test_blur_and_noise():
    x = batch(4)
    op = GaussianBlur(5, sigma=1.0)
    out, _ = run(op, x)
    t = np.arange(-2, 3)
    k = np.exp(-0.5 * t**2)
    k /= k.sum()
    pad = np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    ref = sum(k[a] * k[b] * pad[:, a:a + 12, b:b + 10] for a in range(5) for b in range(5))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3)
    noisy, prm = run(GaussianNoise(stddev=5.0), np.full((4, 40, 40, 3), 128, np.float32))
    assert abs(noisy.std() - 5.0) < 0.3 and np.all(prm["stddev"] == 5.0)


def test_random_erasing_box_inside_image():
    x = batch(64, 20, 20)
    op = RandomErasing(scale=(0.1, 0.2), ratio=(0.5, 2.0), p=1.0)
    out, prm = run(op, x)
    h, w = prm["box_height"], prm["box_width"]
    assert np.all((h * w >= 0.08 * 400) & (h * w <= 0.22 * 400))
    assert np.all(prm["top"] + h <= 20) and np.all(prm["left"] + w <= 20)
    assert np.all((out == 0).all(-1).sum(axis=(1, 2)) >= h * w)


@pytest.mark.parametrize("op", [RandomFlip(p=0.0), RandomAffine(p=0.0), RandomBrightness(p=0.0),
                                RandomContrast(p=0.0), RandomSaturation(p=0.0), RandomHue(p=0.0),
                                GaussianBlur(p=0.0), GaussianNoise(p=0.0), Cutout(3, 3, p=0.0),
                                RandomErasing(p=0.0), RandomGrayscale(p=0.0)])
def test_p_zero_is_identity(op):
    x = batch()
    np.testing.assert_allclose(run(op, x)[0], x, atol=1e-3)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 5), h=st.integers(4, 20), w=st.integers(4, 20),
       pad=st.integers(0, 3), c=st.sampled_from([1, 3]))
def test_shapes_property(n, h, w, pad, c):
    x = batch(n, h, w, c)
    ch, cw = max(1, h - 2), max(1, w + pad)
    assert run(RandomCrop(ch, cw, padding=pad), x)[0].shape == (n, ch, cw, c)
    assert run(RandomResizedCrop(7, 5), x)[0].shape == (n, 7, 5, c)
    out = run(RandomAffine(30, (0.2, 0.2), 0.2, 10, fill_mode="reflect"), x)[0]
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255 + 1e-3


def test_randaugment_rounds_follow_the_choices():
    from keras_regkit.augment import RandAugment

    x = batch(64, 12, 12)
    op = RandAugment(num_ops=1, magnitude=10.0)
    out, prm = run(op, x)
    choice = prm["op0"]
    assert len(np.unique(choice)) >= 8  # one choice per example
    ident = choice == 0
    np.testing.assert_allclose(out[ident], x[ident], atol=1e-3)
    sol = choice == 8  # solarize at m = 10 inverts every pixel >= 0
    np.testing.assert_allclose(out[sol], 255.0 - x[sol], atol=1e-3)
    post = choice == 9  # 8 - 4 = 4 bits: multiples of 16
    np.testing.assert_allclose(out[post], np.floor(x[post] / 16) * 16, atol=1e-3)
    bright = choice == 5
    f = 1 + 0.9 * prm["sign0"][bright][:, None, None, None]
    np.testing.assert_allclose(out[bright], np.clip(x[bright] * f, 0, 255), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match=r"RandAugment: magnitude must be in \[0, 10\]"):
        RandAugment(magnitude=11)
