"""Segmentation masks and bounding boxes move with the pixels through every geometric op."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_regkit import augment as A
from keras_regkit.augment import targets as T

SIZE = 64


def boxes_of(masks):
    """Tight xyxy boxes (pixel edges) of each channel of (batch, h, w, k) binary masks."""
    b, _, _, k = masks.shape
    out = np.zeros((b, k, 4), np.float32)
    for i in range(b):
        for j in range(k):
            ys, xs = np.nonzero(masks[i, :, :, j])
            out[i, j] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return out


def objects(batch, seed):
    """Images whose channel k holds one bright ellipse or rectangle (object k), its masks, boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    masks = np.zeros((batch, SIZE, SIZE, 3), np.uint8)
    for i in range(batch):
        for k in range(3):
            cy, cx = rng.uniform(12, SIZE - 12, 2)
            ry, rx = rng.uniform(6, 14, 2)
            if k == 0:
                inside = (abs(yy + 0.5 - cy) < ry) & (abs(xx + 0.5 - cx) < rx)
            else:
                inside = ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 < 1
            masks[i, :, :, k] = inside
    images = (masks * 255).astype(np.uint8)
    return images, masks, boxes_of(masks)


def geometric_pipeline(seed, **kwargs):
    return A.Pipeline([A.RandomResizedCrop(48, 56, scale=(0.25, 1.0)),
                       A.RandomFlip("horizontal_and_vertical"),
                       A.RandomAffine(degrees=30, translate=(0.1, 0.1), zoom=(0.8, 1.2), shear=10)],
                      seed=seed, bounding_box_format="xyxy", **kwargs)


@pytest.mark.parametrize("seed", range(4))
def test_masks_cover_the_warped_objects_and_boxes_enclose_them(seed):
    """256 draws (4 seeds x 64 examples): after crop, flips and affine, each object's mask has
    IoU >= 0.9 with its thresholded pixels (objects of 100 px or more), and every kept box
    encloses its object's mask (to the pixel the nearest-neighbour resampling may add)."""
    images, masks, boxes = objects(64, seed)
    labels = np.tile(np.arange(3, dtype=np.int32), (64, 1))
    out = geometric_pipeline(seed).augment(
        {"images": images, "segmentation_masks": masks,
         "bounding_boxes": {"boxes": boxes, "labels": labels}})
    pixels = out["images"].numpy() > 127.5
    moved = out["segmentation_masks"].numpy().astype(bool)
    kept_boxes = out["bounding_boxes"]["boxes"].numpy()
    kept = out["bounding_boxes"]["labels"].numpy()
    assert set(np.unique(moved)) <= {False, True}
    checked = 0
    for i in range(64):
        for k in range(3):
            m, p = moved[i, :, :, k], pixels[i, :, :, k]
            if m.sum() >= 100:
                iou = (m & p).sum() / (m | p).sum()
                assert iou >= 0.9, (i, k, iou)
                checked += 1
            if m.any():
                assert kept[i, k] == k, (i, k)  # an object still in view keeps its box
            if kept[i, k] == k:
                ys, xs = np.nonzero(m)
                x1, y1, x2, y2 = kept_boxes[i, k]
                if len(xs):
                    assert x1 <= xs.min() + 1 and xs.max() <= x2 and y1 <= ys.min() + 1
                    assert ys.max() <= y2, (i, k)
    assert checked > 64


