"""The crop + resize + flip kernels against NumPy reference math, and the two kernels against each
other."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_regkit.augment import kernels as K


# ------------------------------------------------------------------------------------ references
def ref_positions(size: int, out: int) -> np.ndarray:
    """Bilinear source positions inside a box, in float64: the formula as documented."""
    pos = (np.arange(out) + 0.5) * size / out - 0.5
    return np.clip(pos, 0, size - 1)


def ref_nearest_index(size: int, out: int) -> np.ndarray:
    """``min(floor((i + 0.5) * size / out), size - 1)`` with exact rational arithmetic."""
    from fractions import Fraction

    return np.array([min(int((Fraction(2 * i + 1, 2) * size / out).__floor__()), size - 1)
                     for i in range(out)])


def ref_crop(img, t, l, h, w, oh, ow, fh, fv, method):
    """One example of ``resized_crops`` in NumPy (float64 for bilinear)."""
    box = img[t:t + h, l:l + w].astype(np.float64)
    if method == "nearest":
        out = img[t:t + h, l:l + w][ref_nearest_index(h, oh)][:, ref_nearest_index(w, ow)]
    else:
        ys, xs = ref_positions(h, oh), ref_positions(w, ow)
        y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
        y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        top_ = box[y0][:, x0] * (1 - fx) + box[y0][:, x1] * fx
        bottom = box[y1][:, x0] * (1 - fx) + box[y1][:, x1] * fx
        out = top_ * (1 - fy) + bottom * fy
    if fh:
        out = out[:, ::-1]
    if fv:
        out = out[::-1]
    return out


def random_case(seed, batch=4, max_size=40, max_out=48, channels=3, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, max_size + 1, 2)
    x = rng.integers(0, 256, (batch, h, w, channels)).astype(dtype)
    if dtype == np.float32:
        x += rng.random(x.shape, np.float32)
    bh = rng.integers(1, h + 1, batch)
    bw = rng.integers(1, w + 1, batch)
    top = rng.integers(0, h - bh + 1)
    left = rng.integers(0, w - bw + 1)
    oh, ow = (int(v) for v in rng.integers(1, max_out + 1, 2))
    fh, fv = rng.random(batch) < 0.5, rng.random(batch) < 0.5
    return x, top.astype(np.int32), left.astype(np.int32), bh.astype(np.int32), \
        bw.astype(np.int32), oh, ow, fh, fv


def reference(case, method):
    x, top, left, bh, bw, oh, ow, fh, fv = case
    return np.stack([ref_crop(x[i], top[i], left[i], bh[i], bw[i], oh, ow, fh[i], fv[i], method)
                     for i in range(len(x))])


def run(case, method="bilinear", kernel="tensorflow"):
    return K.resized_crops(*case, method=method, kernel=kernel).numpy()


# ---------------------------------------------------------------------------- tensorflow kernel
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), channels=st.sampled_from([1, 3]),
       dtype=st.sampled_from([np.uint8, np.float32]))
def test_tensorflow_bilinear_matches_reference(seed, channels, dtype):
    case = random_case(seed, channels=channels, dtype=dtype)
    out = run(case)
    assert out.dtype == np.float32 and out.shape == (4, case[5], case[6], channels)
    np.testing.assert_allclose(out, reference(case, "bilinear"), atol=1e-3, rtol=0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), channels=st.sampled_from([1, 3]),
       dtype=st.sampled_from([np.uint8, np.float32]))
def test_tensorflow_nearest_matches_reference_exactly(seed, channels, dtype):
    case = random_case(seed, channels=channels, dtype=dtype)
    out = run(case, "nearest")
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, reference(case, "nearest"))


def test_imagenet_sizes_match_reference():
    """256x256 sources to 224x224: positions up to 255, the float32 worst case of this suite."""
    rng = np.random.default_rng(0)
    case = (rng.integers(0, 256, (3, 256, 256, 3), dtype=np.uint8),
            np.array([0, 10, 3], np.int32), np.array([0, 40, 6], np.int32),
            np.array([256, 200, 31], np.int32), np.array([256, 180, 250], np.int32), 224, 224,
            np.array([False, True, True]), np.array([True, False, True]))
    np.testing.assert_allclose(run(case), reference(case, "bilinear"), atol=1e-3, rtol=0)


def test_bilinear_equals_tf_image_resize_of_the_crop():
    x = np.random.default_rng(1).integers(0, 256, (1, 30, 41, 3)).astype(np.float32)
    for (t, l, h, w), (oh, ow) in [((2, 3, 20, 33), (9, 14)), ((0, 0, 30, 41), (57, 80)),
                                   ((5, 1, 7, 40), (7, 13))]:
        ours = K.resized_crops(x, [t], [l], [h], [w], oh, ow).numpy()
        theirs = tf.image.resize(x[:, t:t + h, l:l + w], (oh, ow), "bilinear",
                                 antialias=False).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_nearest_taps_are_exact_where_float_math_is_not():
    # floor((59 + 0.5) * 960 / 224) = floor(255.0) = 255; float32 math gives 254.
    assert K.nearest_taps(tf.constant([960]), 224).numpy()[0, 59] == 255
    for size in (1, 2, 3, 10, 62, 168, 832, 960, 4097):
        for out in (1, 7, 100, 160, 224, 299):
            expected = ref_nearest_index(size, out)
            np.testing.assert_array_equal(K.nearest_taps(tf.constant([size]), out).numpy()[0],
                                          expected)
            np.testing.assert_array_equal(K.nearest_taps_np(size, out), expected)


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_tensorflow_kernel_compiles_with_xla(method):
    case = random_case(11, batch=6, channels=3)
    x, top, left, bh, bw, oh, ow, fh, fv = case
    fn = tf.function(lambda *a: K.resized_crops(*a[:5], oh, ow, *a[5:], method=method),
                     jit_compile=True)
    out = fn(x, top, left, bh, bw, fh, fv).numpy()
    if method == "nearest":
        np.testing.assert_array_equal(out, reference(case, method))
    else:
        np.testing.assert_allclose(out, reference(case, method), atol=1e-3, rtol=0)


def test_flips_optional_and_dynamic_batch():
    case = random_case(3, batch=5)
    x, top, left, bh, bw, oh, ow, _, _ = case
    no_flip = (x, top, left, bh, bw, oh, ow, np.zeros(5, bool), np.zeros(5, bool))
    fn = tf.function(lambda a, b, c, d, e: K.resized_crops(a, b, c, d, e, oh, ow),
                     input_signature=[tf.TensorSpec([None, *x.shape[1:]], tf.uint8)]
                     + [tf.TensorSpec([None], tf.int32)] * 4)
    np.testing.assert_allclose(fn(x, top, left, bh, bw).numpy(), reference(no_flip, "bilinear"),
                               atol=1e-3)


# -------------------------------------------------------------------------------- opencv kernel
def _cv2():
    return pytest.importorskip("cv2")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), channels=st.sampled_from([1, 3, 4]))
def test_opencv_bilinear_uint8_close_to_tensorflow(seed, channels):
    _cv2()
    case = random_case(seed, batch=4, max_size=80, max_out=90, channels=channels)
    cv, tf_ = run(case, kernel="opencv"), run(case)
    assert cv.dtype == np.float32 and cv.shape == tf_.shape
    # OpenCV blends uint8 with 11-bit fixed-point weights and rounds to uint8: on uniform noise
    # (the worst case) the largest difference seen over 7,000 random shapes was 0.85.
    assert np.abs(cv - tf_).max() <= 1.0


def test_opencv_bilinear_uint8_mean_difference_is_rounding():
    _cv2()
    rng = np.random.default_rng(7)
    case = (rng.integers(0, 256, (8, 256, 256, 3), dtype=np.uint8),
            *(np.array(v, np.int32) for v in ([0, 10, 3, 50, 0, 7, 100, 30],
                                              [0, 40, 6, 20, 100, 9, 0, 60],
                                              [256, 200, 31, 120, 90, 249, 156, 226],
                                              [256, 180, 250, 236, 156, 200, 255, 196])),
            224, 224, rng.random(8) < 0.5, rng.random(8) < 0.5)
    diff = np.abs(run(case, kernel="opencv") - run(case))
    assert diff.max() <= 1.0
    assert 0.2 <= diff.mean() <= 0.3  # rounding to integers alone averages 0.25


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), channels=st.sampled_from([1, 3]))
def test_opencv_bilinear_float32_close_to_tensorflow(seed, channels):
    _cv2()
    case = random_case(seed, channels=channels, dtype=np.float32)
    np.testing.assert_allclose(run(case, kernel="opencv"), run(case), atol=1e-3, rtol=0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), channels=st.sampled_from([1, 3, 4]),
       dtype=st.sampled_from([np.uint8, np.float32]))
def test_opencv_nearest_equals_tensorflow_exactly(seed, channels, dtype):
    _cv2()
    case = random_case(seed, max_size=70, max_out=90, channels=channels, dtype=dtype)
    cv = run(case, "nearest", "opencv")
    assert cv.dtype == dtype
    np.testing.assert_array_equal(cv, run(case, "nearest"))


def test_opencv_kernel_in_tf_data_has_static_shape():
    _cv2()
    x, top, left, bh, bw, oh, ow, fh, fv = random_case(4, batch=8, channels=3)
    ds = tf.data.Dataset.from_tensor_slices((x, top, left, bh, bw, fh)).batch(4)
    ds = ds.map(lambda *a: K.resized_crops(*a[:5], 17, 23, a[5], kernel="opencv"),
                num_parallel_calls=2)
    assert ds.element_spec.shape.as_list() == [None, 17, 23, 3]
    got = np.concatenate(list(ds.as_numpy_iterator()))
    expected = K.resized_crops(x, top, left, bh, bw, 17, 23, fh).numpy()
    assert np.abs(got - expected).max() <= 1.0


def test_opencv_rejects_a_box_outside_the_image():
    _cv2()
    x = np.zeros((2, 10, 10, 3), np.uint8)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="box 1 must lie inside"):
        K.resized_crops(x, [0, 5], [0, 0], [10, 6], [10, 10], 4, 4, kernel="opencv")


def test_opencv_available_is_cached_bool():
    assert K.opencv_available() is K.opencv_available()
    assert isinstance(K.opencv_available(), bool)


# ------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize("kwargs, error, match", [
    ({"method": "bicubic"}, ValueError, "resized_crops: method must be one of"),
    ({"kernel": "pil"}, ValueError, "resized_crops: kernel must be one of"),
    ({"out_height": 0}, ValueError, "out_height must be an integer >= 1"),
    ({"out_width": 2.5}, TypeError, "out_width must be an integer"),
    ({"images": np.zeros((2, 5, 5, 3), np.int32)}, TypeError, "images must be uint8 or float32"),
    ({"images": np.zeros((5, 5, 3), np.uint8)}, ValueError, "images must be a batch"),
])
def test_argument_errors(kwargs, error, match):
    args = {"images": np.zeros((2, 5, 5, 3), np.uint8), "top": [0, 0], "left": [0, 0],
            "box_height": [5, 5], "box_width": [5, 5], "out_height": 3, "out_width": 3}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        K.resized_crops(**args)


def test_unknown_spatial_size_rejected():
    fn = tf.function(lambda x: K.resized_crops(x, [0], [0], [2], [2], 3, 3),
                     input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    with pytest.raises(ValueError, match="static height, width and channels"):
        fn.get_concrete_function()


def test_opencv_kernel_without_opencv(monkeypatch):
    monkeypatch.setattr(K, "opencv_available", lambda: False)
    with pytest.raises(ImportError, match='resized_crops: kernel="opencv" needs OpenCV'):
        K.resized_crops(np.zeros((1, 4, 4, 1), np.uint8), [0], [0], [4], [4], 2, 2,
                        kernel="opencv")
