"""Weight standardization as a pure function on kernels.

Reference:
    Qiao, Wang, Liu, Shen & Yuille, "Micro-Batch Training with Batch-Channel Normalization and
    Weight Standardization", arXiv:1903.10520, 2019. Used with GroupNorm by Kolesnikov et al.,
    "Big Transfer (BiT): General Visual Representation Learning", ECCV 2020.
"""

from __future__ import annotations

import keras
from keras import ops


def compute_dtype(dtype) -> str:
    """float32 for half-precision kernels (float16, bfloat16); any other dtype as it is."""
    dtype = keras.backend.standardize_dtype(dtype)
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def standardize_kernel(kernel, epsilon: float = 1e-5):
    """Standardizes a kernel per output channel: ``(w - mean) / sqrt(var + epsilon)``.

    The statistics of each output channel (the last axis) are taken over its fan-in, i.e.
    every other axis of the kernel (``(kh, kw, in)`` for a ``Conv2D`` kernel), with the
    population (biased) variance and two passes (mean, then squared deviations). The
    arithmetic runs in at least float32, so float16 kernels neither overflow nor underflow
    in the variance; gradients flow through the mean and the variance.

    Args:
        kernel: Tensor of rank >= 2 whose last axis indexes the output channels.
        epsilon: Small positive float added to the variance.

    Returns:
        The standardized kernel, in the dtype of ``kernel``.

    Raises:
        ValueError: If ``kernel`` has rank < 2.

    Reference:
        Qiao et al., arXiv:1903.10520, 2019 (Weight Standardization, eq. 5-6).
    """
    rank = len(kernel.shape)
    if rank < 2:
        raise ValueError(f"standardize_kernel: kernel must have rank >= 2, got shape {tuple(kernel.shape)}")
    dtype = kernel.dtype
    values = ops.cast(kernel, compute_dtype(dtype))
    axes = list(range(rank - 1))
    centered = values - ops.mean(values, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(centered), axis=axes, keepdims=True)
    return ops.cast(centered * ops.rsqrt(variance + epsilon), dtype)