@pytest.mark.parametrize("box_format", T.BOX_FORMATS)
def test_box_formats_match_keras(box_format):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 40, (5, 7, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 20, (5, 7, 2))], -1).astype(np.float32)
    theirs = keras.utils.bounding_boxes.convert_format(boxes, "xyxy", box_format, height=60,
                                                       width=80)
    ours = T.boxes_from_xyxy(tf.constant(boxes), box_format, 60, 80)
    np.testing.assert_allclose(ours.numpy(), keras.ops.convert_to_numpy(theirs), rtol=1e-5,
                               atol=1e-5)
    back = T.boxes_to_xyxy(ours, box_format, 60, 80)
    np.testing.assert_allclose(back.numpy(), boxes, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("box_format", T.BOX_FORMATS)
def test_the_format_does_not_change_the_result(box_format):
    images, masks, boxes = objects(32, 5)
    labels = np.tile(np.arange(3, dtype=np.int32), (32, 1))
    ref = geometric_pipeline(1).augment(
        {"images": images, "bounding_boxes": {"boxes": boxes, "labels": labels}})
    theirs = T.boxes_from_xyxy(tf.constant(boxes), box_format, SIZE, SIZE)
    out = A.Pipeline(geometric_pipeline(1).ops, seed=1, bounding_box_format=box_format).augment(
        {"images": images, "bounding_boxes": {"boxes": theirs, "labels": labels}})
    np.testing.assert_array_equal(out["bounding_boxes"]["labels"], ref["bounding_boxes"]["labels"])
    back = T.boxes_to_xyxy(out["bounding_boxes"]["boxes"], box_format, 48, 56)
    np.testing.assert_allclose(back.numpy(), ref["bounding_boxes"]["boxes"].numpy(), atol=1e-3)


def test_crop_boxes_and_visibility_against_numpy():
    """RandomCrop: boxes shift by the offset, are clipped, and lose their label below
    ``min_visibility`` of their area (the NumPy reference recomputes all three)."""
    rng = np.random.default_rng(3)
    xy = rng.uniform(-5, 30, (32, 6, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 12, (32, 6, 2))], -1).astype(np.float32)
    labels = rng.integers(0, 5, (32, 6)).astype(np.int32)
    labels[:, -1] = -1  # padding stays padding
    images = np.zeros((32, 32, 32, 1), np.uint8)
    op = A.RandomCrop(20, 24, padding=2)
    pipe = A.Pipeline([op], seed=5, bounding_box_format="xyxy", min_visibility=0.4,
                      jit_compile=False)  # eager draws below equal the graph's
    out = pipe.augment({"images": images, "bounding_boxes": {"boxes": boxes, "labels": labels}})
    params = op.sample(tf.random.experimental.stateless_fold_in(pipe.batch_key(0, 0), 0), 32, 32,
                       32)
    dy = params["top"].numpy()[:, None] - 2
    dx = params["left"].numpy()[:, None] - 2
    moved = boxes - np.stack([dx, dy, dx, dy], -1)
    clipped = np.stack([np.clip(moved[..., 0], 0, 24), np.clip(moved[..., 1], 0, 20),
                        np.clip(moved[..., 2], 0, 24), np.clip(moved[..., 3], 0, 20)], -1)

    def area(b):
        return np.maximum(b[..., 2] - b[..., 0], 0) * np.maximum(b[..., 3] - b[..., 1], 0)

    visible = area(clipped) / area(moved)
    expected = np.where((visible >= 0.4) & (area(clipped) > 0), labels, -1)
    np.testing.assert_allclose(out["bounding_boxes"]["boxes"].numpy(), clipped, atol=1e-4)
    np.testing.assert_array_equal(out["bounding_boxes"]["labels"].numpy(), expected)
    assert (expected == -1).any() and (expected >= 0).any()


def test_cutmix_pastes_the_partners_mask_and_boxes():
    images, masks, boxes = objects(16, 7)
    labels = np.tile(np.arange(3, dtype=np.int32), (16, 1))
    onehot = np.eye(4, dtype=np.float32)[np.arange(16) % 4]
    op = A.CutMix(alpha=1.0)
    pipe = A.Pipeline([op], seed=2, bounding_box_format="xyxy")
    out = pipe.augment({"images": images, "labels": onehot, "segmentation_masks": masks,
                        "bounding_boxes": {"boxes": boxes, "labels": labels}})
    params = op.sample(tf.random.experimental.stateless_fold_in(pipe.batch_key(0, 0), 0), 16,
                       SIZE, SIZE)
    top, left = params["top"].numpy(), params["left"].numpy()
    bh, bw, perm = params["box_height"].numpy(), params["box_width"].numpy(), params["perm"].numpy()
    expected = masks.copy()
    for i in range(16):
        expected[i, top[i]:top[i] + bh[i], left[i]:left[i] + bw[i]] = \
            masks[perm[i], top[i]:top[i] + bh[i], left[i]:left[i] + bw[i]]
    np.testing.assert_array_equal(out["segmentation_masks"].numpy(), expected)
    np.testing.assert_array_equal(out["images"].numpy(), expected * 255.0)
    got = out["bounding_boxes"]["boxes"].numpy()
    assert got.shape == (16, 6, 4)
    np.testing.assert_allclose(got[:, :3], boxes)  # own boxes keep their corners
    for i in range(16):
        paste = np.array([left[i], top[i], left[i] + bw[i], top[i] + bh[i]], np.float32)
        partner = boxes[perm[i]]
        inside = np.concatenate([np.clip(partner[:, :2], paste[:2], paste[2:]),
                                 np.clip(partner[:, 2:], paste[:2], paste[2:])], -1)
        np.testing.assert_allclose(got[i, 3:], inside, atol=1e-5)
        for k in range(3):  # a partner box keeps its label exactly when part of it was pasted
            area = np.prod(np.maximum(inside[k, 2:] - inside[k, :2], 0))
            assert (out["bounding_boxes"]["labels"].numpy()[i, 3 + k] == k) == (area > 0)


