"""Bernoulli keep-masks drawn from raw random bits, with a portable ``keras.ops`` fallback.

A keep-mask with drop probability ``rate`` is usually ``uniform >= rate``. The fast path skips
the float: it draws raw 32-bit words and splits each into two 16-bit integers (so it needs
half as many random words as there are mask entries, and random-number generation is what
dropout spends its time on), then keeps an entry when ``v >= t`` with the integer threshold
``t = ceil(rate * 2**16)``. The comparison is made on the halves read as signed int16
against ``t - 2**15`` (a signed compare is cheaper on CPU; reading uniform bits as signed
is a bijection onto uniform values, so the probability is the same):

- TensorFlow: Philox words from ``StatelessRandomUniformFullIntV2`` (the generator behind
  ``tf.random.stateless_uniform``). Inside an XLA cluster (``jit_compile=True``) ThreeFry
  words instead, because XLA's CPU Philox is about 100x slower.
- JAX: ``jax.random.bits`` (the words behind ``jax.random.uniform``).

Quantization: the realised drop probability is ``ceil(rate * 2**16) / 2**16``, never more
than ``2**-16`` above ``rate`` (``rate`` in [0, 1 - 2**-16]); rates above ``1 - 2**-16`` drop
with probability ``1 - 2**-16``, and ``keras_regkit.ops.dropout.dropout`` turns ``rate = 1``
into exact zeros through its scale. The portable fallback (``fast=False``) is
``keras.random.uniform(shape) >= rate``: same distribution up to that quantization (the
float32 uniform has 23 random bits), different individual masks.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_regkit import _compat

HALF_BITS = 16
_ONE = float(2**HALF_BITS)
_MAX = 2**HALF_BITS - 1


def quantized_threshold(rate):
    """The integer threshold ``min(ceil(rate * 2**16), 2**16 - 1)`` as an int32 tensor."""
    rate = ops.cast(rate, "float32")
    return ops.cast(ops.minimum(ops.ceil(rate * _ONE), float(_MAX)), "int32")


def realised_rate(rate: float) -> float:
    """The drop probability of the fast masks for a nominal ``rate``."""
    return min(math.ceil(float(rate) * _ONE), _MAX) / _ONE


def _tf_raw_words(count, seed):
    """``count`` uint32 random words for a seed (int32 pair), Philox (ThreeFry under XLA)."""
    import tensorflow as tf

    if seed.dtype != tf.int32:  # Keras keeps int64 seed state on TF; stateless ops need int32.
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seed)
    algorithm = 2 if _compat.tf_in_xla_context() else 1  # ThreeFry under XLA, Philox otherwise
    return tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=tf.reshape(count, [1]),
        key=key,
        counter=counter,
        alg=tf.constant(algorithm, tf.int32),
        dtype=tf.uint32,
    )


def _tf_keep_mask(shape, threshold, seed):
    import tensorflow as tf

    if all(isinstance(d, int) for d in shape):  # static shape: no shape arithmetic in the graph
        size = math.prod(shape)
        target = list(shape)
    else:
        size = tf.reduce_prod(tf.cast(tf.stack(shape), tf.int64))
        target = tf.stack(shape)
    words = _tf_raw_words((size + 1) // 2, _compat.draw_seed(seed))
    halves = tf.reshape(tf.bitcast(words, tf.int16), [-1])
    if not isinstance(size, int) or size % 2:
        halves = halves[:size]
    keep = tf.greater_equal(halves, tf.cast(threshold - 2**15, tf.int16))
    return tf.reshape(keep, target)


def _jax_keep_mask(shape, threshold, seed):
    import jax
    import jax.numpy as jnp

    size = math.prod(shape)
    words = jax.random.bits(_compat.jax_draw_seed(seed), ((size + 1) // 2,), dtype=jnp.uint32)
    halves = jax.lax.bitcast_convert_type(words, jnp.int16).reshape(-1)[:size]
    keep = halves >= (jnp.asarray(threshold) - 2**15).astype(jnp.int16)
    return keep.reshape(shape)


def keep_mask(shape, rate, seed, fast: bool = True):
    """A boolean mask of ``shape`` whose entries are ``False`` with probability ``rate``.

    Args:
        shape: output shape, a tuple of ints (or scalar tensors for dynamic TF dimensions).
        rate: drop probability in [0, 1], a Python float or a scalar tensor (e.g. a variable).
        seed: an int or a ``keras.random.SeedGenerator`` (one seed is drawn per call).
        fast: split raw random words into 16-bit draws (TensorFlow and JAX); ``False`` uses
            the portable ``keras.random.uniform(shape, seed=seed) >= rate``.

    Returns:
        A bool tensor of ``shape``. With ``fast`` its drop probability is
        ``realised_rate(rate) = min(ceil(rate * 2**16), 2**16 - 1) / 2**16``.
    """
    shape = tuple(shape)
    backend = keras.backend.backend()
    if fast and backend in ("tensorflow", "jax"):
        threshold = quantized_threshold(rate)
        if backend == "tensorflow":
            return _tf_keep_mask(shape, threshold, seed)
        return _jax_keep_mask(tuple(int(d) for d in shape), threshold, seed)
    uniform = keras.random.uniform(shape, dtype="float32", seed=seed)
    return ops.greater_equal(uniform, ops.cast(rate, "float32"))
