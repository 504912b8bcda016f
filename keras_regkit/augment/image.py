"""Batched image ops with per-example random parameters.

Every op works on a whole NHWC float32 batch in [0, 255] without a per-example ``map``: crops and
resampling are gathers with per-example indices, boxes are masks built from broadcast ``iota``
comparisons, and colour changes are per-example factors broadcast over the pixels. Each example of a
batch draws its own parameters (Keras 3's ``RandomCrop`` draws one offset per batch).
"""

from __future__ import annotations

import math

import tensorflow as tf

from keras_regkit._validation import (
    check_choice,
    check_int,
    check_number,
    check_pair,
    check_range,
)
from keras_regkit.augment import kernels
from keras_regkit.augment import targets as T
from keras_regkit.augment.base import (
    AugmentOp,
    coin,
    fold,
    randint,
    select,
    serializable,
    spec_error,
    uniform,
)

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL and torchvision
FILL_MODES = ("constant", "nearest", "reflect", "wrap")


# --------------------------------------------------------------------------------------- helpers
def spatial(owner: str, images: tf.TensorSpec) -> tuple[int, int, int]:
    """Static (height, width, channels) of a batch spec, or a ValueError naming ``owner``."""
    h, w, c = images.shape[1:]
    if h is None or w is None or c is None:
        spec_error(owner, "images", "a batch with static height, width and channels", images.shape)
    return int(h), int(w), int(c)


def _rgb(owner: str, images: tf.TensorSpec) -> None:
    if spatial(owner, images)[2] != 3:
        spec_error(owner, "images", "RGB (3 channels)", f"{images.shape[-1]} channels")


def _sym(owner: str, name: str, value, low=None, high=None, center=0.0) -> tuple[float, float]:
    """A number ``v`` means ``[center - v, center + v]``; a pair is taken as ``(min, max)``."""
    if isinstance(value, (tuple, list)):
        return check_pair(owner, name, value, low, high)
    v = check_range(owner, name, value, 0.0, None)
    lo, hi = center - v, center + v
    if low is not None:
        lo = max(lo, low)
    if high is not None and hi > high:
        spec_error(owner, name, f"at most {high - center:g} as a single number", value)
    return lo, hi


def gray(images: tf.Tensor) -> tf.Tensor:
    """Luma of RGB images, keeping a channel axis of size 1."""
    return tf.tensordot(images, tf.constant(GRAY_WEIGHTS, images.dtype), axes=[[3], [0]])[..., None]


