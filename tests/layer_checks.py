"""One helper that checks what every keras_regkit layer must do.

``check_layer`` builds the layer, calls it in training and inference, compares
``compute_output_shape`` with the real output, round-trips ``get_config`` /
``from_config`` and a ``.keras`` file, and runs it under ``mixed_float16``.
``move_weights_file`` checks that a ``.weights.h5`` file moves between two layers held
by :class:`AttributeHolder`.
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np


def _as_numpy(x):
    return keras.ops.convert_to_numpy(x)


def check_layer(
    layer_cls,
    init_kwargs: dict,
    input_shape: tuple,
    *,
    identity_in_inference: bool = False,
    check_mixed_precision: bool = True,
    rng_seed: int = 0,
):
    """Runs the shared layer contract; returns the layer built by the first step."""
    rng = np.random.default_rng(rng_seed)
    x = rng.normal(size=input_shape).astype("float32")

    layer = layer_cls(**init_kwargs)
    y_train = layer(x, training=True)
    y_infer = layer(x, training=False)
    expected = tuple(layer.compute_output_shape(input_shape))
    assert tuple(y_train.shape) == expected
    assert tuple(y_infer.shape) == expected
    if identity_in_inference:
        np.testing.assert_array_equal(_as_numpy(y_infer), x)

    # get_config / from_config gives an equal config and equal inference numbers.
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    clone.build(input_shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(_as_numpy(clone(x, training=False)), _as_numpy(y_infer), rtol=1e-6, atol=1e-6)

    # A model with the layer saves to .keras and loads back predicting identically.
    inputs = keras.Input(shape=input_shape[1:], batch_size=input_shape[0])
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    model(x, training=True)  # move any running statistics off their initial values
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(_as_numpy(loaded(x, training=False)), _as_numpy(model(x, training=False)))

    if check_mixed_precision:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_float16")
        try:
            half = layer_cls(**init_kwargs)
            out = half(x.astype("float16"), training=True)
            assert keras.backend.standardize_dtype(out.dtype) == "float16"
            for weight in half.weights:
                assert keras.backend.standardize_dtype(weight.dtype) == "float32"
            assert np.all(np.isfinite(_as_numpy(out).astype("float32")))
        finally:
            keras.config.set_dtype_policy(previous)
    return layer


class AttributeHolder(keras.layers.Layer):
    """A custom layer holding another layer as an attribute (``inner``).

    A ``.weights.h5`` file addresses a layer held in a list (the layers of a Sequential or
    Functional model) by its class name, and a layer held as an attribute by the attribute's
    name: only the latter lets a file move between two different classes (e.g. ``Conv2D`` and
    ``WSConv2D``).
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.inner = layer

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, inputs):
        return self.inner(inputs)

    def compute_output_shape(self, input_shape):
        return self.inner.compute_output_shape(input_shape)


def move_weights_file(keras_layer, our_layer, input_shape, direction: str, directory, rng):
    """Saves random weights of one layer (held by ``AttributeHolder``) and loads them into the other.

    ``direction`` is ``"keras_to_ours"`` or ``"ours_to_keras"``. Asserts that the target ends
    with exactly the source's weights, and returns ``(source, target)`` models.
    """
    keras_model = keras.Sequential([keras.Input(input_shape), AttributeHolder(keras_layer)])
    our_model = keras.Sequential([keras.Input(input_shape), AttributeHolder(our_layer)])
    source, target = (keras_model, our_model) if direction == "keras_to_ours" else (our_model, keras_model)
    source.set_weights([rng.normal(size=w.shape).astype("float32") for w in source.weights])
    path = os.path.join(directory, "layer.weights.h5")
    source.save_weights(path)
    target.load_weights(path)
    assert len(target.get_weights()) == len(source.get_weights())
    for a, b in zip(target.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    return source, target
