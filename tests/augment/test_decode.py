"""Decode ops in a Pipeline, and the choice of pixel kernel for resized crops."""

import numpy as np
import pytest
import tensorflow as tf

from keras_regkit import augment as A
from keras_regkit.augment import decode as D
from keras_regkit.augment import kernels as K
from keras_regkit.augment import targets as T
from keras_regkit.augment.base import fold

KERNELS = ["tensorflow"] + (["opencv"] if K.opencv_available() else [])


@pytest.fixture(scope="module")
def photos():
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    # Different sizes per example: the ops must use each file's own header.
    return [china[:300, :400], flower[50:425, :500], china[100:, 140:], flower[:200, :260]]


def encode(images, fmt="png"):
    enc = tf.io.encode_png if fmt == "png" else (lambda im: tf.io.encode_jpeg(im, quality=95))
    return tf.constant([enc(im).numpy() for im in images])


def test_sampled_boxes_fit_each_image_and_follow_scale_and_ratio():
    sizes = tf.constant([[300, 400], [375, 500], [40, 1000], [1000, 40]] * 64, tf.int32)
    top, left, h, w, found = (v.numpy() for v in D.sample_sized_boxes(
        tf.constant([1, 2], tf.int64), sizes, (0.08, 1.0), (3 / 4, 4 / 3)))
    s = sizes.numpy()
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= s[:, 0]).all() and (left + w <= s[:, 1]).all()
    area = h * w / (s[:, 0] * s[:, 1])
    aspect = w / h
    ok = found & (np.minimum(h, w) > 20)  # rounding moves small boxes a little
    assert (area[ok] > 0.07).all() and (area[ok] < 1.01).all()
    assert (aspect[ok] > 0.74).all() and (aspect[ok] < 1.36).all()
    assert found[s[:, 0] == 300].all() and not found[s[:, 0] == 40].all()
    # Fallback (extreme aspect): the central box with the ratio clamped into (3/4, 4/3).
    fb = ~found
    np.testing.assert_allclose(w[fb] / h[fb], np.where(s[fb, 1] > s[fb, 0], 4 / 3, 3 / 4),
                               rtol=0.05)


@pytest.mark.parametrize("kernel", KERNELS)
def test_decode_random_resized_crop_equals_crops_of_the_decoded_images(photos, kernel):
    """PNG (lossless): the decode op's pixels equal ``resized_crops`` of the decoded image with
    the drawn boxes, and the fused flip mirrors them."""
    encoded = encode(photos)
    op = A.DecodeRandomResizedCrop(96, 128, scale=(0.2, 1.0))
    pipe = A.Pipeline([op, A.RandomFlip()], seed=4, kernel=kernel)
    out = pipe.augment(encoded).numpy()
    key = pipe.batch_key(0, 0)
    params = op.sample_encoded(fold(key, 0), encoded)
    flips = A.RandomFlip().sample(fold(key, 1), 4, 96, 128)["horizontal"].numpy()
    assert flips.any() and not flips.all()
    for i, im in enumerate(photos):
        p = {k: v[i:i + 1] for k, v in params.items()}
        ref = K.resized_crops(im[None], p["top"], p["left"], p["box_height"], p["box_width"],
                              96, 128, tf.constant([flips[i]])).numpy()[0]
        assert np.abs(out[i] - ref).max() <= 1.0 + 1e-3  # OpenCV rounds to uint8


def test_decode_center_crop_geometry(photos):
    encoded = encode(photos, "jpeg")
    op = A.DecodeCenterCrop(64, 96, crop_fraction=0.875)
    sizes = np.array([im.shape[:2] for im in photos])
    top, left, h, w = (v.numpy() for v in op.box(None, tf.constant(sizes)))
    fit = np.minimum(sizes[:, 0], sizes[:, 1] * 64 / 96)
    np.testing.assert_allclose(h, np.round(fit * 0.875), atol=0.5)
    np.testing.assert_allclose(w, np.round(fit * 1.5 * 0.875), atol=0.5)
    np.testing.assert_array_equal(top, (sizes[:, 0] - h) // 2)
    np.testing.assert_array_equal(left, (sizes[:, 1] - w) // 2)
    out = A.Pipeline([op], seed=0).augment(encoded)
    assert out.shape == (4, 64, 96, 3) and out.dtype == tf.float32


def test_encoded_masks_and_boxes_follow_the_decoded_crops(photos):
    """Masks (single-channel PNG) are decoded through each image's box by nearest neighbour;
    boxes given in full-image coordinates (relative here) land on the same pixels."""
    images, masks, boxes = [], [], []
    for k, im in enumerate(photos):
        h, w = im.shape[:2]
        m = np.zeros((h, w, 1), np.uint8)
        y0, x0, y1, x1 = h // 4, w // 3, h // 4 + h // 3, w // 3 + w // 4
        m[y0:y1, x0:x1] = k + 1
        images.append(np.where(m > 0, 255, 0).astype(np.uint8).repeat(3, -1))
        masks.append(m)
        boxes.append([[x0 / w, y0 / h, x1 / w, y1 / h]])
    data = {"images": encode(images), "segmentation_masks": encode(masks),
            "bounding_boxes": {"boxes": np.array(boxes, np.float32),
                               "labels": np.arange(1, 5, dtype=np.int32)[:, None]}}
    pipe = A.Pipeline([A.DecodeRandomResizedCrop(80, 80, scale=(0.3, 1.0)), A.RandomFlip()],
                      seed=1, bounding_box_format="rel_xyxy")
    spec = pipe.element_spec(tf.nest.map_structure(tf.TensorSpec.from_tensor,
                                                   tf.nest.map_structure(tf.constant, data)))
    assert spec["segmentation_masks"].shape.as_list() == [4, 80, 80]
    for epoch in range(6):
        out = pipe.augment(data, epoch=epoch)
        got = out["segmentation_masks"].numpy()
        assert got.shape == (4, 80, 80) and got.dtype == np.uint8
        pixels = out["images"].numpy()[..., 0] > 127.5
        rel = out["bounding_boxes"]["boxes"].numpy()
        for i in range(4):
            assert set(np.unique(got[i])) <= {0, i + 1}
            m = got[i] > 0
            if m.sum() >= 100:
                assert (m & pixels[i]).sum() / (m | pixels[i]).sum() >= 0.9
            if out["bounding_boxes"]["labels"].numpy()[i, 0] == i + 1:
                ys, xs = np.nonzero(m)
                x1, y1, x2, y2 = rel[i, 0] * 80
                assert x1 <= xs.min() + 1 and xs.max() <= x2 and y1 <= ys.min() + 1
                assert ys.max() <= y2


@pytest.mark.skipif(not K.opencv_available(), reason="needs OpenCV")
def test_opencv_and_tensorflow_kernels_draw_the_same_and_agree_on_pixels():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 64, 80, 3), dtype=np.uint8)
    masks = rng.integers(0, 5, (16, 64, 80), dtype=np.uint8)
    ops = [A.RandomResizedCrop(48, 40), A.RandomFlip("horizontal_and_vertical"),
           A.RandomBrightness(0.2)]
    data = {"images": x, "segmentation_masks": masks}
    cv = A.Pipeline(ops, seed=3, kernel="opencv").augment(data)
    ref = A.Pipeline(ops, seed=3, kernel="tensorflow").augment(data)
    assert A.Pipeline(ops, seed=3)._host_ops("opencv") == 2  # crop and flip fused on the host
    np.testing.assert_array_equal(cv["segmentation_masks"], ref["segmentation_masks"])
    diff = np.abs(cv["images"].numpy() - ref["images"].numpy())
    assert diff.max() <= 1.5  # one uint8 level, scaled by the brightness factor (<= 1.2)


