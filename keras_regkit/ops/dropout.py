"""Dropout and its multiplicative/additive noise relatives, as pure functions.

References:
    Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov, "Dropout: A Simple Way to
    Prevent Neural Networks from Overfitting", JMLR 15 (2014).
    Tompson et al., "Efficient Object Localization Using Convolutional Networks", CVPR 2015
    (spatial dropout).
    Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017 (alpha dropout).
    Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016 (drop path).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_regkit.ops.random_bits import keep_mask

SCALINGS = ("inverted", "test_time")
# SELU constants (Klambauer et al. 2017).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _is_python_number(value) -> bool:
    return isinstance(value, (int, float))


def concrete_noise_shape(x, noise_shape):
    """Fills the ``None`` entries of ``noise_shape`` from the shape of ``x``."""
    shape = ops.shape(x)
    if noise_shape is None:
        return tuple(shape)
    if len(noise_shape) != len(shape):
        raise ValueError(
            f"dropout: noise_shape must have one entry per input dimension ({len(shape)}), "
            f"got {tuple(noise_shape)!r} for an input of shape {tuple(shape)!r}"
        )
    resolved = []
    for axis, (dim, size) in enumerate(zip(noise_shape, shape)):
        if dim is None:
            resolved.append(size)
        elif isinstance(size, int) and dim not in (1, size):
            raise ValueError(
                f"dropout: noise_shape must broadcast to the input shape {tuple(shape)!r} "
                f"(each entry 1, None or equal to the input's), got {tuple(noise_shape)!r} "
                f"(axis {axis})"
            )
        else:
            resolved.append(dim)
    return tuple(resolved)


def dropout(
    x,
    rate,
    noise_shape=None,
    seed=None,
    scaling: str = "inverted",
    fast: bool = True,
):
    """Training-time dropout: zeroes each unit with probability ``rate``.

    Args:
        x: input tensor.
        rate: drop probability in [0, 1]; a Python float or a scalar tensor/variable (the
            latter lets a schedule change it without retracing). With ``fast`` the realised
            drop probability is ``ceil(rate * 2**16) / 2**16``, within ``2**-16`` of ``rate``
            (see ``keras_regkit.ops.random_bits``); ``rate = 1`` returns zeros.
        noise_shape: shape of the mask, broadcast against ``x`` (``None`` entries follow ``x``).
        seed: int or ``keras.random.SeedGenerator``.
        scaling: ``"inverted"`` (Keras; survivors scaled by ``1 / (1 - rate)``) or
            ``"test_time"`` (Srivastava et al. 2014: survivors unscaled; apply
            ``scale_for_inference`` at inference).
        fast: draw the mask from raw random bits (see ``keep_mask``).

    Returns:
        A tensor like ``x``.
    """
    x = ops.convert_to_tensor(x)
    if _is_python_number(rate):
        if rate == 0:
            return x
        if rate == 1:
            return ops.zeros_like(x)
    keep = keep_mask(concrete_noise_shape(x, noise_shape), rate, seed, fast=fast)
    if _is_python_number(rate):
        scale = 1.0 / (1.0 - rate) if scaling == "inverted" else 1.0
    else:
        # A tensor rate can reach 1, where the fast mask still keeps 2**-16 of the units:
        # a zero scale then gives exact zeros (and avoids the infinite 1 / (1 - rate)).
        rate = ops.cast(rate, "float32")
        below_one = rate < 1.0
        if scaling == "inverted":
            scale = ops.where(below_one, 1.0 / ops.maximum(1.0 - rate, 2.0**-24), 0.0)
        else:
            scale = ops.cast(below_one, "float32")
    # One select of two scalars builds the scaled mask; the backward pass is then one multiply.
    scaled_mask = ops.where(keep, ops.cast(scale, x.dtype), ops.cast(0.0, x.dtype))
    return x * scaled_mask


def scale_for_inference(x, rate):
    """Inference for ``scaling="test_time"`` dropout: multiplies by the keep probability."""
    x = ops.convert_to_tensor(x)
    return x * ops.cast(1.0 - ops.cast(rate, "float32"), x.dtype)


def drop_path(x, rate, seed=None, fast: bool = True):
    """Stochastic depth: drops whole examples (axis 0) and scales survivors by ``1/(1-rate)``.

    Apply it to a residual branch: ``y = shortcut + drop_path(branch, rate, seed)``.
    """
    noise_shape = (None,) + (1,) * (len(ops.shape(x)) - 1)
    return dropout(x, rate, noise_shape=noise_shape, seed=seed, fast=fast)


def gaussian_dropout(x, rate, seed=None):
    """Multiplicative ``N(1, rate / (1 - rate))`` noise (Srivastava et al. 2014, section 10).

    ``rate = 1`` (infinite variance) returns zeros, like ``dropout``.
    """
    x = ops.convert_to_tensor(x)
    if rate == 1:
        return ops.zeros_like(x)
    stddev = math.sqrt(rate / (1.0 - rate))
    noise = keras.random.normal(ops.shape(x), mean=1.0, stddev=stddev, dtype=x.dtype, seed=seed)
    return x * noise


def gaussian_noise(x, stddev, seed=None):
    """Additive zero-mean Gaussian noise with standard deviation ``stddev``."""
    x = ops.convert_to_tensor(x)
    return x + keras.random.normal(ops.shape(x), mean=0.0, stddev=stddev, dtype=x.dtype, seed=seed)


def alpha_dropout_affine(rate: float) -> tuple[float, float, float]:
    """The constants ``(a, b, alpha')`` of alpha dropout for a drop probability ``rate``.

    Dropped units are set to ``alpha' = -SELU_SCALE * SELU_ALPHA``, then ``a * x + b`` restores
    zero mean and unit variance: ``a = ((1 - q)(1 + q alpha'^2))^{-1/2}``, ``b = -a alpha' q``.
    """
    alpha_p = -SELU_ALPHA * SELU_SCALE
    a = ((1.0 - rate) * (1.0 + rate * alpha_p**2)) ** -0.5
    return a, -a * alpha_p * rate, alpha_p


def alpha_dropout(x, rate, noise_shape=None, seed=None, fast: bool = True):
    """Alpha dropout for SELU networks (Klambauer et al. 2017), as ``keras.layers.AlphaDropout``.

    ``rate = 1`` (where the affine correction diverges) returns zeros, like ``dropout``.
    """
    x = ops.convert_to_tensor(x)
    if rate == 1:
        return ops.zeros_like(x)
    a, b, alpha_p = alpha_dropout_affine(rate)
    keep = keep_mask(concrete_noise_shape(x, noise_shape), rate, seed, fast=fast)
    x = ops.where(keep, x, ops.cast(alpha_p, x.dtype))
    return x * ops.cast(a, x.dtype) + ops.cast(b, x.dtype)
