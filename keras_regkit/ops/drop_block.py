"""DropBlock: drops contiguous square regions of convolutional feature maps.

Reference:
    Ghiasi, Lin, Le, "DropBlock: A regularization method for convolutional networks",
    NeurIPS 2018 (Algorithm 1).
"""

from __future__ import annotations

from keras import ops

from keras_regkit.ops.random_bits import keep_mask


def drop_block_gamma(rate, block_size: int, height: int, width: int):
    """The paper's seed probability (its eq. 1, with ``rate = 1 - keep_prob``):

    ``gamma = rate / block_size**2 * (H * W) / ((H - block_size + 1) * (W - block_size + 1))``.

    ``rate`` may be a Python float or a scalar tensor.
    """
    valid = (height - block_size + 1) * (width - block_size + 1)
    return rate * (height * width) / (block_size**2 * valid)


def _window_or(mask, axis: int, size: int):
    """``out[i] = mask[i] | ... | mask[i + size - 1]`` along ``axis`` (length shrinks by size-1).

    Doubling windows: ``ceil(log2(size))`` elementwise ORs of shifted slices, which XLA and JAX
    fuse into one loop (3x faster there than a float max-pool for ``size = 7``).
    """

    def cut(tensor, start, stop):
        index = [slice(None)] * 4
        index[axis] = slice(start, stop)
        return tensor[tuple(index)]

    width = 1
    while 2 * width <= size:
        length = mask.shape[axis]
        mask = ops.logical_or(cut(mask, 0, length - width), cut(mask, width, length))
        width *= 2
    if width < size:
        length, shift = mask.shape[axis], size - width
        mask = ops.logical_or(cut(mask, 0, length - shift), cut(mask, shift, length))
    return mask


def drop_block_2d(
    x, rate, block_size: int, seed=None, data_format: str = "channels_last", fast: bool = True
):
    """DropBlock on a 4-D feature map, independently per example and channel.

    Block seeds are drawn with probability ``gamma`` (``drop_block_gamma``) at the positions
    where a whole ``block_size`` x ``block_size`` block fits; each seed zeroes the block whose
    top-left corner it marks. The result is rescaled by ``count(M) / count_ones(M)`` over the
    whole tensor, as in the paper's Algorithm 1 (all zero if everything was dropped, or if
    ``rate = 1``).

    Args:
        x: ``(N, H, W, C)`` (``"channels_last"``) or ``(N, C, H, W)`` (``"channels_first"``).
        rate: target fraction of dropped units (``1 - keep_prob``); float or scalar tensor.
        block_size: side of the square blocks, ``1 <= block_size <= min(H, W)``.
        seed: int or ``keras.random.SeedGenerator``.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        fast: draw the seeds from raw random bits (``keras_regkit.ops.random_bits``).

    Returns:
        A tensor like ``x``.
    """
    x = ops.convert_to_tensor(x)
    h_axis, w_axis = (2, 3) if data_format == "channels_first" else (1, 2)
    shape = list(ops.shape(x))
    height, width = shape[h_axis], shape[w_axis]
    if not (1 <= block_size <= min(height, width)):
        raise ValueError(
            f"drop_block_2d: block_size must be in [1, min(H, W)] = [1, {min(height, width)}], "
            f"got {block_size}"
        )
    if isinstance(rate, (int, float)) and rate == 1:
        return ops.zeros_like(x)
    gamma = drop_block_gamma(ops.cast(rate, "float32"), block_size, height, width)
    seeds_shape = list(shape)
    seeds_shape[h_axis] = height - block_size + 1
    seeds_shape[w_axis] = width - block_size + 1
    # A seed is a dropped Bernoulli(gamma) draw: "not kept" with probability gamma.
    dropped = ops.logical_not(keep_mask(tuple(seeds_shape), gamma, seed, fast=fast))
    if block_size > 1:
        pad = [(0, 0)] * 4
        pad[h_axis] = pad[w_axis] = (block_size - 1, block_size - 1)
        dropped = ops.pad(dropped, pad)
        dropped = _window_or(_window_or(dropped, h_axis, block_size), w_axis, block_size)
    keep = ops.cast(ops.logical_not(dropped), x.dtype)
    kept = ops.sum(ops.cast(keep, "float32"))
    total = ops.cast(ops.size(keep), "float32")
    # rate = 1 returns zeros (the paper's gamma alone would leave some units).
    usable = ops.logical_and(kept > 0, ops.cast(rate, "float32") < 1.0)
    scale = ops.where(usable, total / ops.maximum(kept, 1.0), 0.0)
    return x * (keep * ops.cast(scale, x.dtype))
