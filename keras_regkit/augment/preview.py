"""A PNG grid of original images and their augmentations, for eyeballing a pipeline."""

from __future__ import annotations

import numpy as np

from keras_regkit._validation import check_int
from keras_regkit.augment.base import spec_error

OWNER = "preview"
DICT_KEYS = ("images", "labels", "segmentation_masks", "bounding_boxes")
PANEL_INCHES = 1.3  # one panel per image, plain arrays
TARGETS_PANEL_INCHES = 2.0  # dicts: room for box outlines and their label ids
DPI = 100
MASK_ALPHA = 0.45


def _colour(index: int):
    """Colour ``index % 10`` of matplotlib's ``tab10`` cycle (blue, orange, green, red, ...)."""
    import matplotlib

    return matplotlib.colormaps["tab10"](int(index) % 10)[:3]


def _check_dict(batch: dict) -> dict:
    """Validates a Keras-style dict batch; returns it with NumPy arrays."""
    keys = sorted(batch)
    if "images" not in batch or set(batch) - set(DICT_KEYS):
        spec_error(OWNER, "images", f"an array or a dict keyed by {DICT_KEYS} with 'images' "
                   "present", f"keys {keys}")
    out = {"images": np.asarray(batch["images"])}
    images = out["images"]
    if images.ndim != 4:
        spec_error(OWNER, 'images["images"]', "an array (n, height, width, channels)",
                   f"shape {images.shape}")
    n, height, width = images.shape[:3]
    if "labels" in batch:
        out["labels"] = np.asarray(batch["labels"])
        if out["labels"].ndim == 0 or len(out["labels"]) != n:
            spec_error(OWNER, 'images["labels"]', f"an array with one row per image ({n})",
                       f"shape {out['labels'].shape}")
    if "segmentation_masks" in batch:
        masks = np.asarray(batch["segmentation_masks"])
        if masks.ndim not in (3, 4) or masks.shape[:3] != (n, height, width):
            spec_error(OWNER, 'images["segmentation_masks"]', f"an array ({n}, {height}, {width})"
                       f" or ({n}, {height}, {width}, channels), the images' size",
                       f"shape {masks.shape}")
        out["segmentation_masks"] = masks
    if "bounding_boxes" in batch:
        boxes = batch["bounding_boxes"]
        if not isinstance(boxes, dict) or set(boxes) != {"boxes", "labels"}:
            spec_error(OWNER, 'images["bounding_boxes"]', 'a dict {"boxes": (n, num_boxes, 4), '
                       '"labels": (n, num_boxes)}', boxes if not isinstance(boxes, dict)
                       else f"keys {sorted(boxes)}")
        coords, labels = np.asarray(boxes["boxes"]), np.asarray(boxes["labels"])
        if coords.ndim != 3 or coords.shape[0] != n or coords.shape[2] != 4:
            spec_error(OWNER, 'images["bounding_boxes"]["boxes"]', f"an array ({n}, num_boxes, 4)",
                       f"shape {coords.shape}")
        if labels.shape != coords.shape[:2]:
            spec_error(OWNER, 'images["bounding_boxes"]["labels"]',
                       f"an array of shape {coords.shape[:2]} (n, num_boxes)",
                       f"shape {labels.shape}")
        out["bounding_boxes"] = {"boxes": coords, "labels": labels}
    return out


def _mask_overlay(mask: np.ndarray) -> np.ndarray:
    """An RGBA image: class ids (a 2-D mask or one channel) or one class per channel (several
    channels) in their colours at ``MASK_ALPHA``; 0 (background) transparent."""
    overlay = np.zeros(mask.shape[:2] + (4,), np.float32)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim == 2:
        ids = np.rint(mask).astype(np.int64) if mask.dtype.kind == "f" else mask.astype(np.int64)
        layers = [(k - 1, ids == k) for k in np.unique(ids) if k != 0]
    else:  # one binary (or any nonzero) layer per channel; a later channel covers an earlier one
        layers = [(c, mask[..., c] != 0) for c in range(mask.shape[-1])]
    for index, where in layers:
        overlay[where] = (*_colour(index), MASK_ALPHA)
    return overlay


def _draw_boxes(ax, boxes: np.ndarray, labels: np.ndarray) -> None:
    """Outlines of ``xyxy`` boxes (absolute pixels; pixel (i, j) covers [j, j+1) x [i, i+1)) with
    their label ids; labels < 0 (padding, dropped boxes) are skipped."""
    import matplotlib.patches as patches

    for (x1, y1, x2, y2), label in zip(boxes, labels):
        if label < 0:
            continue
        colour = _colour(label - 1)
        # imshow centres pixel (i, j) at (j, i): the pixel grid's edges sit at -0.5.
        ax.add_patch(patches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                       edgecolor=colour, linewidth=1.2))
        ax.text(max(x1, 0.0) - 0.5, max(y1, 0.0) - 0.5, str(int(label)), fontsize=6,
                color="white", va="top", ha="left", clip_on=True,
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.8})