def clip255(x: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(x, 0.0, 255.0)


def gather_crop(images, rows, cols, fill_value):
    """``out[b, i, j] = images[b, rows[b, i], cols[b, j]]``, ``fill_value`` outside the image."""
    h, w = images.shape[1], images.shape[2]
    valid_r = (rows >= 0) & (rows < h)
    valid_c = (cols >= 0) & (cols < w)
    out = tf.gather(images, tf.clip_by_value(rows, 0, h - 1), axis=1, batch_dims=1)
    out = tf.gather(out, tf.clip_by_value(cols, 0, w - 1), axis=2, batch_dims=1)
    valid = valid_r[:, :, None, None] & valid_c[:, None, :, None]
    return tf.where(valid, out, tf.cast(fill_value, out.dtype))


def box_mask(height, width, top, left, box_h, box_w):
    """(batch, height, width, 1) booleans, True inside each example's box (clipped to the image)."""
    r = tf.range(height)[None, :]
    c = tf.range(width)[None, :]
    in_r = (r >= top[:, None]) & (r < (top + box_h)[:, None])
    in_c = (c >= left[:, None]) & (c < (left + box_w)[:, None])
    return (in_r[:, :, None] & in_c[:, None, :])[..., None]


def sample_boxes(key, batch_size, height, width, scale, log_ratio, attempts=10, ratio_is_hw=False):
    """Vectorized version of torchvision's box sampler (RandomResizedCrop / RandomErasing).

    Draws ``attempts`` candidate boxes per example with area fraction uniform in ``scale`` and log
    aspect uniform in ``log_ratio``, and keeps the first that fits. ``height`` and ``width`` are
    numbers, or (batch,) int32 tensors for images of different sizes. Returns (top, left, h, w,
    found); where nothing fits, a 1x1 box.
    """
    shape = [batch_size, attempts]
    if isinstance(height, tf.Tensor):  # per-example sizes, against the candidates' columns
        image_h, image_w = (tf.cast(v, tf.float32)[:, None] for v in (height, width))
    else:
        image_h, image_w = height, width
    area = image_h * image_w * uniform(fold(key, 1), shape, scale[0], scale[1])
    aspect = tf.exp(uniform(fold(key, 2), shape, log_ratio[0], log_ratio[1]))
    if ratio_is_hw:
        h = tf.round(tf.sqrt(area * aspect))
        w = tf.round(tf.sqrt(area / aspect))
    else:  # width / height
        w = tf.round(tf.sqrt(area * aspect))
        h = tf.round(tf.sqrt(area / aspect))
    ok = (w > 0) & (w <= image_w) & (h > 0) & (h <= image_h)
    first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(ok, axis=1)
    h = tf.cast(tf.gather(h, first, batch_dims=1), tf.int32)
    w = tf.cast(tf.gather(w, first, batch_dims=1), tf.int32)
    h = tf.where(found, h, 1)
    w = tf.where(found, w, 1)
    top = randint(fold(key, 3), [batch_size], height - h + 1)
    left = randint(fold(key, 4), [batch_size], width - w + 1)
    return top, left, h, w, found


# ------------------------------------------------------------------------------------ geometry
@serializable
class RandomFlip(AugmentOp):
    """Flips each example, independently, with probability ``p``.

    Args:
        mode: ``"horizontal"``, ``"vertical"`` or ``"horizontal_and_vertical"`` (each axis drawn
            independently), as in ``keras.layers.RandomFlip``.
        p: probability of flipping an example along each axis.
    """

    def __init__(self, mode: str = "horizontal", p: float = 0.5):
        super().__init__(p)
        self.mode = check_choice(self.owner, "mode", mode,
                                 ("horizontal", "vertical", "horizontal_and_vertical"))

    def sample(self, key, batch_size, height, width):
        return {"horizontal": coin(fold(key, 0), batch_size, self.p) & ("horizontal" in self.mode),
                "vertical": coin(fold(key, 1), batch_size, self.p) & ("vertical" in self.mode)}

    def apply(self, images, labels, params):
        if "horizontal" in self.mode:
            images = kernels.flip_axis(images, params["horizontal"], axis=2)
        if "vertical" in self.mode:
            images = kernels.flip_axis(images, params["vertical"], axis=1)
        return images, labels

    def apply_targets(self, targets, params, height, width):
        horizontal = params["horizontal"] if "horizontal" in self.mode else None
        vertical = params["vertical"] if "vertical" in self.mode else None
        if "masks" in targets:
            targets = dict(targets)
            targets["masks"] = self.apply(targets["masks"], None, params)[0]
        return T.flip_boxes(targets, horizontal, vertical, height, width)

    def mask_map(self, params, height, width):
        one = tf.ones_like(params["horizontal"], tf.float32)
        h = tf.cast(params["horizontal"] & ("horizontal" in self.mode), tf.float32)
        v = tf.cast(params["vertical"] & ("vertical" in self.mode), tf.float32)
        zero = 0.0 * one
        return (one - 2 * h, zero, h * width, zero, one - 2 * v, v * height), None

    def get_config(self):
        return {"mode": self.mode, "p": self.p}


@serializable
class RandomCrop(AugmentOp):
    """Random crop of ``(height, width)`` after zero-padding, with one offset per example.

    Args:
        height, width: output size.
        padding: pixels of ``fill_value`` added on every side before cropping (4 for CIFAR).
        fill_value: value of the padding, in [0, 255].
        p: probability of a random crop; other examples get the central crop.

    Reference: the CIFAR augmentation of He et al., "Deep Residual Learning", CVPR 2016.
    """

    def __init__(self, height: int, width: int, padding: int = 0, fill_value: float = 0.0,
                 p: float = 1.0):
        super().__init__(p)
        self.height = check_int(self.owner, "height", height, 1)
        self.width = check_int(self.owner, "width", width, 1)
        self.padding = check_int(self.owner, "padding", padding, 0)
        self.fill_value = check_range(self.owner, "fill_value", fill_value, 0.0, 255.0)

    def output_spec(self, images, labels):
        h, w, c = spatial(self.owner, images)
        pad = 2 * self.padding
        if self.height > h + pad or self.width > w + pad:
            spec_error(self.owner, "(height, width)",
                       f"at most the padded image size ({h + pad}, {w + pad})",
                       (self.height, self.width))
        return tf.TensorSpec([images.shape[0], self.height, self.width, c], images.dtype), labels

    def sample(self, key, batch_size, height, width):
        span_y = height + 2 * self.padding - self.height
        span_x = width + 2 * self.padding - self.width
        apply = coin(fold(key, 0), batch_size, self.p)
        top = tf.where(apply, randint(fold(key, 1), [batch_size], span_y + 1), span_y // 2)
        left = tf.where(apply, randint(fold(key, 2), [batch_size], span_x + 1), span_x // 2)
        return {"top": top, "left": left}

    def apply(self, images, labels, params):
        rows = params["top"][:, None] + tf.range(self.height)[None, :] - self.padding
        cols = params["left"][:, None] + tf.range(self.width)[None, :] - self.padding
        return gather_crop(images, rows, cols, self.fill_value), labels

    def apply_targets(self, targets, params, height, width):
        top, left = params["top"] - self.padding, params["left"] - self.padding
        if "masks" in targets:
            targets = dict(targets)
            rows = top[:, None] + tf.range(self.height)[None, :]
            cols = left[:, None] + tf.range(self.width)[None, :]
            targets["masks"] = gather_crop(targets["masks"], rows, cols, 0)
        return T.crop_resize_boxes(targets, top, left, self.height, self.width, self.height,
                                   self.width)

    def mask_map(self, params, height, width):
        one = tf.ones_like(params["top"], tf.float32)
        top = tf.cast(params["top"] - self.padding, tf.float32)
        left = tf.cast(params["left"] - self.padding, tf.float32)
        return (one, 0 * one, left, 0 * one, one, top), (height, width)

    def get_config(self):
        return {"height": self.height, "width": self.width, "padding": self.padding,
                "fill_value": self.fill_value, "p": self.p}


def check_scale_ratio(owner: str, scale, ratio) -> tuple[tuple, tuple]:
    """Checks a random resized crop's ``scale`` (area fractions in (0, 1]) and ``ratio``
    (positive aspect ratios) ranges; returns them as float pairs."""
    scale = check_pair(owner, "scale", scale, 0.0, 1.0)
    if scale[1] <= 0:
        spec_error(owner, "scale", "a range with max > 0", scale)
    ratio = check_pair(owner, "ratio", ratio, 0.0, None)
    if ratio[0] <= 0:
        spec_error(owner, "ratio", "a range of positive numbers", ratio)
    return scale, ratio


@serializable
class RandomResizedCrop(AugmentOp):
    """Inception-style random resized crop, per example, resized bilinearly to ``(height, width)``.

    A box with area fraction uniform in ``scale`` and aspect ratio (width / height, as in
    torchvision) log-uniform in ``ratio`` is drawn (10 attempts, then a central crop with the ratio
    clamped, as torchvision), and resized with half-pixel bilinear interpolation (no antialiasing).

    Args:
        height, width: output size.
        scale: range of the box area as a fraction of the image area, within (0, 1].
        ratio: range of the box aspect ratio width / height, positive.
        p: probability of a random box; other examples are resized whole.

    Reference: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015.
    """

    def __init__(self, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 p: float = 1.0):
        super().__init__(p)
        self.height = check_int(self.owner, "height", height, 1)
        self.width = check_int(self.owner, "width", width, 1)
        self.scale, self.ratio = check_scale_ratio(self.owner, scale, ratio)

    def output_spec(self, images, labels):
        c = spatial(self.owner, images)[2]
        return tf.TensorSpec([images.shape[0], self.height, self.width, c], images.dtype), labels

    def sample(self, key, batch_size, height, width):
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        top, left, h, w, found = sample_boxes(key, batch_size, height, width, self.scale, log_ratio)
        # Fallback: the central crop with the aspect ratio clamped into ``ratio``.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            fh, fw = height, int(round(height * self.ratio[1]))
        else:
            fh, fw = height, width
        apply = coin(fold(key, 0), batch_size, self.p)
        use = apply & found
        whole = ~apply
        h = tf.where(use, h, tf.where(whole, height, fh))
        w = tf.where(use, w, tf.where(whole, width, fw))
        top = tf.where(use, top, tf.where(whole, 0, (height - fh) // 2))
        left = tf.where(use, left, tf.where(whole, 0, (width - fw) // 2))
        return {"top": top, "left": left, "box_height": h, "box_width": w}

    def resize(self, images, params, flip_horizontal=None, flip_vertical=None,
               kernel: str = "tensorflow"):
        """The resized crops (float32), flipped where asked, by ``kernels.resized_crops``."""
        return kernels.resized_crops(images, params["top"], params["left"], params["box_height"],
                                     params["box_width"], self.height, self.width,
                                     flip_horizontal, flip_vertical, kernel=kernel)

    def apply(self, images, labels, params):
        return self.resize(images, params), labels

    def apply_targets(self, targets, params, height, width):
        box = (params["top"], params["left"], params["box_height"], params["box_width"])
        if "masks" in targets:
            targets = dict(targets)
            targets["masks"] = kernels.nearest_crops(targets["masks"], *box, self.height,
                                                     self.width)
        return T.crop_resize_boxes(targets, *box, self.height, self.width)

    def mask_map(self, params, height, width):
        top, left, box_h, box_w = (tf.cast(params[k], tf.float32) for k in
                                   ("top", "left", "box_height", "box_width"))
        zero = 0.0 * top
        return (box_w / self.width, zero, left, zero, box_h / self.height, top), None

    def get_config(self):
        return {"height": self.height, "width": self.width, "scale": self.scale,
                "ratio": self.ratio, "p": self.p}


def _map_index(i, size, fill_mode):
    """Maps integer coordinates outside ``[0, size)`` by the fill mode; returns (index, valid)."""
    if fill_mode == "wrap":
        return tf.math.floormod(i, size), tf.ones_like(i, tf.bool)
    if fill_mode == "reflect":
        m = tf.math.floormod(i, 2 * size)
        return tf.where(m < size, m, 2 * size - 1 - m), tf.ones_like(i, tf.bool)
    valid = (i >= 0) & (i < size)
    return tf.clip_by_value(i, 0, size - 1), valid if fill_mode == "constant" else tf.ones_like(valid)


def sample_points(images, ys, xs, interpolation, fill_mode, fill_value):
    """Samples ``images`` at float coordinates (batch, h, w) with the given fill mode."""
    _, height, width, channels = images.shape
    flat = tf.reshape(images, [-1, height * width, channels])
    out_shape = tf.concat([tf.shape(ys), [channels]], 0)
    fill = tf.cast(fill_value, images.dtype)

    def tap(yi, xi):
        yi, vy = _map_index(yi, height, fill_mode)
        xi, vx = _map_index(xi, width, fill_mode)
        idx = tf.reshape(yi * width + xi, [tf.shape(ys)[0], -1])
        vals = tf.reshape(tf.gather(flat, idx, batch_dims=1), out_shape)
        return tf.where((vy & vx)[..., None], vals, fill)

    if interpolation == "nearest":  # the pixel containing the point; halves round up
        return tap(tf.cast(tf.floor(ys + 0.5), tf.int32), tf.cast(tf.floor(xs + 0.5), tf.int32))
    y0, x0 = tf.floor(ys), tf.floor(xs)
    wy, wx = (ys - y0)[..., None], (xs - x0)[..., None]
    y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
    bottom = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


@serializable
class RandomAffine(AugmentOp):
    """Random rotation, translation, zoom and shear composed into one affine map, resampled once.

    The map acts about the image centre: ``x' = c + t + R(angle) Shear(shear) Zoom(zoom) (x - c)``;
    output pixels are pulled from the inverse map. Arguments follow torchvision's ``RandomAffine``.

    Args:
        degrees: rotation range in degrees (a number ``d`` means ``(-d, d)``), counter-clockwise.
        translate: ``(fx, fy)`` maximal absolute shift as a fraction of width and height, in [0, 1].
        zoom: ``(min, max)`` scale factors (> 0); a number ``z`` means ``(1 - z, 1 + z)``.
        shear: horizontal shear range in degrees (a number ``s`` means ``(-s, s)``), within (-90, 90).
        interpolation: ``"bilinear"`` or ``"nearest"``.
        fill_mode: ``"constant"``, ``"nearest"``, ``"reflect"`` or ``"wrap"`` (as Keras's layers).
        fill_value: value outside the image in constant mode, in [0, 255].
        p: probability of transforming an example.
    """

    def __init__(self, degrees=0.0, translate=(0.0, 0.0), zoom=(1.0, 1.0), shear=0.0,
                 interpolation: str = "bilinear", fill_mode: str = "constant",
                 fill_value: float = 0.0, p: float = 1.0):
        super().__init__(p)
        o = self.owner
        self.degrees = _sym(o, "degrees", degrees, -360.0, 360.0)
        try:
            tx, ty = translate
        except (TypeError, ValueError):
            spec_error(o, "translate", "a pair (fx, fy)", translate, TypeError)
        self.translate = (check_range(o, "translate[0]", tx, 0.0, 1.0),
                          check_range(o, "translate[1]", ty, 0.0, 1.0))
        self.zoom = _sym(o, "zoom", zoom, 0.0, None, center=1.0)
        if self.zoom[0] <= 0:
            spec_error(o, "zoom", "a range of factors > 0", zoom)
        self.shear = _sym(o, "shear", shear, -89.0, 89.0)
        self.interpolation = check_choice(o, "interpolation", interpolation, ("bilinear", "nearest"))
        self.fill_mode = check_choice(o, "fill_mode", fill_mode, FILL_MODES)
        self.fill_value = check_range(o, "fill_value", fill_value, 0.0, 255.0)

    def sample(self, key, batch_size, height, width):
        b = [batch_size]
        apply = coin(fold(key, 0), batch_size, self.p)
        angle = uniform(fold(key, 1), b, *self.degrees)
        tx = uniform(fold(key, 2), b, -self.translate[0], self.translate[0]) * width
        ty = uniform(fold(key, 3), b, -self.translate[1], self.translate[1]) * height
        zoom = tf.exp(uniform(fold(key, 4), b, math.log(self.zoom[0]), math.log(self.zoom[1])))
        shear = uniform(fold(key, 5), b, *self.shear)
        zero = tf.zeros(b)
        return {"angle": tf.where(apply, angle, zero), "tx": tf.where(apply, tx, zero),
                "ty": tf.where(apply, ty, zero), "zoom": tf.where(apply, zoom, zero + 1.0),
                "shear": tf.where(apply, shear, zero)}

    @staticmethod
    def forward_matrix(params):
        """Per-example ``M = R Shear Zoom`` as (m00, m01, m10, m11), acting on ``(x, y)``.

        x points right and y down; a positive angle turns the picture counter-clockwise on screen:
        ``R = [[cos, sin], [-sin, cos]]``, ``Shear = [[1, tan(shear)], [0, 1]]``, ``Zoom = zoom I``.
        """
        theta = params["angle"] * (math.pi / 180.0)
        sh = tf.tan(params["shear"] * (math.pi / 180.0))
        z = params["zoom"]
        cos, sin = tf.cos(theta), tf.sin(theta)
        return cos * z, (cos * sh + sin) * z, -sin * z, (-sin * sh + cos) * z

    @classmethod
    def inverse_matrix(cls, params):
        """Per-example inverse of :meth:`forward_matrix` as (a, b, c, d): src = [[a, b], [c, d]] dst."""
        m00, m01, m10, m11 = cls.forward_matrix(params)
        det = m00 * m11 - m01 * m10
        return m11 / det, -m01 / det, -m10 / det, m00 / det

    def _warp(self, images, params, interpolation, fill_value):
        height, width = images.shape[1], images.shape[2]
        a, b, c, d = (v[:, None, None] for v in self.inverse_matrix(params))
        cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
        ys = tf.range(height, dtype=tf.float32)[None, :, None] - cy - params["ty"][:, None, None]
        xs = tf.range(width, dtype=tf.float32)[None, None, :] - cx - params["tx"][:, None, None]
        src_x = a * xs + b * ys + cx
        src_y = c * xs + d * ys + cy
        return sample_points(images, src_y, src_x, interpolation, self.fill_mode, fill_value)

    def apply(self, images, labels, params):
        return self._warp(images, params, self.interpolation, self.fill_value), labels

    def apply_targets(self, targets, params, height, width):
        """Masks by nearest neighbour (0 outside the image in ``"constant"`` mode); each box becomes
        the box enclosing its four moved corners. Boxes are not replicated by the reflect and wrap
        fill modes: they describe the object itself."""
        if "masks" in targets:
            targets = dict(targets)
            targets["masks"] = self._warp(targets["masks"], params, "nearest", 0)
        return T.affine_boxes(targets, self.forward_matrix(params), (params["tx"], params["ty"]),
                              height, width)

    def mask_map(self, params, height, width):
        if self.fill_mode != "constant":
            return None  # reflect, wrap and nearest fills are not affine
        a, b, c, d = self.inverse_matrix(params)
        ox = width / 2.0 + params["tx"]
        oy = height / 2.0 + params["ty"]
        return (a, b, width / 2.0 - a * ox - b * oy, c, d, height / 2.0 - c * ox - d * oy), \
            (height, width)

    def get_config(self):
        return {"degrees": self.degrees, "translate": self.translate, "zoom": self.zoom,
                "shear": self.shear, "interpolation": self.interpolation,
                "fill_mode": self.fill_mode, "fill_value": self.fill_value, "p": self.p}


# ------------------------------------------------------------------------------------- erasing
@serializable
class Cutout(AugmentOp):
    """Fills a ``(height, width)`` box centred at a uniform pixel (clipped at the borders).

    Args:
        height, width: box size in pixels (at most the image size).
        fill_value: value written into the box, in [0, 255].
        p: probability of cutting an example.

    Reference: DeVries & Taylor, "Improved Regularization of CNNs with Cutout", 2017.
    """

    def __init__(self, height: int, width: int, fill_value: float = 0.0, p: float = 1.0):
        super().__init__(p)
        self.height = check_int(self.owner, "height", height, 1)
        self.width = check_int(self.owner, "width", width, 1)
        self.fill_value = check_range(self.owner, "fill_value", fill_value, 0.0, 255.0)

    def output_spec(self, images, labels):
        h, w, _ = spatial(self.owner, images)
        if self.height > h or self.width > w:
            spec_error(self.owner, "(height, width)", f"at most the image size ({h}, {w})",
                       (self.height, self.width))
        return images, labels

    def sample(self, key, batch_size, height, width):
        apply = coin(fold(key, 0), batch_size, self.p)
        top = randint(fold(key, 1), [batch_size], height) - self.height // 2
        left = randint(fold(key, 2), [batch_size], width) - self.width // 2
        return {"top": top, "left": left,
                "box_height": tf.where(apply, self.height, 0),
                "box_width": tf.where(apply, self.width, 0)}

    def apply(self, images, labels, params):
        mask = box_mask(images.shape[1], images.shape[2], params["top"], params["left"],
                        params["box_height"], params["box_width"])
        return tf.where(mask, tf.cast(self.fill_value, images.dtype), images), labels

    def get_config(self):
        return {"height": self.height, "width": self.width, "fill_value": self.fill_value,
                "p": self.p}


@serializable
class RandomErasing(AugmentOp):
    """Erases a box of random area and aspect ratio that lies inside the image.

    Args:
        scale: range of the erased area as a fraction of the image, within (0, 1].
        ratio: range of the box aspect ratio height / width (as torchvision's ``RandomErasing``).
        fill_value: value written into the box, in [0, 255].
        p: probability of erasing an example.

    Reference: Zhong et al., "Random Erasing Data Augmentation", AAAI 2020.
    """

    def __init__(self, scale=(0.02, 0.33), ratio=(0.3, 3.3), fill_value: float = 0.0,
                 p: float = 0.5):
        super().__init__(p)
        self.scale = check_pair(self.owner, "scale", scale, 0.0, 1.0)
        self.ratio = check_pair(self.owner, "ratio", ratio, 0.0, None)
        if self.ratio[0] <= 0:
            spec_error(self.owner, "ratio", "a range of positive numbers", ratio)
        self.fill_value = check_range(self.owner, "fill_value", fill_value, 0.0, 255.0)

    def sample(self, key, batch_size, height, width):
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        top, left, h, w, found = sample_boxes(key, batch_size, height, width, self.scale,
                                              log_ratio, ratio_is_hw=True)
        use = coin(fold(key, 0), batch_size, self.p) & found
        return {"top": top, "left": left, "box_height": tf.where(use, h, 0),
                "box_width": tf.where(use, w, 0)}

    apply = Cutout.apply

    def get_config(self):
        return {"scale": self.scale, "ratio": self.ratio, "fill_value": self.fill_value,
                "p": self.p}


# -------------------------------------------------------------------------------------- colour
class _FactorOp(AugmentOp):
    """An op with one per-example factor drawn uniformly from the range ``factor``.

    Subclasses set ``identity`` (the factor that leaves an image unchanged, also the centre of a
    single-number ``factor``), ``bounds`` (the allowed factor range) and ``needs_rgb``.
    """

    identity = 1.0
    bounds = (0.0, None)
    needs_rgb = False

    def __init__(self, factor=0.2, p: float = 1.0):
        super().__init__(p)
        self.factor = _sym(self.owner, "factor", factor, *self.bounds, center=self.identity)

    def output_spec(self, images, labels):
        if self.needs_rgb:
            _rgb(self.owner, images)
        return images, labels

    def sample(self, key, batch_size, height, width):
        apply = coin(fold(key, 0), batch_size, self.p)
        draw = uniform(fold(key, 1), [batch_size], *self.factor)
        return {"factor": tf.where(apply, draw, self.identity)}

    def get_config(self):
        return {"factor": self.factor, "p": self.p}


@serializable
class RandomBrightness(_FactorOp):
    """Multiplies each image by a factor drawn from ``factor`` (torchvision's ColorJitter brightness).

    Args:
        factor: a number ``b`` means factors in ``[max(0, 1 - b), 1 + b]``; a pair is ``(min, max)``.
        p: probability of changing an example.
    """


    def apply(self, images, labels, params):
        return clip255(images * params["factor"][:, None, None, None]), labels


@serializable
class RandomContrast(_FactorOp):
    """Blends each image with its mean luma: ``mean + f (x - mean)``, as torchvision's ColorJitter.

    Args:
        factor: a number ``c`` means factors in ``[max(0, 1 - c), 1 + c]``; a pair is ``(min, max)``.
        p: probability of changing an example.
    """


    def apply(self, images, labels, params):
        lum = gray(images) if images.shape[-1] == 3 else images
        mean = tf.reduce_mean(lum, axis=[1, 2, 3], keepdims=True)
        f = params["factor"][:, None, None, None]
        return clip255(mean + f * (images - mean)), labels


@serializable
class RandomSaturation(_FactorOp):
    """Blends each RGB image with its grayscale version: ``g + f (x - g)``.

    Args:
        factor: a number ``s`` means factors in ``[max(0, 1 - s), 1 + s]``; a pair is ``(min, max)``.
        p: probability of changing an example.
    """

    needs_rgb = True

    def apply(self, images, labels, params):
        g = gray(images)
        return clip255(g + params["factor"][:, None, None, None] * (images - g)), labels


def rgb_to_hsv(images):
    """RGB in [0, 255] to HSV with hue, saturation and value in [0, 1]."""
    x = images / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx = tf.reduce_max(x, axis=-1)
    mn = tf.reduce_min(x, axis=-1)
    d = mx - mn
    safe = tf.where(d > 0, d, 1.0)
    hue = tf.where(mx == r, tf.math.floormod((g - b) / safe, 6.0),
                   tf.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = tf.where(d > 0, hue / 6.0, 0.0)
    sat = tf.where(mx > 0, d / tf.where(mx > 0, mx, 1.0), 0.0)
    return hue, sat, mx


def hsv_to_rgb(hue, sat, val):
    """Inverse of ``rgb_to_hsv``, back to [0, 255]."""
    h6 = hue * 6.0

    def channel(n):
        k = tf.math.floormod(n + h6, 6.0)
        return val - val * sat * tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0)

    return tf.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1) * 255.0


@serializable
class RandomHue(_FactorOp):
    """Rotates the hue of each RGB image by a per-example shift (a fraction of a full turn).

    Args:
        factor: a number ``h`` in [0, 0.5] means shifts in ``[-h, h]``; a pair is ``(min, max)``
            within [-0.5, 0.5].
        p: probability of changing an example.
    """

    identity = 0.0
    bounds = (-0.5, 0.5)
    needs_rgb = True

    def __init__(self, factor=0.1, p: float = 1.0):
        super().__init__(factor, p)

    def apply(self, images, labels, params):
        hue, sat, val = rgb_to_hsv(images)
        hue = tf.math.floormod(hue + params["factor"][:, None, None], 1.0)
        return clip255(hsv_to_rgb(hue, sat, val)), labels


@serializable
class RandomGrayscale(AugmentOp):
    """Replaces each RGB image by its luma (BT.601) on all three channels with probability ``p``."""

    def __init__(self, p: float = 0.1):
        super().__init__(p)

    def output_spec(self, images, labels):
        _rgb(self.owner, images)
        return images, labels

    def apply(self, images, labels, params):
        return select(params["apply"], tf.broadcast_to(gray(images), tf.shape(images)),
                      images), labels


# ------------------------------------------------------------------------------ blur and noise
@serializable
class GaussianBlur(AugmentOp):
    """Separable Gaussian blur with a per-example sigma, reflect padding (as torchvision).

    Args:
        kernel_size: odd kernel size >= 3.
        sigma: a number (fixed sigma) or a ``(min, max)`` range, in pixels, > 0.
        p: probability of blurring an example.
    """

    def __init__(self, kernel_size: int = 3, sigma=(0.1, 2.0), p: float = 1.0):
        super().__init__(p)
        self.kernel_size = check_int(self.owner, "kernel_size", kernel_size, 3)
        if self.kernel_size % 2 == 0:
            spec_error(self.owner, "kernel_size", "an odd integer", kernel_size)
        if isinstance(sigma, (tuple, list)):
            self.sigma = check_pair(self.owner, "sigma", sigma, 0.0, None)
        else:
            s = check_number(self.owner, "sigma", sigma)
            self.sigma = (s, s)
        if self.sigma[0] <= 0:
            spec_error(self.owner, "sigma", "positive", sigma)

    def output_spec(self, images, labels):
        h, w, _ = spatial(self.owner, images)
        if self.kernel_size // 2 >= min(h, w):
            spec_error(self.owner, "kernel_size", f"smaller than 2 * min(height, width) - 1 "
                       f"= {2 * min(h, w) - 1}", self.kernel_size)
        return images, labels

    def sample(self, key, batch_size, height, width):
        apply = coin(fold(key, 0), batch_size, self.p)
        sigma = uniform(fold(key, 1), [batch_size], *self.sigma)
        return {"apply": apply, "sigma": sigma}

    def kernels(self, sigma):
        r = self.kernel_size // 2
        t = tf.range(-r, r + 1, dtype=tf.float32)[None, :]
        k = tf.exp(-0.5 * tf.square(t / sigma[:, None]))
        return k / tf.reduce_sum(k, axis=1, keepdims=True)

    def apply(self, images, labels, params):
        k = self.kernels(params["sigma"])
        r = self.kernel_size // 2
        h, w = images.shape[1], images.shape[2]
        x = tf.pad(images, [[0, 0], [r, r], [0, 0], [0, 0]], mode="REFLECT")
        x = sum(k[:, t, None, None, None] * x[:, t:t + h] for t in range(self.kernel_size))
        x = tf.pad(x, [[0, 0], [0, 0], [r, r], [0, 0]], mode="REFLECT")
        x = sum(k[:, t, None, None, None] * x[:, :, t:t + w] for t in range(self.kernel_size))
        return select(params["apply"], x, images), labels

    def get_config(self):
        return {"kernel_size": self.kernel_size, "sigma": self.sigma, "p": self.p}


@serializable
class GaussianNoise(AugmentOp):
    """Adds Gaussian noise with a per-example standard deviation (pixel units), then clips.

    Args:
        stddev: a number (fixed) or a ``(min, max)`` range in pixel units of [0, 255], >= 0.
        p: probability of adding noise to an example.
    """

    def __init__(self, stddev=(0.0, 10.0), p: float = 1.0):
        super().__init__(p)
        if isinstance(stddev, (tuple, list)):
            self.stddev = check_pair(self.owner, "stddev", stddev, 0.0, None)
        else:
            s = check_range(self.owner, "stddev", stddev, 0.0, None)
            self.stddev = (s, s)

    def sample(self, key, batch_size, height, width):
        apply = coin(fold(key, 0), batch_size, self.p)
        std = tf.where(apply, uniform(fold(key, 1), [batch_size], *self.stddev), 0.0)
        return {"stddev": std, "noise_key": fold(key, 2)}

    def apply(self, images, labels, params):
        noise = tf.random.stateless_normal(tf.shape(images), params["noise_key"])
        return clip255(images + noise * params["stddev"][:, None, None, None]), labels

    def get_config(self):
        return {"stddev": self.stddev, "p": self.p}
