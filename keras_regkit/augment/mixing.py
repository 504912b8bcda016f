"""Label-changing ops: MixUp, CutMix and label smoothing.

MixUp and CutMix pair each example with another example of the same batch (a random permutation)
and mix the one-hot labels with the same weight as the images. Each example draws its own weight.
"""

from __future__ import annotations

import tensorflow as tf

from keras_regkit._validation import check_int, check_range
from keras_regkit.augment import targets as T
from keras_regkit.augment.base import AugmentOp, beta, coin, fold, randint, serializable, spec_error
from keras_regkit.augment.image import box_mask, clip255, spatial


def _check_onehot(owner: str, labels) -> None:
    if labels is None:
        spec_error(owner, "labels", "given: apply it to a dataset of (images, labels)", "images only")
    if labels.shape.rank != 2 or labels.shape[-1] is None:
        spec_error(owner, "labels", "one-hot of shape (batch, num_classes) (use LabelSmoothing or "
                   "tf.one_hot first for sparse labels)", f"shape {labels.shape}")
    if not labels.dtype.is_floating:
        spec_error(owner, "labels", "a floating dtype (one-hot)", labels.dtype.name, TypeError)


def permutation(key, batch_size):
    """A random permutation of ``range(batch_size)`` (argsort of uniform keys)."""
    return tf.cast(tf.argsort(tf.random.stateless_uniform([batch_size], key)), tf.int32)


def mix_labels(labels, weight, perm):
    """``weight * y + (1 - weight) * y[perm]`` with one weight per example."""
    w = tf.cast(weight, labels.dtype)[:, None]
    return w * labels + (1 - w) * tf.gather(labels, perm)


@serializable
class MixUp(AugmentOp):
    """MixUp: ``x = lam x_i + (1 - lam) x_j``, ``y = lam y_i + (1 - lam) y_j``, ``lam ~ Beta(a, a)``.

    ``j`` is a random permutation of the batch; each example draws its own ``lam``. Labels must be
    one-hot floats of shape (batch, num_classes).

    Args:
        alpha: Beta concentration, > 0.
        p: probability of mixing an example (others keep ``lam = 1``).

    Reference: Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
    """

    changes_labels = True
    carries_targets = False  # a blend of two images has no single mask or box set
    xla_sampling = False  # Beta draws (stateless_gamma) have no XLA kernel

    def __init__(self, alpha: float = 0.2, p: float = 1.0):
        super().__init__(p)
        self.alpha = check_range(self.owner, "alpha", alpha, 0.0, None, low_inclusive=False)

    def output_spec(self, images, labels):
        _check_onehot(self.owner, labels)
        return images, labels

    def sample(self, key, batch_size, height, width):
        apply = coin(fold(key, 0), batch_size, self.p)
        lam = beta(fold(key, 1), [batch_size], self.alpha)
        return {"lam": tf.where(apply, lam, 1.0), "perm": permutation(fold(key, 2), batch_size)}

    def apply(self, images, labels, params):
        lam, perm = params["lam"], params["perm"]
        w = lam[:, None, None, None]
        images = clip255(w * images + (1 - w) * tf.gather(images, perm))
        return images, mix_labels(labels, lam, perm)

    def get_config(self):
        return {"alpha": self.alpha, "p": self.p}


