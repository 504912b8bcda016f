"""Segmentation masks and bounding boxes carried through the geometric ops.

A batch's dense targets travel beside the images as a dict (the pipeline's internal form):

* ``"masks"``: (batch, height, width, channels), any dtype; moved with the pixels by nearest
  neighbour, never blended.
* ``"boxes"``: (batch, num_boxes, 4) float32 ``xyxy`` in absolute pixels of the current image, on the
  continuous grid whose pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``.
* ``"box_labels"``: (batch, num_boxes), the boxes' class ids; ``-1`` marks padding, as in Keras.
* ``"visible"``: (batch, num_boxes) float32, the fraction of each box's area still in the image, the
  product of what every op kept (a crop that keeps half a box multiplies it by 0.5).

Each geometric op maps boxes to the enclosing box of their transformed corners, clips it to the
output image and multiplies ``visible`` by the kept fraction of the (unclipped) transformed area. At
the end the pipeline gives label -1 to every box whose ``visible`` fell below ``min_visibility`` or
whose clipped area is 0, as Keras's ``clip_to_image_size`` does, and converts back to the user's
``bounding_box_format``.
"""

from __future__ import annotations

import tensorflow as tf

BOX_FORMATS = ("xyxy", "yxyx", "xywh", "center_xywh", "rel_xyxy")


def boxes_to_xyxy(boxes, box_format: str, height, width) -> tf.Tensor:
    """Converts (..., 4) boxes from ``box_format`` to absolute float32 ``xyxy``.

    ``height`` and ``width`` (numbers, or tensors broadcastable to ``boxes[..., 0]``) are only used
    by the relative format.
    """
    boxes = tf.cast(boxes, tf.float32)
    a, b, c, d = tf.unstack(boxes, axis=-1)
    if box_format == "xyxy":
        return boxes
    if box_format == "yxyx":
        return tf.stack([b, a, d, c], axis=-1)
    if box_format == "xywh":
        return tf.stack([a, b, a + c, b + d], axis=-1)
    if box_format == "center_xywh":
        return tf.stack([a - c / 2, b - d / 2, a + c / 2, b + d / 2], axis=-1)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    return tf.stack([a * w, b * h, c * w, d * h], axis=-1)  # rel_xyxy


def boxes_from_xyxy(boxes, box_format: str, height, width) -> tf.Tensor:
    """The inverse of :func:`boxes_to_xyxy`."""
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    if box_format == "xyxy":
        return boxes
    if box_format == "yxyx":
        return tf.stack([y1, x1, y2, x2], axis=-1)
    if box_format == "xywh":
        return tf.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)
    if box_format == "center_xywh":
        return tf.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    return tf.stack([x1 / w, y1 / h, x2 / w, y2 / h], axis=-1)


def start_boxes(targets: dict, box_format: str, height, width) -> dict:
    """``targets`` with its boxes in the internal form: ``xyxy`` pixels, all of each visible."""
    out = dict(targets)
    out["boxes"] = boxes_to_xyxy(targets["boxes"], box_format, height, width)
    out["visible"] = tf.ones(tf.shape(out["boxes"])[:2], tf.float32)
    return out


def box_area(boxes) -> tf.Tensor:
    """Area of ``xyxy`` boxes; 0 for empty or inverted boxes."""
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.maximum(x2 - x1, 0.0) * tf.maximum(y2 - y1, 0.0)


