"""The contract shared by every augmentation op.

An op is a small object holding checked hyper-parameters. Image ops split their work in two:

* ``sample(key, batch_size, height, width)`` draws every random parameter of a batch (one value per
  example) from stateless random ops keyed by ``key``; it returns a dict of tensors.
* ``apply(images, labels, params)`` is a pure, deterministic function of the float32 images, the labels
  and those parameters, written only with XLA-compilable TensorFlow ops (gathers, ``where`` and
  broadcast ``iota`` comparisons, no per-example ``map``).

The split makes the math testable against NumPy given the drawn parameters, and lets ``Pipeline``
draw the parameters in ordinary graph mode (some samplers, e.g. Beta draws, have no XLA kernel) while
running every ``apply`` in one ``jit_compile=True`` function.

Text ops work on ``tf.string`` batches; they override ``augment(texts, labels, key)`` directly.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from keras_regkit._validation import check_range

IMAGE = "image"
TEXT = "text"


def fold(key: tf.Tensor, data: int) -> tf.Tensor:
    """Derives an independent stateless key from ``key`` and a small integer."""
    return tf.random.experimental.stateless_fold_in(key, data)


def uniform(key, shape, low=0.0, high=1.0) -> tf.Tensor:
    """Stateless float32 uniform draws in ``[low, high)``."""
    return tf.random.stateless_uniform(shape, key, minval=low, maxval=high, dtype=tf.float32)


def randint(key, shape, high) -> tf.Tensor:
    """Stateless int32 draws in ``[0, high)``; ``high`` may be a per-example tensor (>= 1)."""
    high = tf.cast(high, tf.float32)
    draw = tf.floor(uniform(key, shape) * high)
    return tf.cast(tf.minimum(draw, high - 1.0), tf.int32)


def coin(key, batch_size, p: float) -> tf.Tensor:
    """Per-example booleans, True with probability ``p``."""
    return uniform(key, [batch_size]) < p


def beta(key, shape, alpha: float) -> tf.Tensor:
    """Stateless symmetric Beta(alpha, alpha) draws as a ratio of two Gamma draws."""
    g1 = tf.random.stateless_gamma(shape, fold(key, 1), alpha=alpha, dtype=tf.float32)
    g2 = tf.random.stateless_gamma(shape, fold(key, 2), alpha=alpha, dtype=tf.float32)
    total = g1 + g2
    # Both draws underflow to 0 only for tiny alpha; a fair coin is the limit of Beta(a, a), a -> 0.
    fallback = tf.cast(uniform(fold(key, 3), shape) < 0.5, tf.float32)
    return tf.where(total > 0, g1 / tf.maximum(total, 1e-30), fallback)


def spec_error(owner: str, name: str, allowed: str, value: Any, error=ValueError):
    """Raises the library's standard message for a bad input when a pipeline is applied."""
    raise error(f"{owner}: {name} must be {allowed}, got {value}")


class AugmentOp:
    """Base class of every augmentation op.

    Args:
        p: probability that the op is applied to an example, in [0, 1].

    Subclasses set ``kind`` (``"image"`` or ``"text"``), implement ``sample``/``apply`` (images) or
    ``augment`` (text), ``output_spec`` when they change shapes or need labels, ``apply_targets``
    when they move pixels (masks and boxes must follow), and ``get_config``.
    """

    kind = IMAGE
    changes_labels = False
    carries_targets = True  # False when the op cannot move segmentation masks and boxes
    xla_sampling = True  # False when ``sample`` uses ops without an XLA kernel

    def __init__(self, p: float = 1.0):
        self.p = check_range(self.owner, "p", p, 0.0, 1.0)

    @property
    def owner(self) -> str:
        return type(self).__name__

    # ----------------------------------------------------------------------------------- shapes
    def output_spec(self, images: tf.TensorSpec, labels: tf.TensorSpec | None):
        """Checks the specs of a batch and returns the specs after the op (default: unchanged)."""
        return images, labels

    def targets_spec(self, targets: dict, images_in: tf.TensorSpec, images_out: tf.TensorSpec,
                     labels) -> dict:
        """Checks the masks and boxes a batch carries; returns their specs after the op.

        ``targets`` maps ``"masks"`` and ``"boxes"`` to specs (absent when the batch has none).
        By default masks take the output images' height and width and boxes keep their shape.
        """
        if targets and not self.carries_targets:
            spec_error(self.owner, "inputs", "images without segmentation masks or bounding "
                       "boxes (the op blends images, which no mask or box can follow)",
                       f"a batch with {sorted(targets)}")
        out = dict(targets)
        if "masks" in out:
            shape = out["masks"].shape
            out["masks"] = tf.TensorSpec([shape[0], images_out.shape[1], images_out.shape[2],
                                          shape[3]], out["masks"].dtype)
        return out

    # -------------------------------------------------------------------------------- randomness
    def sample(self, key: tf.Tensor, batch_size, height: int, width: int) -> dict:
        """Draws the random parameters of one batch (override in image ops)."""
        return {"apply": coin(fold(key, 0), batch_size, self.p)}

    def apply(self, images: tf.Tensor, labels, params: dict):
        """Applies the op to float32 images given the drawn parameters."""
        raise NotImplementedError

    def apply_targets(self, targets: dict, params: dict, height: int, width: int) -> dict:
        """Moves segmentation masks and boxes with the pixels (override in geometric ops).

        ``targets`` is the pipeline's internal dict (``keras_regkit.augment.targets``): masks
        (batch, height, width, channels), ``xyxy`` boxes in pixels with their labels and visible
        fractions. ``height`` and ``width`` are the input image's. Pixel-only ops (colour, blur,
        noise, erasing) leave every target as it is, which is this default.
        """
        return targets

    def mask_map(self, params: dict, height: int, width: int):
        """The op's inverse coordinate map, for masks resampled once per run of geometric ops.

        Returns ``(inverse, check_size)``: six (batch,) tensors ``(a, b, c, d, e, f)`` with
        ``x_in = a x + b y + c`` and ``y_in = d x + e y + f`` on continuous pixel coordinates of
        the output, and the input (height, width) outside of which a mask reads 0 (or None when
        no point can leave it). ``None`` (the default) when the map is not affine; the pipeline
        then calls ``apply_targets`` on materialized masks.
        """
        return None

    def augment(self, images, labels, key):
        """Samples and applies in one step (used eagerly, and by text ops)."""
        shape = images.shape
        params = self.sample(key, tf.shape(images)[0], int(shape[1]), int(shape[2]))
        return self.apply(images, labels, params)

    # ----------------------------------------------------------------------------- serialization
    def get_config(self) -> dict:
        return {"p": self.p}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.owner}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = object.__hash__


def serializable(cls):
    """Registers an op with Keras's serialization under ``keras_regkit.augment``.

    The package differs from the layers' ``keras_regkit`` so that an op and a
    layer of the same name (``GaussianNoise``) never overwrite each other.
    """
    return keras.saving.register_keras_serializable(package="keras_regkit.augment")(cls)


def select(mask: tf.Tensor, new: tf.Tensor, old: tf.Tensor) -> tf.Tensor:
    """Per-example ``where``: ``mask`` has shape (batch,)."""
    mask = tf.reshape(mask, [-1] + [1] * (len(new.shape) - 1))
    return tf.where(mask, new, old)
