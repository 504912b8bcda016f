"""AugmentationLayer inside a model, and Pipeline datasets feeding model.fit (tensorflow and jax)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_regkit import augment as A


def pipeline():
    return A.Pipeline([A.RandomCrop(8, 8, padding=2), A.RandomFlip(), A.Cutout(3, 3)], seed=2)


def test_layer_training_only_and_per_example():
    layer = A.AugmentationLayer(pipeline(), seed=1)
    x = np.tile(np.arange(64, dtype="float32").reshape(1, 8, 8, 1), (16, 1, 1, 1))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    assert y.shape == x.shape and len({im.tobytes() for im in y}) > 4
    assert layer.compute_output_shape((None, 8, 8, 1)) == (None, 8, 8, 1)


def test_layer_rejects_label_ops():
    with pytest.raises(ValueError, match="AugmentationLayer: pipeline must be image ops"):
        A.AugmentationLayer(A.Pipeline([A.MixUp()]))


def test_model_fit_and_keras_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 8, 8, 3)).astype("uint8")
    y = rng.integers(0, 3, 64)
    inputs = keras.Input((8, 8, 3))
    h = A.AugmentationLayer(pipeline(), seed=0)(inputs)
    h = keras.layers.Rescaling(1 / 255)(h)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    ds = A.Pipeline([A.RandomFlip(), A.LabelSmoothing(0.1, 3)], seed=0)(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
    model.compile("adam", "categorical_crossentropy")
    hist = model.fit(ds, epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    clone = keras.models.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone.predict(x[:4], verbose=0)),
                               keras.ops.convert_to_numpy(model.predict(x[:4], verbose=0)),
                               rtol=1e-5, atol=1e-6)


def test_layer_takes_keras_dicts_with_masks_and_boxes():
    """The Keras 3 dict convention, on every backend: masks and boxes follow the pixels."""
    x = np.zeros((6, 12, 12, 1), "uint8")
    x[:, 2:6, 1:4] = 255
    masks = (x[..., 0] > 0).astype("int32")
    boxes = {"boxes": np.tile(np.array([[[1, 2, 4, 6]]], "float32"), (6, 1, 1)),
             "labels": np.ones((6, 1), "int32")}
    layer = A.AugmentationLayer(A.Pipeline([A.RandomFlip("horizontal", p=1.0)],
                                           bounding_box_format="xyxy"), seed=0)
    data = {"images": x, "segmentation_masks": masks, "bounding_boxes": boxes}
    out = tf.nest.map_structure(keras.ops.convert_to_numpy, layer(data, training=True))
    np.testing.assert_array_equal(out["images"], x[:, :, ::-1].astype("float32"))
    np.testing.assert_array_equal(out["segmentation_masks"], masks[:, :, ::-1])
    np.testing.assert_allclose(out["bounding_boxes"]["boxes"][:, 0], np.tile([8, 2, 11, 6], (6, 1)))
    same = tf.nest.map_structure(keras.ops.convert_to_numpy, layer(data, training=False))
    np.testing.assert_array_equal(same["segmentation_masks"], masks)
    assert layer.compute_output_shape({"images": (None, 12, 12, 1),
                                       "segmentation_masks": (None, 12, 12)}) == \
        {"images": (None, 12, 12, 1), "segmentation_masks": (None, 12, 12)}
