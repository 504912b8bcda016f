"""Batch-normalization math as pure functions on tensors.

Every function here is stateless and written with ``keras.ops``, so it runs on
every Keras backend; the layer in ``keras_regkit.layers.batch_normalization``
owns the variables and calls into these functions.

References:
    Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
    Reducing Internal Covariate Shift", ICML 2015 (Algorithms 1 and 2).
    Ioffe, "Batch Renormalization: Towards Reducing Minibatch Dependence in
    Batch-Normalized Models", NeurIPS 2017.
    Hoffer, Hubara & Soudry, "Train longer, generalize better: closing the
    generalization gap in large batch training of neural networks", NeurIPS 2017
    (ghost batch normalization).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import keras
from keras import ops

# A hook that sums a tensor over every replica (for synchronized statistics);
# ``None`` means there is only one replica.
AllReduce = Optional[Callable]


def broadcast_shape(rank: int, axis: int, channels: int) -> list[int]:
    """The shape ``[1, ..., channels, ..., 1]`` that broadcasts a per-channel vector."""
    shape = [1] * rank
    shape[axis] = channels
    return shape


def normalize(x, mean, variance, offset=None, scale=None, epsilon: float = 1e-3):
    """Applies ``(x - mean) / sqrt(variance + epsilon) * scale + offset``.

    All of ``mean``, ``variance``, ``offset`` and ``scale`` must broadcast
    against ``x``. The arithmetic is arranged exactly as
    ``tf.nn.batch_normalization`` and Keras's JAX backend do (one multiply and
    one add per element), so results agree with ``keras.ops.batch_normalization``
    to float round-off.

    Args:
        x: Input tensor.
        mean, variance: Statistics, broadcastable to ``x``.
        offset, scale: Optional beta and gamma, broadcastable to ``x``.
        epsilon: Small float added to the variance.

    Returns:
        The normalized tensor, with the dtype of ``x``.
    """
    inv = ops.rsqrt(variance + epsilon)
    if scale is not None:
        inv = inv * scale
    shift = -mean * inv
    if offset is not None:
        shift = shift + offset
    return x * ops.cast(inv, x.dtype) + ops.cast(shift, x.dtype)


def weighted_moments(x, weights, axes: Sequence[int], all_reduce: AllReduce = None):
    """Weighted mean and (biased) variance over ``axes``, with dims kept.

    The weights broadcast against ``x`` (a mask, the valid rows of a padded
    ghost batch, or both). Keras's masked moments divide by
    ``sum(weights) + keras.config.epsilon()``; so does this function, so masked
    results match Keras's layer. With ``all_reduce`` the sums are taken over
    every replica, in two passes (mean first, then squared deviations), which is
    more accurate than the ``E[x^2] - E[x]^2`` formula.

    Args:
        x: Input tensor.
        weights: Non-negative weights broadcastable to ``x``.
        axes: Axes to reduce.
        all_reduce: Optional function summing a tensor over replicas.

    Returns:
        ``(mean, variance, count)``, each with the reduced axes kept as size 1;
        ``count`` is the total weight each moment was taken over.
    """
    axes = list(axes)
    weights = ops.broadcast_to(ops.cast(weights, x.dtype), ops.shape(x))
    total = ops.sum(weights * x, axis=axes, keepdims=True)
    count = ops.sum(weights, axis=axes, keepdims=True)
    if all_reduce is not None:
        total, count = all_reduce(total), all_reduce(count)
    mean = total / (count + keras.config.epsilon())
    squares = ops.sum(weights * ops.square(x - mean), axis=axes, keepdims=True)
    if all_reduce is not None:
        squares = all_reduce(squares)
    variance = squares / (count + keras.config.epsilon())
    return mean, variance, count


def moments(x, axes: Sequence[int], all_reduce: AllReduce = None):
    """Mean and biased variance over ``axes`` (dims kept), and the count per moment.

    Without ``all_reduce`` this is ``keras.ops.moments`` (the exact computation
    Keras's BatchNormalization uses); with it, the two-pass replica sum of
    :func:`weighted_moments`.

    Returns:
        ``(mean, variance, count)``; ``count`` is a Python/int-like scalar tensor.
    """
    axes = list(axes)
    if all_reduce is not None:
        return weighted_moments(x, ops.ones((), x.dtype), axes, all_reduce)
    mean, variance = ops.moments(x, axes=axes, keepdims=True)
    shape = ops.shape(x)
    count = 1
    for axis in axes:
        count = count * shape[axis]
    return mean, variance, ops.cast(count, x.dtype)


def ghost_batches(x, virtual_batch_size: int):
    """Splits the batch into groups of ``virtual_batch_size`` consecutive examples.

    A batch that the group size does not divide is padded with zeros: the last
    group holds the remaining ``batch % virtual_batch_size`` examples and is
    normalized with its own moments.

    Returns:
        ``(grouped, valid)``: ``grouped`` has shape
        ``(groups, virtual_batch_size) + x.shape[1:]``, and ``valid`` (shape
        ``(groups, virtual_batch_size)``) is 1 for real examples, 0 for padding.
    """
    batch = ops.shape(x)[0]
    padding = (-batch) % virtual_batch_size
    rank = len(x.shape)
    padded = ops.pad(x, [[0, padding]] + [[0, 0]] * (rank - 1))
    valid = ops.pad(ops.ones((batch,), x.dtype), [[0, padding]])
    groups = (batch + padding) // virtual_batch_size
    grouped_shape = (groups, virtual_batch_size) + tuple(ops.shape(x)[1:])
    grouped = ops.reshape(padded, grouped_shape)
    return grouped, ops.reshape(valid, (groups, virtual_batch_size))


def ungroup(grouped, batch):
    """Inverse of :func:`ghost_batches`: merges the groups and drops the padding."""
    shape = ops.shape(grouped)
    merged = ops.reshape(grouped, (shape[0] * shape[1],) + tuple(shape[2:]))
    return merged[:batch]


def bessel_correction(variance, count):
    """The unbiased variance ``count / (count - 1) * variance`` (Ioffe & Szegedy, Alg. 2).

    ``count`` is the number of values each variance was taken over; a count of
    one or less leaves the variance unchanged rather than dividing by zero.
    """
    count = ops.cast(count, variance.dtype)
    factor = ops.where(count > 1.0, count / ops.maximum(count - 1.0, 1.0), 1.0)
    return variance * factor


def moving_average(moving, value, momentum: float):
    """``moving * momentum + value * (1 - momentum)``, Keras's moving-statistics update."""
    return moving * momentum + value * (1.0 - momentum)


def renorm_correction(mean, variance, renorm_mean, renorm_stddev, epsilon: float, clipping: dict):
    """Batch-renormalization corrections ``r`` and ``d`` (Ioffe 2017, Algorithm 1).

    ``r = sigma_B / sigma`` and ``d = (mu_B - mu) / sigma`` with the renorm moving
    statistics ``mu``, ``sigma`` (sigma floored at ``sqrt(epsilon)`` as in Keras),
    clipped to ``[rmin, rmax]`` and ``[-dmax, dmax]`` where those keys are given.
    Both are returned without gradient.
    """
    stddev = ops.sqrt(variance + epsilon)
    renorm_stddev = ops.maximum(renorm_stddev, ops.sqrt(ops.cast(epsilon, mean.dtype)))
    r = stddev / renorm_stddev
    d = (mean - renorm_mean) / renorm_stddev
    if clipping.get("rmin") is not None:
        r = ops.maximum(r, clipping["rmin"])
    if clipping.get("rmax") is not None:
        r = ops.minimum(r, clipping["rmax"])
    if clipping.get("dmax") is not None:
        d = ops.clip(d, -clipping["dmax"], clipping["dmax"])
    return ops.stop_gradient(r), ops.stop_gradient(d)


def compose_renorm(r, d, scale=None, offset=None):
    """Folds ``(x_hat * r + d) * scale + offset`` into one scale and one offset."""
    if scale is None:
        return r, d if offset is None else d + offset
    new_offset = d * scale
    if offset is not None:
        new_offset = new_offset + offset
    return r * scale, new_offset


def instance_norm(x, axis: int, gamma=None, beta=None, epsilon: float = 1e-3):
    """Instance normalization (Ulyanov, Vedaldi & Lempitsky 2016) as a pure function.

    Every example and channel is normalized with the mean and biased variance of its own
    values over the remaining axes (all but the batch axis 0 and the channel ``axis``), then
    scaled by ``gamma`` and shifted by ``beta``. These are the numbers of
    ``keras.layers.GroupNormalization(groups=-1)``: the statistics are taken in at least
    float32 (so float16 inputs do not overflow) and the arithmetic is arranged as Keras's
    (one multiply and one add per element, see :func:`normalize`).

    Args:
        x: Input tensor of rank >= 3, batch first.
        axis: The channel axis (negative values count from the end; not the batch axis).
        gamma, beta: Optional per-channel scale and offset, shape ``(channels,)``.
        epsilon: Small positive float added to the variance.

    Returns:
        The normalized tensor, in the dtype of ``x``.

    Raises:
        ValueError: If ``x`` has rank < 3 or ``axis`` is out of range or the batch axis.

    Reference:
        Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing Ingredient for
        Fast Stylization", arXiv:1607.08022, 2016.
    """
    rank = len(x.shape)
    if rank < 3:
        raise ValueError(f"instance_norm: x must have rank >= 3 (batch, ..., channels), got shape {tuple(x.shape)}")
    if not -rank < axis < rank or axis % rank == 0:
        raise ValueError(
            f"instance_norm: axis must be in [{1 - rank}, -1] or [1, {rank - 1}] for rank {rank}, got {axis}"
        )
    channel_axis = axis % rank
    dtype = x.dtype
    compute_dtype = keras.backend.result_type(dtype, "float32")
    values = ops.cast(x, compute_dtype)
    axes = [a for a in range(1, rank) if a != channel_axis]
    mean, variance = ops.moments(values, axes=axes, keepdims=True)

    def as_param(weight):
        if weight is None:
            return None
        weight = ops.cast(weight, compute_dtype)
        if channel_axis == rank - 1:
            return weight
        return ops.reshape(weight, broadcast_shape(rank, channel_axis, -1))

    outputs = normalize(values, mean, variance, as_param(beta), as_param(gamma), epsilon)
    return ops.cast(outputs, dtype)