@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_crop_and_flip_equal_the_ops_applied_one_by_one(kernel):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (8, 40, 50, 3), dtype=np.uint8)
    crop, flip = A.RandomResizedCrop(30, 20), A.RandomFlip("horizontal_and_vertical")
    pipe = A.Pipeline([crop, flip], seed=2, jit_compile=False, kernel=kernel)
    out = pipe.augment(x).numpy()
    key = pipe.batch_key(0, 0)
    p0 = crop.sample(fold(key, 0), 8, 40, 50)
    p1 = flip.sample(fold(key, 1), 8, 30, 20)
    ref, _ = flip.apply(crop.apply(tf.constant(x), None, p0)[0], None, p1)
    np.testing.assert_allclose(out, ref.numpy(), atol=1.0 if kernel == "opencv" else 1e-3)


def test_kernel_and_decode_op_errors():
    with pytest.raises(ValueError, match="Pipeline: kernel must be one of .*got 'cuda'"):
        A.Pipeline([A.RandomFlip()], kernel="cuda")
    with pytest.raises(ValueError, match=r"Pipeline: ops\[1\] must be not a decode op"):
        A.Pipeline([A.RandomFlip(), A.DecodeCenterCrop(8, 8)])
    with pytest.raises(ValueError, match="AugmentationLayer: pipeline must be image ops"):
        A.AugmentationLayer(A.Pipeline([A.DecodeRandomResizedCrop(8, 8)]))
    with pytest.raises(ValueError, match="DecodeRandomResizedCrop: images must be a "):
        A.Pipeline([A.DecodeRandomResizedCrop(8, 8)]).augment(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="segmentation_masks must be a \\(batch,\\) tf.string"):
        A.Pipeline([A.DecodeRandomResizedCrop(8, 8)]).augment(
            {"images": tf.constant([b"x", b"y"]),
             "segmentation_masks": np.zeros((2, 8, 8), np.uint8)})
    with pytest.raises(ValueError, match=r"crop_fraction must be in \(0, 1\], got 0"):
        A.DecodeCenterCrop(8, 8, crop_fraction=0)
    with pytest.raises(ValueError, match="channels must be one of"):
        A.DecodeRandomResizedCrop(8, 8, channels=4)


def test_decode_ops_serialize():
    for op in (A.DecodeRandomResizedCrop(32, 24, scale=(0.3, 0.9), channels=1, p=0.5),
               A.DecodeCenterCrop(16, 16, crop_fraction=0.9)):
        pipe = A.Pipeline([op], seed=1, kernel="tensorflow")
        back = A.Pipeline.from_config(pipe.get_config())
        assert back.ops == [op] and back.kernel == "tensorflow"
    assert T.BOX_FORMATS  # the module the pipeline converts boxes with


def test_auto_kernel_falls_back_to_tensorflow_without_opencv(monkeypatch):
    """The default install (no OpenCV) works: "auto" resolves to the TensorFlow kernel, and the
    result equals an explicit kernel="tensorflow" pipeline."""
    monkeypatch.setattr(K, "opencv_available", lambda: False)
    x = np.random.default_rng(0).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    ops = [A.RandomResizedCrop(24, 24), A.RandomFlip()]
    auto = A.Pipeline(ops, seed=1)
    assert auto.pixel_kernel == "tensorflow" and auto._host_ops(auto.pixel_kernel) == 0
    np.testing.assert_array_equal(auto.augment(x),
                                  A.Pipeline(ops, seed=1, kernel="tensorflow").augment(x))
    with pytest.raises(ImportError, match='Pipeline: kernel="opencv" needs OpenCV'):
        A.Pipeline(ops, kernel="opencv")