@serializable
class CutMix(AugmentOp):
    """CutMix: pastes a box of a permuted example; labels mixed by the pasted area exactly.

    ``lam ~ Beta(a, a)``; the box has sides ``H sqrt(1 - lam)`` and ``W sqrt(1 - lam)`` (rounded)
    around a uniform centre and is clipped to the image; the label weight of the example itself is
    ``1 - box_area / (H W)`` computed from the clipped box. Labels must be one-hot floats.

    Args:
        alpha: Beta concentration, > 0.
        p: probability of pasting into an example.

    Reference: Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with
    Localizable Features", ICCV 2019.
    """

    changes_labels = True
    xla_sampling = False  # Beta draws (stateless_gamma) have no XLA kernel

    def __init__(self, alpha: float = 1.0, p: float = 1.0):
        super().__init__(p)
        self.alpha = check_range(self.owner, "alpha", alpha, 0.0, None, low_inclusive=False)

    def output_spec(self, images, labels):
        spatial(self.owner, images)
        if labels is not None:  # without labels (segmentation, detection): see targets_spec
            _check_onehot(self.owner, labels)
        return images, labels

    def targets_spec(self, targets, images_in, images_out, labels):
        if labels is None and not targets:
            spec_error(self.owner, "labels", "given (or segmentation masks or bounding boxes): "
                       "apply it to a dataset of (images, labels) or a dict", "images only")
        out = super().targets_spec(targets, images_in, images_out, labels)
        if "boxes" in out:
            shape = out["boxes"].shape
            boxes = None if shape[1] is None else 2 * shape[1]
            out["boxes"] = tf.TensorSpec([shape[0], boxes, 4], out["boxes"].dtype)
        return out

    def sample(self, key, batch_size, height, width):
        apply = coin(fold(key, 0), batch_size, self.p)
        lam = beta(fold(key, 1), [batch_size], self.alpha)
        cut = tf.sqrt(1.0 - lam)
        bh = tf.cast(tf.round(cut * height), tf.int32)
        bw = tf.cast(tf.round(cut * width), tf.int32)
        cy = randint(fold(key, 3), [batch_size], height)
        cx = randint(fold(key, 4), [batch_size], width)
        top = tf.clip_by_value(cy - bh // 2, 0, height)
        left = tf.clip_by_value(cx - bw // 2, 0, width)
        bottom = tf.clip_by_value(cy - bh // 2 + bh, 0, height)
        right = tf.clip_by_value(cx - bw // 2 + bw, 0, width)
        return {"top": top, "left": left,
                "box_height": tf.where(apply, bottom - top, 0),
                "box_width": tf.where(apply, right - left, 0),
                "perm": permutation(fold(key, 2), batch_size)}

    def apply(self, images, labels, params):
        height, width = images.shape[1], images.shape[2]
        mask = box_mask(height, width, params["top"], params["left"], params["box_height"],
                        params["box_width"])
        perm = params["perm"]
        images = tf.where(mask, tf.gather(images, perm), images)
        area = tf.cast(params["box_height"] * params["box_width"], tf.float32)
        weight = 1.0 - area / float(height * width)
        return images, (None if labels is None else mix_labels(labels, weight, perm))

    def apply_targets(self, targets, params, height, width):
        """Pastes the partner's mask into the box; keeps both examples' boxes.

        The example's own boxes lose the pasted area from their visible fraction (their corners
        are kept); the partner's boxes are clipped to the pasted box. The output therefore holds
        twice as many boxes as the input: the own ones, then the partner's.
        """
        top, left = params["top"], params["left"]
        bh, bw, perm = params["box_height"], params["box_width"], params["perm"]
        out = dict(targets)
        if "masks" in targets:
            mask = box_mask(height, width, top, left, bh, bw)
            out["masks"] = tf.where(mask, tf.gather(targets["masks"], perm), targets["masks"])
        if "boxes" in targets:
            own = targets["boxes"]
            paste = tf.cast(tf.stack([left, top, left + bw, top + bh], axis=-1), tf.float32)
            paste = paste[:, None, :]
            overlap = T.box_area(tf.concat([tf.maximum(own[..., :2], paste[..., :2]),
                                            tf.minimum(own[..., 2:], paste[..., 2:])], -1))
            area = T.box_area(own)
            covered = tf.where(area > 0, overlap / tf.where(area > 0, area, 1.0), 1.0)
            partner = tf.gather(own, perm)
            inside = tf.concat([tf.clip_by_value(partner[..., :2], paste[..., :2], paste[..., 2:]),
                                tf.clip_by_value(partner[..., 2:], paste[..., :2], paste[..., 2:])],
                               -1)
            out["boxes"] = tf.concat([own, inside], axis=1)
            out["box_labels"] = tf.concat([targets["box_labels"],
                                           tf.gather(targets["box_labels"], perm)], axis=1)
            out["visible"] = tf.concat(
                [targets["visible"] * (1.0 - covered),
                 tf.gather(targets["visible"], perm) * T.kept_fraction(partner, inside)], axis=1)
        return out

    def get_config(self):
        return {"alpha": self.alpha, "p": self.p}


@serializable
class LabelSmoothing(AugmentOp):
    """Label smoothing: ``y = (1 - epsilon) y_onehot + epsilon / num_classes``.

    Accepts sparse integer labels of shape (batch,) or (batch, 1), or one-hot labels of shape
    (batch, num_classes); returns float32 one-hot labels of shape (batch, num_classes).

    Args:
        epsilon: smoothing weight in [0, 1].
        num_classes: number of classes, >= 2.
        p: probability of smoothing an example's label (others stay one-hot).

    Reference: Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016.
    """

    changes_labels = True

    def __init__(self, epsilon: float, num_classes: int, p: float = 1.0):
        super().__init__(p)
        self.epsilon = check_range(self.owner, "epsilon", epsilon, 0.0, 1.0)
        self.num_classes = check_int(self.owner, "num_classes", num_classes, 2)

    def output_spec(self, images, labels):
        if labels is None:
            spec_error(self.owner, "labels", "given: apply it to a dataset of (images, labels)",
                       "images only")
        shape = labels.shape
        sparse = shape.rank == 1 or (shape.rank == 2 and shape[-1] == 1)
        if sparse:
            if not labels.dtype.is_integer:
                spec_error(self.owner, "labels", "integer class ids when sparse",
                           labels.dtype.name, TypeError)
        elif shape.rank == 2:
            if shape[-1] != self.num_classes:
                spec_error(self.owner, "labels", f"one-hot with num_classes={self.num_classes} "
                           "columns", f"shape {shape}")
            if not labels.dtype.is_floating:
                spec_error(self.owner, "labels", "a floating dtype when one-hot",
                           labels.dtype.name, TypeError)
        else:
            spec_error(self.owner, "labels", "of shape (batch,), (batch, 1) or (batch, num_classes)",
                       f"shape {shape}")
        return images, tf.TensorSpec([shape[0], self.num_classes], tf.float32)

    def apply(self, images, labels, params):
        if labels.dtype.is_integer:
            labels = tf.one_hot(tf.reshape(labels, [-1]), self.num_classes, dtype=tf.float32)
        labels = tf.cast(labels, tf.float32)
        eps = tf.where(params["apply"], self.epsilon, 0.0)[:, None]
        return images, (1.0 - eps) * labels + eps / self.num_classes

    def get_config(self):
        return {"epsilon": self.epsilon, "num_classes": self.num_classes, "p": self.p}
