"""Shared pytest set-up: quiet TensorFlow logs, seed every test, and report the backend."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _seed_and_reset():
    """Every test starts from the same seeds and the default dtype policy."""
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def requires_backend(name):
    """Marks a test that only makes sense on one Keras backend."""
    return pytest.mark.skipif(
        keras.backend.backend() != name, reason=f"needs the {name} backend"
    )
