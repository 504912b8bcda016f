"""MixUp, CutMix and label smoothing against their formulas."""

import numpy as np
import pytest
import tensorflow as tf

from keras_regkit.augment import CutMix, LabelSmoothing, MixUp

KEY = tf.constant([11, 5], tf.int64)


def data(n=32, h=8, w=10, k=5):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, h, w, 3)).astype(np.float32)
    y = np.eye(k, dtype=np.float32)[rng.integers(0, k, n)]
    return x, y


def run(op, x, y):
    prm = op.sample(KEY, x.shape[0], x.shape[1], x.shape[2])
    xo, yo = op.apply(tf.constant(x), tf.constant(y), prm)
    return xo.numpy(), yo.numpy(), {k: v.numpy() for k, v in prm.items()}


def test_mixup_images_and_labels_share_lambda():
    x, y = data()
    xo, yo, prm = run(MixUp(alpha=0.4), x, y)
    lam, perm = prm["lam"], prm["perm"]
    assert sorted(perm) == list(range(len(x)))
    assert len(np.unique(lam)) == len(x)  # one lambda per example
    np.testing.assert_allclose(yo, lam[:, None] * y + (1 - lam[:, None]) * y[perm], rtol=1e-6)
    ref = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[perm]
    np.testing.assert_allclose(xo, np.clip(ref, 0, 255), rtol=1e-5, atol=1e-3)


def test_mixup_lambda_distribution():
    lam = MixUp(alpha=0.2).sample(KEY, 4000, 4, 4)["lam"].numpy()
    # Beta(0.2, 0.2): mean 0.5, variance 1 / (4 (2 alpha + 1)) = 0.1786
    assert abs(lam.mean() - 0.5) < 0.03 and abs(lam.var() - 0.1786) < 0.02


def test_cutmix_label_weight_is_exact_pasted_area():
    x, y = data(64)
    xo, yo, prm = run(CutMix(alpha=1.0), x, y)
    perm = prm["perm"]
    for i in range(len(x)):
        t, l, h, w = prm["top"][i], prm["left"][i], prm["box_height"][i], prm["box_width"][i]
        ref = x[i].copy()
        ref[t:t + h, l:l + w] = x[perm[i], t:t + h, l:l + w]
        np.testing.assert_array_equal(xo[i], ref)
        pasted = (h * w) / (8 * 10)
        np.testing.assert_allclose(yo[i], (1 - pasted) * y[i] + pasted * y[perm[i]], rtol=1e-6)
    assert (prm["box_height"] * prm["box_width"]).std() > 0


@pytest.mark.parametrize("labels", ["sparse", "sparse_col", "onehot"])
def test_label_smoothing_formula(labels):
    ids = np.array([0, 3, 2, 1])
    y = {"sparse": ids, "sparse_col": ids[:, None],
         "onehot": np.eye(4, dtype=np.float32)[ids]}[labels]
    op = LabelSmoothing(0.1, 4)
    spec = op.output_spec(tf.TensorSpec([None, 2, 2, 3]), tf.TensorSpec.from_tensor(tf.constant(y)))
    assert spec[1].shape.as_list() == [4, 4] and spec[1].dtype == tf.float32
    prm = op.sample(KEY, 4, 2, 2)
    _, out = op.apply(tf.zeros([4, 2, 2, 3]), tf.constant(y), prm)
    np.testing.assert_allclose(out.numpy(), 0.9 * np.eye(4)[ids] + 0.025, rtol=1e-6)


@pytest.mark.parametrize("op", [MixUp(), CutMix()])
def test_mixing_label_errors(op):
    images = tf.TensorSpec([None, 8, 8, 3], tf.float32)
    with pytest.raises(ValueError, match=f"{op.owner}: labels must be given"):
        op.output_spec(images, None)
        op.targets_spec({}, images, images, None)  # CutMix: labels, masks or boxes
    with pytest.raises(ValueError, match=r"labels must be one-hot of shape"):
        op.output_spec(images, tf.TensorSpec([None], tf.int32))
    with pytest.raises(TypeError, match="labels must be a floating dtype"):
        op.output_spec(images, tf.TensorSpec([None, 4], tf.int32))


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"MixUp: alpha must be in \(0, inf\), got 0.0"):
        MixUp(alpha=0.0)
    with pytest.raises(ValueError, match=r"CutMix: p must be in \[0, 1\], got 1.5"):
        CutMix(p=1.5)
    with pytest.raises(ValueError, match=r"LabelSmoothing: epsilon must be in \[0, 1\]"):
        LabelSmoothing(1.2, 10)
    with pytest.raises(ValueError, match="LabelSmoothing: labels must be one-hot with"):
        LabelSmoothing(0.1, 10).output_spec(tf.TensorSpec([None, 4, 4, 3]),
                                            tf.TensorSpec([None, 5], tf.float32))
