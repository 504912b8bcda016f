"""Backend-agnostic helpers for tests: gradients of a function and of a layer's training step."""

from __future__ import annotations

import inspect

import keras
import numpy as np


def gradient(fn, x):
    """``d sum(fn(x)) / dx`` as a NumPy array, on the current Keras backend."""
    backend = keras.backend.backend()
    x = np.asarray(x)
    if backend == "tensorflow":
        import tensorflow as tf

        x_t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            loss = tf.reduce_sum(fn(x_t))
        return tape.gradient(loss, x_t).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: fn(v).sum())(x))
    if backend == "torch":
        import torch

        x_t = torch.tensor(x, requires_grad=True)
        fn(x_t).sum().backward()
        return x_t.grad.detach().cpu().numpy()
    raise NotImplementedError(backend)


def training_step(layer, x, upstream, mask=None):
    """One training call of ``layer`` on ``x``.

    Returns ``(y, grads, state)``: the output, the gradients of
    ``sum(y * upstream)`` with respect to ``[x] + trainable weights``, and the
    non-trainable weights after the call, all as NumPy arrays. The layer's
    variables are updated as a real training step would (TensorFlow) or set to
    the returned state (JAX).
    """
    kwargs = {"training": True}
    if mask is not None:
        kwargs["mask"] = mask
    if not layer.built:
        layer.build(x.shape)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x_t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            y = layer(x_t, **kwargs)
            loss = tf.reduce_sum(tf.cast(y, upstream.dtype) * upstream)
        grads = tape.gradient(loss, [x_t] + layer.trainable_variables)
        state = [v.numpy() for v in layer.non_trainable_variables]
        return np.asarray(y), [np.asarray(g) for g in grads], state
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]
        # stateless_call hands its keyword arguments straight to ``call`` (``__call__`` would
        # drop a ``training`` that ``call`` does not take, as GroupNormalization's and Conv's).
        call_arguments = inspect.signature(layer.call).parameters
        kwargs = {k: v for k, v in kwargs.items() if k in call_arguments}

        def loss_fn(train_values, x_value):
            y, new_state = layer.stateless_call(train_values, non_trainable, x_value, **kwargs)
            return jnp.sum(y.astype(upstream.dtype) * upstream), (y, new_state)

        (g_train, g_x), (y, new_state) = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(trainable, jnp.asarray(x))
        for variable, value in zip(layer.non_trainable_variables, new_state):
            variable.assign(value)
        return np.asarray(y), [np.asarray(g_x)] + [np.asarray(g) for g in g_train], [np.asarray(v) for v in new_state]
    if backend == "torch":
        import torch

        x_t = torch.tensor(x, requires_grad=True)
        if "mask" in kwargs:
            kwargs["mask"] = torch.as_tensor(np.asarray(kwargs["mask"]))
        y = layer(x_t, **kwargs)
        loss = (y.to(torch.float64) * torch.as_tensor(upstream, dtype=torch.float64)).sum()
        params = [v.value for v in layer.trainable_variables]
        grads = torch.autograd.grad(loss, [x_t] + params)
        state = [keras.ops.convert_to_numpy(v) for v in layer.non_trainable_variables]
        as_np = [g.detach().cpu().numpy() for g in grads]
        return keras.ops.convert_to_numpy(y), as_np, state
    raise NotImplementedError(backend)
