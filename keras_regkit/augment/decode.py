"""Ops that take a batch of encoded images (JPEG, PNG, BMP, GIF) and decode only what they keep.

``DecodeRandomResizedCrop`` draws each example's box from the image size in the file's header,
then decodes only that window (and, for JPEG boxes at least twice the output size, at 1/2, 1/4 or
1/8 scale from the DCT coefficients); ``DecodeCenterCrop`` does the same for the central box used
in evaluation. Both must come first in a ``Pipeline``; the batch's ``images`` are then a (batch,)
``tf.string`` tensor, e.g. from ``image_files(...).batch(b)``, and its ``segmentation_masks``, when
present, encoded masks (PNG) of the same sizes, decoded through the same window by nearest
neighbour. Boxes are given in the coordinates of each full image (``rel_xyxy`` relative to it).
"""

from __future__ import annotations

import math

import tensorflow as tf

from keras_regkit._validation import check_choice, check_int, check_range
from keras_regkit.augment import files as F
from keras_regkit.augment import targets as T
from keras_regkit.augment.base import AugmentOp, coin, fold, serializable, spec_error
from keras_regkit.augment.image import check_scale_ratio, sample_boxes


def _check_encoded(owner: str, images: tf.TensorSpec) -> None:
    if images.dtype != tf.string or images.shape.rank != 1:
        spec_error(owner, "images", "a (batch,) tf.string batch of encoded images (batch the "
                   "dataset of image_files first)", f"{images.dtype.name} of shape {images.shape}")


