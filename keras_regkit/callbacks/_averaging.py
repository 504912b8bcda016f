"""What the weight-averaging callbacks share: which variables, device buffers, the end of training.

``DeviceAverage`` keeps one buffer per model variable on the variables' device and updates all
of them in place with one compiled call per step, ``a <- a + w * (v - a)`` (a linear
interpolation): a TensorFlow ``tf.function`` compiled with XLA, a jitted JAX function that
donates the old buffers, or ``torch._foreach_lerp_``; other backends fall back to
``keras.ops``. The weight ``w`` is an argument, so nothing retraces when it changes.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_regkit import _compat
from keras_regkit import _validation as check
from keras_regkit.callbacks.population_statistics import (
    batch_normalization_layers,
    is_array_input,
    recompute_batch_statistics,
)


def trainable_variables(model) -> list:
    """The model's trainable variables, each once."""
    return _unique(model.trainable_variables)


def batch_norm_statistics(model) -> list:
    """The moving statistics (the non-trainable weights) of every BatchNormalization layer."""
    return _unique(v for layer in batch_normalization_layers(model) for v in layer.non_trainable_weights)


def _unique(variables) -> list:
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def current_values(model, variables) -> list:
    """The variables' values as backend tensors, also between JAX training steps."""
    values = _compat.jax_fit_values(model, variables)
    if values is None:
        _compat.jax_state_sync(model)
        values = [v.value for v in variables]
    return values


def check_state_shapes(owner: str, key: str, variables, arrays) -> None:
    """Raises a ValueError unless ``arrays`` (a saved state's ``key``) match ``variables``' shapes."""
    shapes = [tuple(v.shape) for v in variables]
    given = [tuple(np.shape(a)) for a in arrays]
    if shapes != given:
        raise ValueError(f"{owner}: state's {key} must have the shapes {shapes}, got {given}")


def assign(variables, arrays) -> None:
    """Writes ``arrays`` (NumPy or backend tensors) into ``variables``, keeping their dtypes."""
    for variable, array in zip(variables, arrays):
        variable.assign(ops.cast(array, variable.dtype))


class DeviceAverage:
    """Buffers shadowing ``variables`` on their device, moved towards them by interpolation.

    Args:
        variables: the Keras variables to shadow; the buffers start as copies of ``values``.
        values: their current values (backend tensors or NumPy arrays).
    """

    def __init__(self, variables: list, values: list):
        self.variables = list(variables)
        backend = keras.backend.backend()
        self._lerp = {"tensorflow": _tf_lerp, "jax": _jax_lerp, "torch": _torch_lerp}.get(backend, _ops_lerp)
        self.buffers = _new_buffers(backend, values)
        self._compiled = None

    def lerp(self, values: list, weight: float) -> None:
        """``buffer <- buffer + weight * (value - buffer)`` for every buffer, in place."""
        self.buffers, self._compiled = self._lerp(self.buffers, values, weight, self._compiled)

    def numpy(self) -> list:
        """Host copies of the buffers."""
        return [np.array(ops.convert_to_numpy(_read(b))) for b in self.buffers]

    def load(self, arrays: list) -> None:
        """Sets the buffers to ``arrays`` (e.g. a saved state)."""
        self.buffers = _new_buffers(keras.backend.backend(), arrays)
        self._compiled = None

    def write_to_variables(self) -> None:
        """Copies the buffers into the shadowed variables.

        The variables get copies: on JAX the next update donates (deletes) the buffers.
        """
        assign(self.variables, [ops.copy(_read(b)) for b in self.buffers])


def _read(buffer):
    return buffer.value() if hasattr(buffer, "value") and callable(buffer.value) else buffer


def _new_buffers(backend: str, values: list) -> list:
    if backend == "tensorflow":
        import tensorflow as tf

        return [tf.Variable(tf.identity(ops.convert_to_tensor(v)), trainable=False) for v in values]
    if backend == "torch":
        return [ops.convert_to_tensor(v).detach().clone() for v in values]
    return [ops.convert_to_tensor(np.array(ops.convert_to_numpy(v))) for v in values]


def _tf_lerp(buffers, values, weight, compiled):
    import tensorflow as tf

    if compiled is None:
        @tf.function(jit_compile=True, autograph=False)
        def compiled(sources, w):
            for buffer, source in zip(buffers, sources):
                buffer.assign_add((tf.cast(source, buffer.dtype) - buffer) * tf.cast(w, buffer.dtype))

    # A Keras variable's value on TensorFlow is its tf.Variable: passed as such, the XLA kernel
    # reads it in place (no tensor is made per variable and call).
    compiled(list(values), tf.constant(weight, tf.float32))
    return buffers, compiled


def _jax_lerp(buffers, values, weight, compiled):
    import jax
    import jax.numpy as jnp

    if compiled is None:
        def step(old, sources, w):
            return [a + (v.astype(a.dtype) - a) * w.astype(a.dtype) for a, v in zip(old, sources)]

        compiled = jax.jit(step, donate_argnums=0)
    return compiled(buffers, list(values), jnp.asarray(weight, jnp.float32)), compiled


def _torch_lerp(buffers, values, weight, compiled):
    import torch

    with torch.no_grad():
        torch._foreach_lerp_(buffers, [v.detach().to(b.dtype) for b, v in zip(buffers, values)], float(weight))
    return buffers, None


def _ops_lerp(buffers, values, weight, compiled):
    return [a + (ops.cast(v, a.dtype) - a) * weight for a, v in zip(buffers, values)], None


def check_bn_arguments(owner: str, bn_data: Any, bn_batch_size, bn_steps) -> tuple:
    """``(bn_batch_size, bn_steps)`` checked against ``bn_data``."""
    if bn_batch_size is not None:
        bn_batch_size = check.check_int(owner, "bn_batch_size", bn_batch_size, 1)
        if bn_data is None or not is_array_input(bn_data):
            raise ValueError(
                f"{owner}: bn_batch_size is for array bn_data only (a dataset or iterable yields "
                f"batches already), got bn_batch_size={bn_batch_size} with bn_data of type "
                f"{type(bn_data).__name__}"
            )
    if bn_steps is not None:
        bn_steps = check.check_int(owner, "bn_steps", bn_steps, 1)
    return bn_batch_size, bn_steps


def finish_with_batch_norm(owner: str, model, bn_data: Any, bn_batch_size, bn_steps, verbose: int) -> None:
    """Recomputes the BatchNormalization statistics on ``bn_data`` when it is given."""
    if bn_data is None or not batch_normalization_layers(model):
        return
    batches = recompute_batch_statistics(model, bn_data, bn_batch_size, bn_steps)
    if verbose:
        _compat.print_msg(f"{owner}: recomputed BatchNormalization statistics on {batches} batches")


def warn_without_bn_data(owner: str, model, bn_data: Any, what: str) -> bool:
    """Warns (and returns True) when ``model`` has BatchNormalization layers and no ``bn_data``."""
    if bn_data is not None or not batch_normalization_layers(model):
        return False
    warnings.warn(
        f"{owner}: the model has BatchNormalization layers and bn_data is None: {what} "
        "Pass bn_data (training inputs) to recompute the population statistics for the "
        "averaged weights.",
        stacklevel=3,
    )
    return True
