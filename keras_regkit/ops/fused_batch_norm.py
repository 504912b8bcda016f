"""TensorFlow fast path: batch normalization through the fused kernel.

Keras 3's BatchNormalization on the TensorFlow backend composes
``tf.nn.moments`` and ``tf.nn.batch_normalization`` (several passes over the
data, and as many more in the backward pass). TensorFlow's fused kernel
(``FusedBatchNormV3``) does the forward pass in two sweeps and has a fused
gradient. These functions wrap it so that it returns exactly the numbers of the
generic path in :mod:`keras_regkit.ops.normalization`:

* The kernel's batch variance is Bessel-corrected (``N-1``); Keras uses the
  biased (``1/N``) variance for its moving statistics, so the biased variance is
  recovered as ``var * (N-1)/N``.
* A channels-last input of another rank than 4 is viewed as ``(1, M, 1, C)``
  (``M`` = product of the other dimensions), so dense and sequence inputs use
  the kernel too; a channels-first 3-D or 4-D input runs in ``NCHW``.

Only import this module on the TensorFlow backend.
"""

from __future__ import annotations

import tensorflow as tf

from keras_regkit import _compat


def in_xla_context() -> bool:
    """True while tracing a function compiled by XLA (``jit_compile=True``).

    XLA lowers the fused op into its own expansion, which is slower than what it
    makes of the generic composition, so the layer takes the generic path there.
    See ``keras_regkit._compat.tf_in_xla_context``: only speed, never numbers, depends on it.
    """
    return _compat.tf_in_xla_context()


def fused_layout(shape, axis: int):
    """How to call the fused kernel for an input of this shape and channel axis.

    Args:
        shape: Static input shape (``None`` for unknown dimensions).
        axis: Non-negative channel axis.

    Returns:
        ``"NHWC"`` or ``"NCHW"``, or ``None`` when the fused kernel cannot be used.
    """
    rank = len(shape)
    if rank >= 2 and axis == rank - 1:
        return "NHWC"
    if rank in (3, 4) and axis == 1:
        return "NCHW"
    return None


def _to_4d(x, axis: int, layout: str):
    rank = len(x.shape)
    if layout == "NHWC":
        if rank == 4:
            return x
        return tf.reshape(x, (1, -1, 1, x.shape[-1]))
    if rank == 3:  # (N, C, L) -> (N, C, L, 1)
        return tf.expand_dims(x, -1)
    return x


def fused_batch_norm(
    x,
    scale,
    offset,
    epsilon: float,
    axis: int,
    layout: str,
    mean=None,
    variance=None,
    training: bool = True,
):
    """Normalizes ``x`` with the fused kernel.

    Args:
        x: Input (float16, bfloat16 or float32).
        scale, offset: Per-channel float32 gamma and beta (ones/zeros if unused).
        epsilon: Variance epsilon.
        axis: Non-negative channel axis.
        layout: Value returned by :func:`fused_layout`.
        mean, variance: Moving statistics, used when ``training`` is False.
        training: Normalize with the batch moments (True) or with ``mean`` and
            ``variance`` (False).

    Returns:
        ``(y, batch_mean, biased_batch_variance, count)`` in training, where
        ``count`` is the number of values per channel; ``(y, None, None, None)``
        in inference.
    """
    original_shape = tf.shape(x)
    x4 = _to_4d(x, axis, layout)
    if training:
        y, batch_mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            x4, scale, offset, epsilon=epsilon, data_format=layout, is_training=True
        )
        reduced = (0, 1, 2) if layout == "NHWC" else (0, 2, 3)
        static = [x4.shape[i] for i in reduced]
        if None not in static:  # known at trace time: no scalar ops on the hot path
            count = float(static[0] * static[1] * static[2])
            biased_variance = unbiased_variance * ((count - 1.0) / count) if count > 1 else 0.0 * batch_mean
            return tf.reshape(y, original_shape), batch_mean, biased_variance, count
        dynamic = tf.shape(x4)
        count = tf.cast(dynamic[reduced[0]] * dynamic[reduced[1]] * dynamic[reduced[2]], tf.float32)
        # A single value per channel has zero variance (the kernel's N-1 would be 0).
        biased_variance = tf.where(
            count > 1.0, unbiased_variance * ((count - 1.0) / count), tf.zeros_like(batch_mean)
        )
        return tf.reshape(y, original_shape), batch_mean, biased_variance, count
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(
        x4,
        scale,
        offset,
        mean=mean,
        variance=variance,
        epsilon=epsilon,
        data_format=layout,
        is_training=False,
    )
    return tf.reshape(y, original_shape), None, None, None