def test_colour_ops_leave_masks_and_boxes_alone():
    images, masks, boxes = objects(8, 1)
    labels = np.zeros((8, 3), np.int32)
    pipe = A.Pipeline([A.RandomBrightness(0.5), A.RandomContrast(0.5), A.GaussianBlur(),
                       A.GaussianNoise(), A.Cutout(8, 8)], seed=0, bounding_box_format="xyxy")
    out = pipe.augment({"images": images, "segmentation_masks": masks,
                        "bounding_boxes": {"boxes": boxes, "labels": labels}})
    np.testing.assert_array_equal(out["segmentation_masks"].numpy(), masks)
    np.testing.assert_allclose(out["bounding_boxes"]["boxes"].numpy(), boxes, atol=1e-5)
    np.testing.assert_array_equal(out["bounding_boxes"]["labels"].numpy(), labels)


def test_dataset_of_dicts_is_reproducible_and_keeps_structure():
    images, masks, boxes = objects(16, 2)
    labels = np.tile(np.arange(3, dtype=np.int32), (16, 1))
    data = {"images": images, "segmentation_masks": masks[..., 0],
            "bounding_boxes": {"boxes": boxes, "labels": labels}}
    ds = tf.data.Dataset.from_tensor_slices(data).batch(8)
    runs = [[tf.nest.map_structure(lambda t: t.numpy(), e) for e in geometric_pipeline(9)(ds)]
            for _ in range(2)]
    assert runs[0][0]["segmentation_masks"].shape == (8, 48, 56)
    assert runs[0][0]["segmentation_masks"].dtype == np.uint8
    tf.nest.map_structure(np.testing.assert_array_equal, runs[0], runs[1])
    eager = geometric_pipeline(9).augment(
        tf.nest.map_structure(lambda a: a[8:], data), batch_index=1)
    np.testing.assert_array_equal(eager["segmentation_masks"].numpy(),
                                  runs[0][1]["segmentation_masks"])


def test_bad_masks_and_boxes_raise():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    boxes = {"boxes": np.zeros((2, 1, 4), np.float32), "labels": np.zeros((2, 1), np.int32)}
    pipe = A.Pipeline([A.RandomFlip()], seed=0, bounding_box_format="xyxy")
    with pytest.raises(ValueError, match=r"segmentation_masks must be of the images' height and "
                                         r"width \(8, 8\), got shape \(2, 8, 7\)"):
        pipe.augment({"images": images, "segmentation_masks": np.zeros((2, 8, 7), np.uint8)})
    with pytest.raises(ValueError, match=r"boxes\"\] must be of shape \(batch, num_boxes, 4\)"):
        pipe.augment({"images": images, "bounding_boxes": {"boxes": np.zeros((2, 1, 5)),
                                                           "labels": np.zeros((2, 1))}})
    with pytest.raises(ValueError, match=r"boxes\"\] must be of shape"):
        pipe.augment({"images": images, "bounding_boxes": {"boxes": np.zeros((2, 4)),
                                                           "labels": np.zeros((2,))}})
    with pytest.raises(ValueError, match="bounding_box_format must be one of"):
        A.Pipeline([A.RandomFlip()]).augment({"images": images, "bounding_boxes": boxes})
    with pytest.raises(ValueError, match="Pipeline: bounding_box_format must be one of .*got "
                                         "'xyxz'"):
        A.Pipeline([A.RandomFlip()], bounding_box_format="xyxz")
    with pytest.raises(ValueError, match=r"min_visibility must be in \[0, 1\], got 1.5"):
        A.Pipeline([A.RandomFlip()], min_visibility=1.5)
    with pytest.raises(ValueError, match="MixUp: inputs must be images without segmentation"):
        A.Pipeline([A.MixUp()], seed=0).augment(
            {"images": images, "labels": np.eye(2, dtype=np.float32),
             "segmentation_masks": np.zeros((2, 8, 8), np.uint8)})
    with pytest.raises(ValueError, match="dict batches must be keyed by"):
        pipe.augment({"images": images, "masks": images})