def sample_sized_boxes(key, sizes, scale, ratio, attempts: int = 10):
    """Random resized crop boxes for images of per-example ``sizes`` ((batch, 2) int32 h, w).

    ``image.sample_boxes`` (torchvision's sampler) on each example's own size; where no attempt
    fits, the central box with the aspect ratio clamped into ``ratio``.
    Returns (top, left, height, width, found) as (batch,) tensors.
    """
    image_h, image_w = sizes[:, 0], sizes[:, 1]
    top, left, h, w, found = sample_boxes(key, tf.shape(sizes)[0], image_h, image_w, scale,
                                          (math.log(ratio[0]), math.log(ratio[1])), attempts)
    # Fallback: the largest central box with the aspect ratio clamped into ``ratio``.
    height, width = tf.cast(image_h, tf.float32), tf.cast(image_w, tf.float32)
    in_ratio = width / height
    fw = tf.where(in_ratio > ratio[1], tf.round(height * ratio[1]), width)
    fh = tf.where(in_ratio < ratio[0], tf.round(width / ratio[0]), height)
    fh, fw = tf.cast(fh, tf.int32), tf.cast(fw, tf.int32)
    h = tf.where(found, h, fh)
    w = tf.where(found, w, fw)
    top = tf.where(found, top, (image_h - fh) // 2)
    left = tf.where(found, left, (image_w - fw) // 2)
    return top, left, h, w, found


class _DecodeOp(AugmentOp):
    """Shared machinery: output size, channels, decoding of images and masks, boxes."""

    decodes = True
    xla_sampling = False  # sampling reads the file headers

    def __init__(self, height: int, width: int, channels: int = 3, p: float = 1.0):
        super().__init__(p)
        self.height = check_int(self.owner, "height", height, 1)
        self.width = check_int(self.owner, "width", width, 1)
        self.channels = check_choice(self.owner, "channels", channels, F.CHANNELS)

    def output_spec(self, images, labels):
        _check_encoded(self.owner, images)
        return tf.TensorSpec([images.shape[0], self.height, self.width, self.channels],
                             tf.float32), labels

    def masks_spec(self, masks: tf.TensorSpec) -> tf.TensorSpec:
        """Encoded masks in, decoded (batch, height, width, 1) uint8 out."""
        if masks.dtype != tf.string or masks.shape.rank != 1:
            spec_error(self.owner, "segmentation_masks", "a (batch,) tf.string batch of encoded "
                       "masks (PNG) when the images are encoded",
                       f"{masks.dtype.name} of shape {masks.shape}")
        return tf.TensorSpec([masks.shape[0], self.height, self.width, 1], tf.uint8)

    def box(self, key, sizes):
        raise NotImplementedError

    def sample(self, key, batch_size, height, width):
        raise TypeError(f"{self.owner}: sample needs the encoded images; use sample_encoded")

    def sample_encoded(self, key, encoded) -> dict:
        """Reads each image's size from its header and draws its box."""
        sizes = F.image_sizes(encoded)
        top, left, h, w = self.box(key, sizes)
        return {"top": top, "left": left, "box_height": h, "box_width": w,
                "image_height": sizes[:, 0], "image_width": sizes[:, 1]}

    def decode(self, encoded, params, flip_horizontal=None, kernel: str = "tensorflow",
               method: str = "bilinear", channels: int | None = None):
        """Decodes each example's box at the output size (float32; uint8 for nearest)."""
        return F.decode_resized_crops(encoded, params["top"], params["left"],
                                      params["box_height"], params["box_width"], self.height,
                                      self.width, flip_horizontal,
                                      channels=channels or self.channels, method=method,
                                      kernel=kernel)

    def apply(self, images, labels, params):
        return self.decode(images, params), labels

    def apply_targets(self, targets, params, height, width):
        """Boxes only: masks are decoded through the same window by the pipeline."""
        return T.crop_resize_boxes(targets, params["top"], params["left"], params["box_height"],
                                   params["box_width"], self.height, self.width)

    def get_config(self):
        return {"height": self.height, "width": self.width, "channels": self.channels,
                "p": self.p}


@serializable
class DecodeRandomResizedCrop(_DecodeOp):
    """Random resized crop of encoded images, decoding only the crop (for training).

    Each example's box is drawn as by ``RandomResizedCrop`` (area fraction uniform in ``scale``,
    aspect ratio width / height log-uniform in ``ratio``, 10 attempts, then the central box) from
    the image size in the file header; only that window is decoded and resized bilinearly to
    ``(height, width)``. A JPEG box at least 2x, 4x or 8x the output size in both dimensions is
    decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT-domain scaling; slightly smoother than a
    full-resolution bilinear resize). A ``RandomFlip`` that follows is fused into the decode.

    Args:
        height, width: output size.
        scale: range of the box area as a fraction of the image area, within (0, 1].
        ratio: range of the box aspect ratio width / height, positive.
        channels: 3 (RGB; grayscale files are repeated, alpha dropped) or 1 (luma).
        p: probability of a random box; other examples are decoded whole and resized.

    Call arguments (in a ``Pipeline``): a (batch,) ``tf.string`` batch of encoded images.

    Reference: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015.
    """

    def __init__(self, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 channels: int = 3, p: float = 1.0):
        super().__init__(height, width, channels, p)
        self.scale, self.ratio = check_scale_ratio(self.owner, scale, ratio)

    def box(self, key, sizes):
        top, left, h, w, _ = sample_sized_boxes(key, sizes, self.scale, self.ratio)
        apply = coin(fold(key, 0), tf.shape(sizes)[0], self.p)
        zero = tf.zeros_like(top)
        return (tf.where(apply, top, zero), tf.where(apply, left, zero),
                tf.where(apply, h, sizes[:, 0]), tf.where(apply, w, sizes[:, 1]))

    def get_config(self):
        return {"height": self.height, "width": self.width, "scale": self.scale,
                "ratio": self.ratio, "channels": self.channels, "p": self.p}


@serializable
class DecodeCenterCrop(_DecodeOp):
    """Central crop of encoded images, decoding only the crop (for evaluation).

    The box is the largest central box with the output's aspect ratio, shrunk by
    ``crop_fraction`` in each dimension: for a square output, a square of side
    ``crop_fraction * min(image height, image width)``, the usual "resize to size / 0.875 and
    centre-crop" of ImageNet evaluation. It is decoded alone and resized bilinearly.

    Args:
        height, width: output size.
        crop_fraction: the fraction of the largest central box kept, in (0, 1].
        channels: 3 or 1, as ``DecodeRandomResizedCrop``.
    """

    def __init__(self, height: int, width: int, crop_fraction: float = 0.875,
                 channels: int = 3):
        super().__init__(height, width, channels, 1.0)
        self.crop_fraction = check_range(self.owner, "crop_fraction", crop_fraction, 0.0, 1.0,
                                         low_inclusive=False)

    def box(self, key, sizes):
        height = tf.cast(sizes[:, 0], tf.float32)
        width = tf.cast(sizes[:, 1], tf.float32)
        aspect = self.width / self.height
        fit_h = tf.minimum(height, width / aspect)  # largest central box of the output's aspect
        h = tf.maximum(tf.round(fit_h * self.crop_fraction), 1.0)
        w = tf.clip_by_value(tf.round(fit_h * aspect * self.crop_fraction), 1.0, width)
        h = tf.minimum(h, height)
        top, left = (height - h) // 2, (width - w) // 2
        return tuple(tf.cast(v, tf.int32) for v in (top, left, h, w))

    def get_config(self):
        return {"height": self.height, "width": self.width,
                "crop_fraction": self.crop_fraction, "channels": self.channels}
