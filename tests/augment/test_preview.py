"""preview(): the PNG grid, with masks drawn as overlays and boxes as outlines for dict batches."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_regkit import augment as A  # noqa: E402

SIZE = 32
GRAY = 128


def identity():
    """A pipeline that leaves everything in place (but still converts and checks boxes)."""
    return A.Pipeline([A.RandomFlip(p=0.0)], seed=0, bounding_box_format="xyxy")


def batch(n=1, mask=None, boxes=None, labels=None):
    data = {"images": np.full((n, SIZE, SIZE, 3), GRAY, np.uint8)}
    if mask is not None:
        data["segmentation_masks"] = np.broadcast_to(mask, (n,) + mask.shape).copy()
    if boxes is not None:
        data["bounding_boxes"] = {
            "boxes": np.broadcast_to(np.asarray(boxes, np.float32), (n, len(boxes), 4)).copy(),
            "labels": np.broadcast_to(np.asarray(labels, np.int32), (n, len(labels))).copy()}
    return data


def render(tmp_path, data, pipeline=None, name="grid.png", **kwargs):
    path = A.preview(pipeline or identity(), data, str(tmp_path / name), **kwargs)
    return mpimg.imread(path)[..., :3]


def panels(tmp_path, rounds=1):
    """Pixel extents (top, bottom, left, right) of each row's panel in a one-column dict grid:
    where a mask over the whole image changes the picture."""
    full = np.ones((SIZE, SIZE), np.uint8)
    changed = np.any(render(tmp_path, batch(mask=full), rounds=rounds, name="full.png")
                     != render(tmp_path, batch(mask=0 * full), rounds=rounds, name="none.png"), -1)
    rows = np.nonzero(changed.any(1))[0]
    starts = np.concatenate([[rows[0]], rows[1:][np.diff(rows) > 1]])
    ends = np.concatenate([rows[:-1][np.diff(rows) > 1], [rows[-1]]])
    cols = np.nonzero(changed.any(0))[0]
    assert len(starts) == rounds + 1
    return [(s, e + 1, cols[0], cols[-1] + 1) for s, e in zip(starts, ends)]


def part(picture, extent, y0, y1, x0, x1):
    """The pixels of a panel between fractions ``y0..y1`` and ``x0..x1`` of its height, width."""
    top, bottom, left, right = extent
    h, w = bottom - top, right - left
    return picture[top + int(y0 * h):top + int(y1 * h), left + int(x0 * w):left + int(x1 * w)]


def test_plain_arrays_keep_the_old_grid(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    path = A.preview(A.Pipeline([A.RandomFlip()], seed=0), images, str(tmp_path / "a.png"),
                     rounds=2, max_images=3)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert mpimg.imread(path).shape == (3 * 130, 3 * 130, 4)  # 1.3-inch panels at 100 dpi


def test_dict_grid_size(tmp_path):
    rng = np.random.default_rng(1)
    data = {"images": rng.integers(0, 256, (4, SIZE, 40, 3), dtype=np.uint8),
            "segmentation_masks": rng.integers(0, 3, (4, SIZE, 40), dtype=np.uint8),
            "bounding_boxes": {"boxes": np.tile([[2.0, 3.0, 20.0, 30.0]], (4, 2, 1)),
                               "labels": np.array([[1, -1]] * 4, np.int32)}}
    pipeline = A.Pipeline([A.RandomResizedCrop(24, 24), A.RandomFlip()], seed=0,
                          bounding_box_format="xyxy")
    path = A.preview(pipeline, data, str(tmp_path / "d.png"), rounds=3)
    assert mpimg.imread(path).shape == (4 * 200, 4 * 200, 4)  # 2-inch panels at 100 dpi


def test_mask_overlay_tints_exactly_the_mask_region(tmp_path):
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 8:24] = 1  # the central quarter
    with_mask = render(tmp_path, batch(mask=mask), name="m.png")
    empty = render(tmp_path, batch(mask=0 * mask), name="e.png")
    for extent in panels(tmp_path):  # the originals and the augmented row
        inside = part(with_mask, extent, 0.3, 0.7, 0.3, 0.7) - part(empty, extent, 0.3, 0.7,
                                                                      0.3, 0.7)
        outside = part(with_mask, extent, 0.0, 0.2, 0.0, 1.0) - part(empty, extent, 0.0, 0.2,
                                                                       0.0, 1.0)
        assert np.abs(outside).max() == 0
        # class 1 is tab10's blue (0.12, 0.47, 0.71): over gray, blue rises and red falls
        assert (inside[..., 2] > 0.05).all() and (inside[..., 0] < -0.05).all()


def test_classes_and_channels_get_distinct_colours(tmp_path):
    extent = panels(tmp_path)[0]
    colours = []
    for k in (1, 2, 3):
        picture = render(tmp_path, batch(mask=np.full((SIZE, SIZE), k, np.uint8)),
                         name=f"c{k}.png")
        colours.append(part(picture, extent, 0.4, 0.6, 0.4, 0.6).reshape(-1, 3).mean(0))
    assert min(np.abs(a - b).max() for i, a in enumerate(colours) for b in colours[i + 1:]) > 0.1
    # several channels: channel c has the colour of class id c + 1; float masks work too
    channels = np.zeros((SIZE, SIZE, 3), np.float32)
    channels[..., 1] = 1.0
    picture = render(tmp_path, batch(mask=channels), name="ch.png")
    np.testing.assert_allclose(part(picture, extent, 0.4, 0.6, 0.4, 0.6).reshape(-1, 3).mean(0),
                               colours[1], atol=0.02)


def test_augmented_rows_show_the_moved_mask(tmp_path):
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, :8] = 2  # a stripe on the left; the flip moves it to the right
    flip = A.Pipeline([A.RandomFlip("horizontal", p=1.0)], seed=0)
    image = batch(mask=mask)
    with_mask = render(tmp_path, image, pipeline=flip, name="f.png")
    empty = render(tmp_path, batch(mask=0 * mask), pipeline=flip, name="fe.png")
    original, flipped = panels(tmp_path)

    def tinted(extent, x0, x1):
        return np.abs(part(with_mask, extent, 0.1, 0.9, x0, x1)
                      - part(empty, extent, 0.1, 0.9, x0, x1)).max() > 0.05

    assert tinted(original, 0.0, 0.2) and not tinted(original, 0.3, 1.0)
    assert tinted(flipped, 0.8, 1.0) and not tinted(flipped, 0.0, 0.7)


def test_boxes_are_outlined_and_padding_is_not_drawn(tmp_path):
    box = [[8.0, 8.0, 24.0, 24.0]]
    outlined = render(tmp_path, batch(boxes=box, labels=[3]), name="b.png")
    padding = render(tmp_path, batch(boxes=box, labels=[-1]), name="p.png")
    plain = render(tmp_path, batch(), name="n.png")
    np.testing.assert_array_equal(padding, plain)
    for extent in panels(tmp_path):
        changed = np.any(outlined != plain, -1)
        assert not part(changed, extent, 0.35, 0.65, 0.35, 0.65).any()  # an outline, not a fill
        assert part(changed, extent, 0.4, 0.6, 0.22, 0.28).any()  # left edge at x = 8 / 32
        assert part(changed, extent, 0.4, 0.6, 0.72, 0.78).any()  # right edge at x = 24 / 32
        assert not part(changed, extent, 0.4, 0.6, 0.0, 0.15).any()
        assert not part(changed, extent, 0.85, 1.0, 0.0, 1.0).any()


def test_boxes_follow_the_pipeline_format_and_output_size(tmp_path):
    """rel_xyxy boxes through a 2x resize: the outline stays at the same place in both rows."""
    resize = A.Pipeline([A.RandomResizedCrop(2 * SIZE, 2 * SIZE, p=0.0)], seed=0,
                        bounding_box_format="rel_xyxy")
    box = [[0.25, 0.25, 0.75, 0.75]]
    outlined = render(tmp_path, batch(boxes=box, labels=[0]), pipeline=resize, name="r.png")
    plain = render(tmp_path, batch(), pipeline=resize, name="rn.png")
    changed = np.any(outlined != plain, -1)
    for extent in panels(tmp_path):
        assert part(changed, extent, 0.4, 0.6, 0.22, 0.28).any()
        assert part(changed, extent, 0.4, 0.6, 0.72, 0.78).any()
        assert not part(changed, extent, 0.35, 0.65, 0.35, 0.65).any()


def test_cutmix_boxes_and_masks_are_drawn(tmp_path):
    rng = np.random.default_rng(2)
    mask = np.zeros((4, SIZE, SIZE), np.uint8)
    mask[:, 4:20, 4:20] = 1
    data = {"images": rng.integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8),
            "labels": np.eye(2, dtype=np.float32)[[0, 1, 0, 1]],
            "segmentation_masks": mask,
            "bounding_boxes": {"boxes": np.tile([[[4.0, 4.0, 20.0, 20.0]]], (4, 1, 1)),
                               "labels": np.ones((4, 1), np.int32)}}
    pipeline = A.Pipeline([A.CutMix()], seed=0, bounding_box_format="xyxy")
    path = A.preview(pipeline, data, str(tmp_path / "cm.png"), rounds=1)
    assert mpimg.imread(path).shape == (400, 800, 4)


def test_bad_inputs_raise(tmp_path):
    path = str(tmp_path / "x.png")
    good = batch(n=2, mask=np.zeros((SIZE, SIZE), np.uint8), boxes=[[0, 0, 4, 4]], labels=[1])
    with pytest.raises(ValueError, match="preview: images must be an array"):
        A.preview(identity(), good["images"][0], path)
    with pytest.raises(ValueError, match=r"preview: images must be an array or a dict keyed by "
                                         r".*got keys \['masks'\]"):
        A.preview(identity(), {"masks": good["images"]}, path)
    with pytest.raises(ValueError, match=r"got keys \['boxes', 'images'\]"):
        A.preview(identity(), {"images": good["images"], "boxes": good["bounding_boxes"]}, path)
    with pytest.raises(ValueError, match=r'preview: images\["images"\] must be an array \(n, '
                                         r'height, width, channels\), got shape \(2, 32, 32\)'):
        A.preview(identity(), {"images": good["images"][..., 0]}, path)
    with pytest.raises(ValueError, match=r'preview: images\["segmentation_masks"\] must be an '
                                         r'array \(2, 32, 32\) or .*got shape \(2, 32, 31\)'):
        A.preview(identity(), dict(good, segmentation_masks=np.zeros((2, SIZE, SIZE - 1))), path)
    with pytest.raises(ValueError, match=r'preview: images\["bounding_boxes"\]\["boxes"\] must '
                                         r'be an array \(2, num_boxes, 4\), got shape \(2, 1, 5\)'):
        A.preview(identity(), dict(good, bounding_boxes={"boxes": np.zeros((2, 1, 5)),
                                                         "labels": np.zeros((2, 1))}), path)
    with pytest.raises(ValueError, match=r'preview: images\["bounding_boxes"\]\["labels"\] must '
                                         r"be an array of shape \(2, 1\)"):
        A.preview(identity(), dict(good, bounding_boxes={"boxes": np.zeros((2, 1, 4)),
                                                         "labels": np.zeros((2, 2))}), path)
    with pytest.raises(ValueError, match=r'preview: images\["bounding_boxes"\] must be a dict'):
        A.preview(identity(), dict(good, bounding_boxes=np.zeros((2, 1, 4))), path)
    with pytest.raises(ValueError, match="preview: labels must be None when images is a dict"):
        A.preview(identity(), good, path, labels=np.zeros(2))
    with pytest.raises(ValueError, match="preview: pipeline must be a Pipeline with a "
                                         "bounding_box_format"):
        A.preview(A.Pipeline([A.RandomFlip()], seed=0), good, path)
    with pytest.raises(ValueError, match="preview: rounds must be an integer >= 1"):
        A.preview(identity(), good, path, rounds=0)
    with pytest.raises(TypeError, match="preview: max_images must be an integer"):
        A.preview(identity(), good, path, max_images=2.5)