@pytest.mark.parametrize("op", [A.RandomFlip("horizontal_and_vertical"),
                                A.RandomCrop(40, 44, padding=6),
                                A.RandomResizedCrop(48, 56, scale=(0.1, 1.0)),
                                A.RandomAffine(degrees=40, translate=(0.2, 0.1), zoom=0.3, shear=15),
                                A.RandomAffine(degrees=40, fill_mode="reflect")])
def test_masks_resampled_once_equal_the_ops_own_mask_transform(op):
    """A single op: the pipeline's composed-map resampling equals the op's ``apply_targets``."""
    _, masks, _ = objects(32, 4)
    masks = masks * np.arange(1, 4, dtype=np.uint8)  # distinct values per channel
    pipe = A.Pipeline([op], seed=11, jit_compile=False)
    out = pipe.augment({"images": masks, "segmentation_masks": masks})["segmentation_masks"]
    params = op.sample(tf.random.experimental.stateless_fold_in(pipe.batch_key(0, 0), 0), 32,
                       SIZE, SIZE)
    direct = op.apply_targets({"masks": tf.constant(masks)}, params, SIZE, SIZE)["masks"]
    mismatch = np.mean(out.numpy() != direct.numpy())
    assert mismatch <= (1e-3 if isinstance(op, A.RandomAffine) else 0.0), mismatch


def test_randaugment_moves_masks_and_boxes_with_its_geometric_rounds():
    images, masks, boxes = objects(64, 6)
    labels = np.tile(np.arange(3, dtype=np.int32), (64, 1))
    out = A.Pipeline([A.RandAugment(num_ops=2, magnitude=9, fill_value=0)], seed=3,
                     bounding_box_format="xyxy").augment(
        {"images": images, "segmentation_masks": masks,
         "bounding_boxes": {"boxes": boxes, "labels": labels}})
    moved = out["segmentation_masks"].numpy().astype(bool)
    assert (moved != masks.astype(bool)).any()  # some rounds were geometric
    kept = out["bounding_boxes"]["labels"].numpy()
    for i in range(64):
        for k in range(3):
            m = moved[i, :, :, k]
            if kept[i, k] == k and m.any():
                ys, xs = np.nonzero(m)
                x1, y1, x2, y2 = out["bounding_boxes"]["boxes"].numpy()[i, k]
                assert x1 <= xs.min() + 1 and xs.max() <= x2 and y1 <= ys.min() + 1
                assert ys.max() <= y2


@pytest.mark.parametrize("zoom", [0.5, 1.5, 2.0])
def test_nearest_warp_of_images_equals_the_mask_warp_at_exact_ties(zoom):
    """Zooms of 0.5 and 1.5 put sample points exactly between pixels: images warped with
    ``interpolation="nearest"`` and masks must break those ties the same way."""
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2, (4, 32, 32, 1)).astype(np.uint8)
    op = A.RandomAffine(zoom=(zoom, zoom), interpolation="nearest")
    out = A.Pipeline([op], seed=0).augment({"images": masks * 255,
                                            "segmentation_masks": masks})
    np.testing.assert_array_equal(out["images"].numpy() > 127.5,
                                  out["segmentation_masks"].numpy().astype(bool))