def _panels(batch: dict, box_format: str | None) -> list:
    """One ``(image, mask or None, (xyxy boxes, labels) or None)`` per example of a dict batch."""
    from keras_regkit.augment import targets as T

    images = np.asarray(batch["images"], np.float32)
    height, width = images.shape[1:3]
    masks = batch.get("segmentation_masks")
    boxes = None
    if batch.get("bounding_boxes") is not None:
        coords = np.asarray(T.boxes_to_xyxy(np.asarray(batch["bounding_boxes"]["boxes"]),
                                            box_format, height, width))
        boxes = (coords, np.asarray(batch["bounding_boxes"]["labels"]))
    return [(images[i], None if masks is None else np.asarray(masks[i]),
             None if boxes is None else (boxes[0][i], boxes[1][i])) for i in range(len(images))]


def preview(pipeline, images, path: str, labels=None, rounds: int = 3, max_images: int = 8) -> str:
    """Writes a grid: the originals in the first row, then ``rounds`` augmented versions.

    Row ``r`` (after the originals) shows ``pipeline.augment(..., epoch=r)``: the draws of epoch
    ``r`` for batch 0. With a Keras-style dict, each panel also shows the example's segmentation
    mask as a translucent overlay and its bounding boxes as outlines tagged with their label ids,
    before and after augmentation, so one can check that masks and boxes follow the pixels.

    Args:
        pipeline: an image ``Pipeline``.
        images: an array (n, height, width, channels), uint8 or float in [0, 255]; or a dict
            ``{"images", "labels", "segmentation_masks", "bounding_boxes": {"boxes", "labels"}}``
            of arrays (every key but ``"images"`` optional), as ``Pipeline.augment`` takes it.
            Masks of shape (n, height, width) or (n, height, width, 1) hold class ids: id ``k``
            > 0 is drawn in colour ``(k - 1) % 10`` of matplotlib's ``tab10`` cycle (1 blue, 2
            orange, 3 green, ...), 0 is transparent. Masks with several channels are drawn
            channel by channel where nonzero, channel ``c`` in colour ``c % 10`` (so a one-hot
            mask without a background channel matches the class-id colours). Boxes are in the
            pipeline's ``bounding_box_format``; box label ``k`` is drawn in the colour of class
            ``k`` with its id in the top-left corner; boxes labelled -1 (padding, or dropped by
            the pipeline) are not drawn.
        path: output PNG path.
        labels: labels for pipelines with label ops (MixUp, CutMix, LabelSmoothing) when
            ``images`` is an array; with a dict, put them under its ``"labels"`` key.
        rounds: number of augmented rows (epochs 0, 1, ... of the pipeline's draws).
        max_images: columns shown (the first ``max_images`` examples).

    Returns:
        ``path``. The PNG has one square panel per image, 1.3 inches for arrays and 2 inches
        for dicts, at 100 dpi: (rounds + 1) * 130 by columns * 130 pixels for arrays.

    Raises:
        ValueError: ``images`` neither an array (n, height, width, channels) nor such a dict,
            masks or boxes of the wrong shape, ``labels`` given beside a dict, boxes with a
            pipeline that has no ``bounding_box_format``, or ``rounds`` / ``max_images`` < 1.
        TypeError: ``rounds`` or ``max_images`` not an integer.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = check_int(OWNER, "rounds", rounds, 1)
    max_images = check_int(OWNER, "max_images", max_images, 1)
    with_targets = isinstance(images, dict)
    if with_targets:
        if labels is not None:
            spec_error(OWNER, "labels", "None when images is a dict (put them under its "
                       "'labels' key)", type(labels).__name__)
        batch = _check_dict(images)
        box_format = getattr(pipeline, "bounding_box_format", None)
        if "bounding_boxes" in batch and box_format is None:
            spec_error(OWNER, "pipeline", "a Pipeline with a bounding_box_format when images "
                       "has bounding_boxes", f"{pipeline!r} without one")
        cols = min(max_images, len(batch["images"]))

        def first(value):
            return ({k: first(v) for k, v in value.items()} if isinstance(value, dict)
                    else value[:cols])

        batch = first(batch)
        rows = [_panels(batch, box_format)]
        for epoch in range(rounds):
            out = pipeline.augment(batch, epoch=epoch)
            out = {k: ({b: np.asarray(t) for b, t in v.items()} if isinstance(v, dict)
                       else np.asarray(v)) for k, v in out.items()}
            rows.append(_panels(out, box_format))
    else:
        images = np.asarray(images)
        if images.ndim != 4:
            spec_error(OWNER, "images", "an array (n, height, width, channels) or a dict "
                       f"keyed by {DICT_KEYS}", images.shape)
        cols = min(max_images, len(images))
        images = images[:cols]
        rows = [[(im, None, None) for im in images.astype(np.float32)]]
        for epoch in range(rounds):
            out = pipeline.augment(images, None if labels is None else np.asarray(labels)[:cols],
                                   epoch=epoch)
            rows.append([(im, None, None)
                         for im in np.asarray(out[0] if isinstance(out, tuple) else out)])
    inches = TARGETS_PANEL_INCHES if with_targets else PANEL_INCHES
    fig, axes = plt.subplots(len(rows), cols, figsize=(inches * cols, inches * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            image, mask, boxes = row[c]
            im = np.clip(image, 0, 255).astype(np.uint8)
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray")
            if mask is not None:
                ax.imshow(_mask_overlay(mask), interpolation="nearest")
            if boxes is not None:
                _draw_boxes(ax, *boxes)
            if with_targets:  # boxes beyond the image must not widen the panel
                ax.set_xlim(-0.5, im.shape[1] - 0.5)
                ax.set_ylim(im.shape[0] - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel("original" if r == 0 else f"epoch {r - 1}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