def clip_boxes(boxes, height, width) -> tf.Tensor:
    """Clips ``xyxy`` boxes to ``[0, width] x [0, height]`` (per-example sizes broadcast)."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack([tf.clip_by_value(x1, 0.0, w), tf.clip_by_value(y1, 0.0, h),
                     tf.clip_by_value(x2, 0.0, w), tf.clip_by_value(y2, 0.0, h)], axis=-1)


def kept_fraction(before, after) -> tf.Tensor:
    """``area(after) / area(before)``, 0 where ``before`` is empty."""
    area = box_area(before)
    return tf.where(area > 0, box_area(after) / tf.where(area > 0, area, 1.0), 0.0)


def moved(targets: dict, boxes, height, width) -> dict:
    """``targets`` with its boxes replaced by ``boxes`` (unclipped, in an image of the given size),
    clipped, and their visible fraction updated."""
    clipped = clip_boxes(boxes, height, width)
    out = dict(targets)
    out["boxes"] = clipped
    out["visible"] = targets["visible"] * kept_fraction(boxes, clipped)
    return out


def per_example(value) -> tf.Tensor:
    """A (batch,) tensor as (batch, 1), to broadcast against (batch, num_boxes); numbers pass."""
    value = tf.cast(value, tf.float32)
    return value[:, None] if value.shape.rank == 1 else value


def crop_resize_boxes(targets: dict, top, left, box_height, box_width, out_height, out_width):
    """Boxes after cropping ``[top, top+h) x [left, left+w)`` and resizing it to the output size."""
    if "boxes" not in targets:
        return targets
    sy = float(out_height) / per_example(box_height)
    sx = float(out_width) / per_example(box_width)
    x1, y1, x2, y2 = tf.unstack(targets["boxes"], axis=-1)
    top, left = per_example(top), per_example(left)
    boxes = tf.stack([(x1 - left) * sx, (y1 - top) * sy, (x2 - left) * sx, (y2 - top) * sy], -1)
    return moved(targets, boxes, out_height, out_width)


def flip_boxes(targets: dict, horizontal, vertical, height, width) -> dict:
    """Boxes after per-example flips (``horizontal``/``vertical`` are (batch,) booleans or None)."""
    if "boxes" not in targets:
        return targets
    x1, y1, x2, y2 = tf.unstack(targets["boxes"], axis=-1)
    if horizontal is not None:
        h = horizontal[:, None]
        x1, x2 = tf.where(h, float(width) - x2, x1), tf.where(h, float(width) - x1, x2)
    if vertical is not None:
        v = vertical[:, None]
        y1, y2 = tf.where(v, float(height) - y2, y1), tf.where(v, float(height) - y1, y2)
    out = dict(targets)
    out["boxes"] = tf.stack([x1, y1, x2, y2], axis=-1)
    return out


def affine_boxes(targets: dict, matrix, shift, height, width) -> dict:
    """Boxes after ``p' = matrix (p - c) + c + shift`` with ``c`` the image centre.

    ``matrix`` is a tuple ``(m00, m01, m10, m11)`` of (batch,) tensors acting on ``(x, y)``; ``shift``
    is ``(tx, ty)``. The new box encloses the four transformed corners.
    """
    if "boxes" not in targets:
        return targets
    m00, m01, m10, m11 = (per_example(m)[..., None] for m in matrix)
    tx, ty = (per_example(t)[..., None] for t in shift)
    cx, cy = width / 2.0, height / 2.0
    x1, y1, x2, y2 = tf.unstack(targets["boxes"], axis=-1)
    xs = tf.stack([x1, x2, x1, x2], axis=-1) - cx  # (batch, boxes, 4 corners)
    ys = tf.stack([y1, y1, y2, y2], axis=-1) - cy
    nx = m00 * xs + m01 * ys + cx + tx
    ny = m10 * xs + m11 * ys + cy + ty
    boxes = tf.stack([tf.reduce_min(nx, -1), tf.reduce_min(ny, -1),
                      tf.reduce_max(nx, -1), tf.reduce_max(ny, -1)], axis=-1)
    return moved(targets, boxes, height, width)


def finish_boxes(boxes, labels, visible, min_visibility: float):
    """Labels -1 for boxes that are gone (empty) or less than ``min_visibility`` visible."""
    keep = (box_area(boxes) > 0) & (visible >= min_visibility) & (visible > 0)
    return boxes, tf.where(keep, labels, tf.cast(-1, labels.dtype))


# ------------------------------------------------------------------------ masks, resampled once
# A run of geometric ops whose inverse maps are affine (crops, resized crops, flips, constant-fill
# affine warps) moves the masks lazily: the pipeline composes the maps from the current output
# back to the source mask and samples the source once, by nearest neighbour, when the run ends.
# One nearest resampling keeps a mask within half a pixel of the true outline; one per op would
# add that error up (a crop that magnifies, then a rotation).
#
# A map is six (batch,) tensors ``(a, b, c, d, e, f)`` acting on continuous coordinates (pixel
# (i, j) covers [j, j + 1) x [i, i + 1)): ``x_in = a x + b y + c``, ``y_in = d x + e y + f``.


def identity_map(batch):
    one, zero = tf.ones([batch]), tf.zeros([batch])
    return (one, zero, zero, zero, one, zero)


def compose(outer, inner):
    """The map ``outer(inner(p))``."""
    a1, b1, c1, d1, e1, f1 = outer
    a2, b2, c2, d2, e2, f2 = inner
    return (a1 * a2 + b1 * d2, a1 * b2 + b1 * e2, a1 * c2 + b1 * f2 + c1,
            d1 * a2 + e1 * d2, d1 * b2 + e1 * e2, d1 * c2 + e1 * f2 + f1)


def start_lazy_masks(targets: dict) -> dict:
    out = dict(targets)
    masks = out.pop("masks")
    out["lazy_masks"] = {"source": masks, "map": identity_map(tf.shape(masks)[0]), "checks": []}
    return out


def defer_masks(targets: dict, inverse, check_size) -> dict:
    """Appends an op's inverse map to the lazy masks; ``check_size`` is the op's input (height,
    width) when points mapped outside it must read 0 (padding, constant fill), else None."""
    lazy = targets["lazy_masks"]
    checks = [(compose(m, inverse), size) for m, size in lazy["checks"]]
    if check_size is not None:
        checks.append((inverse, check_size))
    out = dict(targets)
    out["lazy_masks"] = {"source": lazy["source"], "map": compose(lazy["map"], inverse),
                         "checks": checks}
    return out


def realize_masks(targets: dict, height: int, width: int) -> dict:
    """Samples the source masks once through the composed map, for an output of (height, width)."""
    if "lazy_masks" not in targets:
        return targets
    out = dict(targets)
    lazy = out.pop("lazy_masks")
    source = lazy["source"]
    src_h, src_w = source.shape[1], source.shape[2]
    y = tf.range(height, dtype=tf.float32)[None, :, None] + 0.5
    x = tf.range(width, dtype=tf.float32)[None, None, :] + 0.5

    def apply(m):
        a, b, c, d, e, f = (v[:, None, None] for v in m)
        return a * x + b * y + c, d * x + e * y + f

    xs, ys = apply(lazy["map"])
    valid = (xs >= 0) & (xs < src_w) & (ys >= 0) & (ys < src_h)
    for m, (h, w) in lazy["checks"]:
        cx, cy = apply(m)
        valid &= (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    rows = tf.clip_by_value(tf.cast(tf.floor(ys), tf.int32), 0, src_h - 1)
    cols = tf.clip_by_value(tf.cast(tf.floor(xs), tf.int32), 0, src_w - 1)
    flat = tf.reshape(source, [-1, src_h * src_w, source.shape[3]])
    index = tf.reshape(rows * src_w + cols, [tf.shape(source)[0], -1])
    masks = tf.reshape(tf.gather(flat, index, batch_dims=1),
                       [-1, height, width, source.shape[3]])
    out["masks"] = tf.where(valid[..., None], masks, tf.zeros([], masks.dtype))
    return out
