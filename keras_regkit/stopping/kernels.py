"""Positive semi-definite kernels as callables ``kernel(A, B) -> Gram matrix`` (float64).

Every kernel takes ``A`` of shape ``(n, d)`` and ``B`` of shape ``(p, d)`` (a 1-D
array is read as ``d = 1``) and returns the ``(n, p)`` matrix ``K(a_i, b_j)``.
Any callable with that contract works with
:class:`~keras_regkit.stopping.kernel_gd.KernelGradientDescent`.

References:
    G. Wahba, "Spline Models for Observational Data" (SIAM, 1990), chapter 2:
    periodic Sobolev spaces on the circle and their reproducing kernels.
    NIST DLMF 24.8.1: ``sum_{k>=1} cos(2 pi k x) / k^(2n)
    = (-1)^(n+1) (2 pi)^(2n) B_(2n)(x) / (2 (2n)!)`` for ``0 <= x <= 1``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from keras_regkit._validation import check_choice, check_range

__all__ = ["FeatureMapKernel", "GaussianKernel", "LaplacianKernel", "SobolevTorusKernel", "as_2d"]

# Bernoulli polynomials B_2, B_4, B_6 as coefficients of x^0..x^6 (lowest first).
_BERNOULLI = {
    1: (1.0 / 6.0, -1.0, 1.0),
    2: (-1.0 / 30.0, 0.0, 1.0, -2.0, 1.0),
    3: (1.0 / 42.0, 0.0, -0.5, 0.0, 2.5, -3.0, 1.0),
}


def as_2d(owner: str, name: str, x) -> np.ndarray:
    """``x`` as a finite float64 array of shape ``(n, d)``; a 1-D array becomes ``(n, 1)``.

    Raises:
        ValueError: ``x`` has more than 2 dimensions, no rows, or non-finite entries.
    """
    array = np.asarray(x, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{owner}: {name} must be a non-empty array of shape (n, d), "
                         f"got shape {np.shape(x)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{owner}: {name} must have finite entries, got non-finite values")
    return array


def _pair(owner: str, a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_2d(owner, "A", a), as_2d(owner, "B", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{owner}: A and B must have the same number of columns, "
                         f"got {a.shape[1]} and {b.shape[1]}")
    return a, b


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(sq, 0.0)


class GaussianKernel:
    """``K(a, b) = exp(-||a - b||^2 / (2 bandwidth^2))``; ``kappa^2 = 1``.

    Args:
        bandwidth: length scale, ``> 0``.

    Raises:
        ValueError: ``bandwidth <= 0``.
    """

    def __init__(self, bandwidth: float = 1.0):
        self.bandwidth = check_range("GaussianKernel", "bandwidth", bandwidth, 0.0, None,
                                     low_inclusive=False)

    def __call__(self, a, b) -> np.ndarray:
        a, b = _pair("GaussianKernel", a, b)
        return np.exp(-_squared_distances(a, b) / (2.0 * self.bandwidth**2))

    def __repr__(self) -> str:
        return f"GaussianKernel(bandwidth={self.bandwidth!r})"


class LaplacianKernel:
    """``K(a, b) = exp(-||a - b||_1 / bandwidth)`` (a product of 1-D exponential kernels).

    Args:
        bandwidth: length scale, ``> 0``.

    Raises:
        ValueError: ``bandwidth <= 0``.
    """

    def __init__(self, bandwidth: float = 1.0):
        self.bandwidth = check_range("LaplacianKernel", "bandwidth", bandwidth, 0.0, None,
                                     low_inclusive=False)

    def __call__(self, a, b) -> np.ndarray:
        a, b = _pair("LaplacianKernel", a, b)
        distance = np.zeros((a.shape[0], b.shape[0]))
        for column in range(a.shape[1]):
            distance += np.abs(a[:, column][:, None] - b[:, column][None, :])
        return np.exp(-distance / self.bandwidth)

    def __repr__(self) -> str:
        return f"LaplacianKernel(bandwidth={self.bandwidth!r})"


class SobolevTorusKernel:
    """The periodic Sobolev kernel of order ``s`` on the torus ``[0, 1)^d``.

    In one dimension ``K(x, x') = 1 + 2 sum_{k>=1} k^(-2s) cos(2 pi k (x - x'))``,
    evaluated in closed form through the Bernoulli polynomial ``B_(2s)``. Under the
    uniform distribution its integral operator has the eigenfunctions ``1``,
    ``sqrt(2) cos(2 pi k x)``, ``sqrt(2) sin(2 pi k x)`` with eigenvalues ``1`` and
    ``k^(-2s)`` (twice each), so eigenvalues decay as ``i^(-2s)``. For ``d > 1`` it
    is the product of the 1-D kernels over coordinates. ``kappa^2 = (1 + 2 zeta(2s))^d``.

    Args:
        order: ``s``, one of 1, 2, 3.

    Raises:
        ValueError: ``order`` not in (1, 2, 3).

    References:
        Wahba (1990), chapter 2; DLMF 24.8.1 (Fourier series of Bernoulli polynomials).
    """

    def __init__(self, order: int = 1):
        self.order = check_choice("SobolevTorusKernel", "order", order, (1, 2, 3))

    @property
    def kappa_squared_1d(self) -> float:
        """``sup_x K(x, x)`` in one dimension: ``1 + 2 zeta(2s)``."""
        return float(self._one_dimensional(np.zeros(1))[0])

    def eigenvalue(self, k) -> np.ndarray:
        """The eigenvalue ``k^(-2s)`` of frequency ``k >= 1`` (``1`` for ``k = 0``)."""
        k = np.asarray(k, dtype=np.float64)
        return np.where(k == 0, 1.0, np.maximum(k, 1.0) ** (-2.0 * self.order))

    def _one_dimensional(self, difference: np.ndarray) -> np.ndarray:
        x = np.mod(difference, 1.0)
        coefficients = _BERNOULLI[self.order]
        bernoulli = np.polynomial.polynomial.polyval(x, coefficients)
        s = self.order
        scale = (-1.0) ** (s + 1) * (2.0 * math.pi) ** (2 * s) / math.factorial(2 * s)
        return 1.0 + scale * bernoulli

    def __call__(self, a, b) -> np.ndarray:
        a, b = _pair("SobolevTorusKernel", a, b)
        gram = np.ones((a.shape[0], b.shape[0]))
        for column in range(a.shape[1]):
            gram *= self._one_dimensional(a[:, column][:, None] - b[:, column][None, :])
        return gram

    def __repr__(self) -> str:
        return f"SobolevTorusKernel(order={self.order!r})"


class FeatureMapKernel:
    """The kernel ``K(a, b) = <phi(a), phi(b)>`` induced by an explicit feature map.

    Gradient descent on the weights ``w`` of ``f(x) = <w, phi(x)>`` from ``w = 0``
    is kernel gradient descent with this kernel, which is how a bias-free Dense
    layer on fixed features relates to the RKHS theory.

    Args:
        feature_map: callable mapping ``(n, d)`` inputs to ``(n, D)`` features.

    Raises:
        TypeError: ``feature_map`` is not callable.
    """

    def __init__(self, feature_map: Callable[[np.ndarray], np.ndarray]):
        if not callable(feature_map):
            raise TypeError(f"FeatureMapKernel: feature_map must be callable, got {feature_map!r}")
        self.feature_map = feature_map

    def __call__(self, a, b) -> np.ndarray:
        a, b = _pair("FeatureMapKernel", a, b)
        phi_a = np.asarray(self.feature_map(a), dtype=np.float64)
        phi_b = np.asarray(self.feature_map(b), dtype=np.float64)
        return phi_a @ phi_b.T

    def __repr__(self) -> str:
        return f"FeatureMapKernel({self.feature_map!r})"
