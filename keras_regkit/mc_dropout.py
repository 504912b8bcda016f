"""Monte-Carlo dropout: predictive mean and spread from a dropout network.

Reference:
    Gal, Ghahramani, "Dropout as a Bayesian Approximation: Representing Model Uncertainty in
    Deep Learning", ICML 2016.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

from keras_regkit import _compat, _validation

#: Keras's own dropout-family layers (SpatialDropout* subclass Dropout).
KERAS_STOCHASTIC_LAYERS = (
    keras.layers.Dropout,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
)


def is_stochastic_layer(layer) -> bool:
    """True for a dropout-family layer: Keras's own, or one marked ``regkit_stochastic``."""
    return isinstance(layer, KERAS_STOCHASTIC_LAYERS) or getattr(layer, "regkit_stochastic", False)


@contextlib.contextmanager
def stochastic_layers_in_training(model):
    """Within this context every dropout-family layer of ``model`` runs as if ``training=True``.

    All other layers (BatchNormalization included) keep the ``training`` value the model is
    called with, so ``model(x, training=False)`` gives one Monte-Carlo sample. The layers'
    ``call`` is overridden on the instances (``keras_regkit._compat.overriding_call``) and
    restored on exit.
    """
    patched = []
    with contextlib.ExitStack() as stack:
        for layer in _compat.flatten_layers(model):
            if is_stochastic_layer(layer) and not _compat.call_overridden(layer):

                def forced(*args, _original=layer.call, **kwargs):
                    kwargs["training"] = True
                    return _original(*args, **kwargs)

                stack.enter_context(_compat.overriding_call(layer, forced))
                patched.append(layer)
        yield patched


def mc_predict(model, x, samples: int = 30, batch_size: int | None = None):
    """Monte-Carlo dropout prediction (Gal & Ghahramani 2016).

    Runs ``samples`` stochastic forward passes with every dropout-family layer in training
    mode (``keras_regkit.layers`` ones and Keras's ``Dropout``, ``SpatialDropout*``,
    ``GaussianDropout``, ``GaussianNoise``, ``AlphaDropout``) and every other layer, notably
    ``BatchNormalization``, in inference mode. (``model(x, training=True)`` would instead
    normalise with batch statistics and change the moving averages.)

    Args:
        model: a built Keras model (functional, Sequential or subclassed).
        x: inputs the model accepts (array or tensor; a single input).
        samples: number of stochastic passes, an int >= 1.
        batch_size: examples per forward pass (default: all of ``x`` at once).

    Returns:
        ``(mean, std)``: NumPy arrays of the model's output shape, the predictive mean and the
        predictive standard deviation (population, ``ddof=0``) over the samples.

    Raises:
        ValueError: ``samples`` < 1 or ``batch_size`` < 1.
        TypeError: ``samples`` or ``batch_size`` not an int.

    Reference:
        Gal & Ghahramani, ICML 2016, section 3 (eqs. 8-9, "MC dropout").
    """
    samples = _validation.check_int("mc_predict", "samples", samples, minimum=1)
    x = np.asarray(x) if not hasattr(x, "shape") else x
    n = int(x.shape[0])
    if batch_size is not None:
        batch_size = _validation.check_int("mc_predict", "batch_size", batch_size, minimum=1)
    step = batch_size or max(n, 1)
    total = None
    total_sq = None
    with stochastic_layers_in_training(model):
        for _ in range(samples):
            parts = [
                keras.ops.convert_to_numpy(model(x[start : start + step], training=False))
                for start in range(0, n, step)
            ]
            out = np.concatenate(parts, axis=0).astype("float64")
            total = out if total is None else total + out
            total_sq = out**2 if total_sq is None else total_sq + out**2
    mean = total / samples
    var = np.maximum(total_sq / samples - mean**2, 0.0)
    return mean.astype("float32"), np.sqrt(var).astype("float32")
