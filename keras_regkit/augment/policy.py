"""RandAugment built from the library's batched ops, with one op choice per example and round."""

from __future__ import annotations

import math

import tensorflow as tf

from keras_regkit._validation import check_int, check_range
from keras_regkit.augment.base import AugmentOp, coin, fold, randint, serializable, uniform
from keras_regkit.augment.image import RandomAffine, clip255, gray, spatial

# The candidate transforms. The four geometric ones share a single affine resampling per round.
OPS = ("identity", "rotate", "shear_x", "translate_x", "translate_y", "brightness", "contrast",
       "color", "solarize", "posterize")


@serializable
class RandAugment(AugmentOp):
    """RandAugment: ``num_ops`` rounds, each applying one uniformly chosen transform per example.

    All transforms share one ``magnitude`` m in [0, 10] (random sign where it applies): rotation
    up to 30 m/10 degrees, horizontal shear up to 0.3 m/10 (as tan), translation up to 0.45 m/10 of
    the size, brightness/contrast/colour factors 1 +- 0.9 m/10, solarize threshold 255 (1 - m/10),
    posterize to 8 - round(4 m/10) bits, or identity. Each round is vectorized: every example's
    choice is a per-example parameter of the same batched ops, not a branch.

    Args:
        num_ops: transforms applied in sequence per example (>= 1).
        magnitude: shared strength in [0, 10].
        fill_value: value of pixels uncovered by the geometric transforms, in [0, 255].
        p: probability of augmenting an example.

    Reference: Cubuk et al., "RandAugment: Practical Automated Data Augmentation with a Reduced
    Search Space", NeurIPS Workshops 2020.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, fill_value: float = 128.0,
                 p: float = 1.0):
        super().__init__(p)
        self.num_ops = check_int(self.owner, "num_ops", num_ops, 1)
        self.magnitude = check_range(self.owner, "magnitude", magnitude, 0.0, 10.0)
        self.fill_value = check_range(self.owner, "fill_value", fill_value, 0.0, 255.0)
        self._affine = RandomAffine(fill_value=self.fill_value)

    def output_spec(self, images, labels):
        spatial(self.owner, images)
        return images, labels

    def sample(self, key, batch_size, height, width):
        apply = coin(fold(key, 0), batch_size, self.p)
        params = {}
        for r in range(self.num_ops):
            k = fold(key, r + 1)
            choice = randint(fold(k, 0), [batch_size], len(OPS))
            params[f"op{r}"] = tf.where(apply, choice, 0)
            params[f"sign{r}"] = tf.where(uniform(fold(k, 1), [batch_size]) < 0.5, -1.0, 1.0)
        return params

    def _amount(self, op, sign, name, scale):
        return tf.where(tf.equal(op, OPS.index(name)), sign * scale * (self.magnitude / 10.0), 0.0)

    def _affine_params(self, op, sign, height, width):
        """The round's affine parameters: the identity for examples drawing a colour op."""
        return {"angle": self._amount(op, sign, "rotate", 30.0),
                "shear": self._amount(op, sign, "shear_x", math.degrees(math.atan(0.3))),
                "tx": self._amount(op, sign, "translate_x", 0.45 * width),
                "ty": self._amount(op, sign, "translate_y", 0.45 * height),
                "zoom": tf.ones_like(sign)}

    def _round(self, images, op, sign):
        m = self.magnitude / 10.0
        height, width = images.shape[1], images.shape[2]

        def amount(name, scale):
            return self._amount(op, sign, name, scale)

        affine = self._affine_params(op, sign, height, width)
        geometric = (op >= 1) & (op <= 4)
        moved = self._affine.apply(images, None, affine)[0]
        x = tf.where(geometric[:, None, None, None], moved, images)

        def factor(name):
            return (1.0 + amount(name, 0.9))[:, None, None, None]

        x = x * factor("brightness")
        lum = gray(x) if x.shape[-1] == 3 else x
        mean = tf.reduce_mean(lum, axis=[1, 2, 3], keepdims=True)
        x = mean + factor("contrast") * (x - mean)
        if x.shape[-1] == 3:
            g = gray(x)
            x = g + factor("color") * (x - g)
        x = clip255(x)
        is_op = lambda name: tf.equal(op, OPS.index(name))[:, None, None, None]  # noqa: E731
        x = tf.where(is_op("solarize") & (x >= 255.0 * (1.0 - m)), 255.0 - x, x)
        step = float(2 ** round(4 * m))
        return tf.where(is_op("posterize"), tf.floor(x / step) * step, x)

    def apply(self, images, labels, params):
        for r in range(self.num_ops):
            images = self._round(images, params[f"op{r}"], params[f"sign{r}"])
        return images, labels

    def apply_targets(self, targets, params, height, width):
        """Masks and boxes follow the rotations, shears and translations; colour rounds leave
        them alone (their affine parameters are the identity)."""
        for r in range(self.num_ops):
            affine = self._affine_params(params[f"op{r}"], params[f"sign{r}"], height, width)
            targets = self._affine.apply_targets(targets, affine, height, width)
        return targets

    def get_config(self):
        return {"num_ops": self.num_ops, "magnitude": self.magnitude,
                "fill_value": self.fill_value, "p": self.p}
