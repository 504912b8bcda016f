"""Kernel gradient descent: the whole regularization path from one eigendecomposition.

The coefficient recursion (``f_t = sum_i alpha_t[i] K(x_i, .)``, ``alpha_0 = 0``)::

    alpha_{t+1} = alpha_t - (gamma_t / m) (K alpha_t - y)

is diagonal in the eigenbasis of ``K / m = U diag(lambda) U^T``: with
``b = U^T y`` and the residual factor ``rho_t(lambda) = prod_{k<t} (1 - gamma_k lambda)``,

* the fit on the training points is ``K alpha_t = U diag(1 - rho_t) b``,
* the coefficients are ``alpha_t = U diag(g_t) b / m`` with
  ``g_t(lambda) = (1 - rho_t(lambda)) / lambda`` (``= sum_{k<t} gamma_k`` at ``lambda = 0``),
* the training mean squared error is ``mean(rho_t^2 b^2)``.

So one ``O(m^3)`` eigendecomposition gives ``f_t`` at any ``t`` for ``O(m)`` (training
error) or ``O(m^2)`` (coefficients) more. With constant steps (``theta = 0``)
``rho_t = (1 - gamma lambda)^t`` in closed form, for any ``t``. With decaying steps,
``log rho_t`` is accumulated exactly (``log1p``) for the few eigenvalues with
``gamma_0 lambda > 0.05``; for all others ``log rho_t(lambda) = -sum_j lambda^j P_j(t) / j``
with the scalar power sums ``P_j(t) = sum_{k<t} gamma_k^j``, truncated where the
remainder is below 1e-17 relative, so a batch of ``t`` costs one small matrix product.
These sums are stored for ``t <= 2^20``; beyond, every eigenvalue takes the series from
the stored ``t = 2^20`` on, with ``P_j(t) - P_j(2^20) = kappa^(-2j) sum_{2^20 < n <= t} n^(-j theta)``
from the Euler-Maclaurin formula, so any ``t`` (up to 10^12 and more) costs the same and
nothing is stored per iteration. That needs ``gamma_(2^20) lambda_max < 1`` with a series
of at most 200 terms, which holds for ``theta >= 0.1``; below, ``max_iter`` is limited to
``2^20``.

References:
    Y. Yao, L. Rosasco, A. Caponnetto, "On Early Stopping in Gradient Descent
    Learning", Constr. Approx. 26 (2007) 289-315 (the algorithm and step sizes).
    G. Raskutti, M. J. Wainwright, B. Yu, "Early Stopping and Non-parametric
    Regression: An Optimal Data-dependent Stopping Rule", JMLR 15 (2014)
    335-366, eq. (6) (the ``"raskutti"`` rule).
    A. Celisse, M. Wahl, "Analyzing the discrepancy principle for kernelized
    spectral filter learning algorithms", JMLR 22 (2021) (the ``"discrepancy"`` rule
    and the smoothed residuals of ``"smoothed_discrepancy"``).
    Y. Averyanov, A. Celisse, "Early stopping and polynomial smoothing in regression
    with reproducing kernels", arXiv:2007.06827 (2020) (residuals smoothed by a power
    of ``K/m``, threshold ``sigma^2 tr((K/m)^p) / m``).
    J. Rice, "Bandwidth choice for nonparametric regression", Ann. Statist. 12
    (1984) 1215-1230 (difference-based noise estimation; here with nearest neighbours).
"""

from __future__ import annotations

import inspect
import math
import warnings
from types import SimpleNamespace
from typing import Callable

import numpy as np

from keras_regkit._validation import check_choice, check_int, check_range
from keras_regkit.stopping.kernels import as_2d
from keras_regkit.stopping.yao import yao_step_size, yao_stopping_time

__all__ = [
    "KernelGradientDescent",
    "checkpoint_grid",
    "eigenvalue_decay",
    "estimate_noise_level",
    "smoothing_power",
]

_OWNER = "KernelGradientDescent"
_RULES = ("yao", "raskutti", "discrepancy", "smoothed_discrepancy", "holdout", "oracle")
_HEAD = 0.05  # gamma_0 * lambda above which log(1 - gamma lambda) is summed exactly
_SERIES_TOLERANCE = 1e-17
_CHUNK_ELEMENTS = 4_000_000  # (checkpoints x m) entries evaluated per batch
STORED_ITERATIONS = 2**20  # theta > 0: step-size sums stored up to here, a series beyond
_MAX_SERIES_TERMS = 200
# Bernoulli numbers B_2, B_4, B_6 over (2p)!, for the Euler-Maclaurin corrections.
_EULER_MACLAURIN = ((1, 1.0 / 6.0 / 2.0), (3, -1.0 / 30.0 / 24.0), (5, 1.0 / 42.0 / 720.0))


def checkpoint_grid(max_iter: int, dense: int = 100, ratio: float = 1.02) -> np.ndarray:
    """Iterations ``0..dense`` and then a geometric grid of ratio ``ratio`` up to ``max_iter``.

    The risk of early-stopped gradient descent changes on a logarithmic time scale,
    so rules that evaluate the path (``"holdout"``, ``"oracle"``) look at these
    checkpoints rather than at every iteration.

    Args:
        max_iter: last iteration, ``>= 0`` (always included).
        dense: every iteration up to this one is included, ``>= 0``.
        ratio: growth factor of the grid beyond ``dense``, ``> 1``.

    Returns:
        Sorted unique int64 array of iterations in ``[0, max_iter]``.

    Raises:
        ValueError: ``max_iter < 0``, ``dense < 0`` or ``ratio <= 1``.
    """
    max_iter = check_int("checkpoint_grid", "max_iter", max_iter, minimum=0)
    dense = check_int("checkpoint_grid", "dense", dense, minimum=0)
    ratio = check_range("checkpoint_grid", "ratio", ratio, 1.0, None, low_inclusive=False)
    points = [np.arange(min(dense, max_iter) + 1)]
    if max_iter > dense:
        count = int(math.ceil(math.log(max_iter / max(dense, 1)) / math.log(ratio))) + 1
        points.append(np.round(max(dense, 1) * ratio ** np.arange(count)).astype(np.int64))
        points.append(np.array([max_iter]))
    grid = np.unique(np.concatenate(points).astype(np.int64))
    return grid[grid <= max_iter]


def estimate_noise_level(X, y) -> float:
    """Noise standard deviation from nearest-neighbour differences.

    ``sigma^2 = (1 / 2m) sum_i (y_i - y_nn(i))^2``, where ``nn(i)`` is the nearest
    other input (Euclidean). Unbiased up to ``E (f(x_i) - f(x_nn(i)))^2 / 2``, which
    vanishes as the inputs fill the space (fast in low dimension, slowly in high).

    Args:
        X: inputs, shape ``(m, d)`` (or ``(m,)``), ``m >= 2``.
        y: targets, shape ``(m,)`` or ``(m, k)`` (all outputs pooled).

    Returns:
        The estimated ``sigma >= 0``.

    Raises:
        ValueError: fewer than 2 points or mismatched lengths.

    References:
        Rice (1984) for the 1-D first-difference estimator this generalizes.
    """
    owner = "estimate_noise_level"
    inputs = as_2d(owner, "X", X)
    targets = _targets(owner, y, inputs.shape[0])
    m = inputs.shape[0]
    if m < 2:
        raise ValueError(f"{owner}: needs at least 2 points, got m={m}")
    norms = np.sum(inputs * inputs, axis=1)
    neighbour = np.empty(m, dtype=np.int64)
    rows = max(1, _CHUNK_ELEMENTS // m)
    for start in range(0, m, rows):
        block = slice(start, min(m, start + rows))
        distance = norms[block, None] + norms[None, :] - 2.0 * inputs[block] @ inputs.T
        distance[np.arange(distance.shape[0]), np.arange(block.start, block.stop)] = np.inf
        neighbour[block] = np.argmin(distance, axis=1)
    differences = targets - targets[neighbour]
    return float(math.sqrt(np.mean(differences**2) / 2.0))


def eigenvalue_decay(eigenvalues) -> float | None:
    """Exponent ``b`` of a polynomial decay ``lambda_j ~ j^(-b)``, fitted on a spectrum.

    The least-squares slope of ``log lambda_j`` against ``log j`` over the eigenvalues
    from the second largest down to ``lambda_1 / m`` (``m`` eigenvalues in all): the
    largest is left out because it often belongs to a constant function, and the
    smallest ones of an empirical kernel matrix do not follow the operator's decay.

    Args:
        eigenvalues: the eigenvalues of ``K/m`` (any order), ``>= 0``.

    Returns:
        ``b``, or ``None`` when fewer than 3 eigenvalues are in the fitted range
        (a kernel of very small rank).
    """
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64).reshape(-1))[::-1]
    if values.size < 4 or not values[0] > 0.0:
        return None
    index = np.arange(1, values.size + 1)
    keep = (index >= 2) & (values >= values[0] / values.size)
    if np.count_nonzero(keep) < 3:
        return None
    return float(-np.polyfit(np.log(index[keep]), np.log(values[keep]), 1)[0])


def smoothing_power(eigenvalues) -> float:
    """Power ``p`` of ``K/m`` for smoothed residuals, chosen from the kernel's eigenvalue decay.

    With ``lambda_j ~ j^(-b)`` the smoothed noise level ``sigma^2 sum_{lambda_j > 1/t} lambda_j^p / m``
    keeps growing with the iteration ``t`` only if ``p < 1/b`` (otherwise it saturates and
    the rule balances the smoothed bias against a constant: it stops early, at the
    capacity-independent time), and the smoothed noise ``sum_j lambda_j^p eps_j^2 / m``
    fluctuates by less than that level for every ``t`` if ``p > 1/(2b)`` (the plain
    principle, ``p = 0``, fluctuates by ``sigma^2 sqrt(2/m)``). This returns the middle of
    that interval, ``p = 3/(4b)`` with ``b`` from :func:`eigenvalue_decay`, clipped to
    ``[0.05, 1]``; ``1`` (the smoothing ``(K/m)^(1/2)`` of Celisse & Wahl) when the
    spectrum is too short to fit.

    Args:
        eigenvalues: the eigenvalues of ``K/m``, ``>= 0``.

    Returns:
        ``p`` in ``[0.05, 1]``.
    """
    decay = eigenvalue_decay(eigenvalues)
    if decay is None or decay <= 0.0:
        return 1.0
    return float(min(1.0, max(0.05, 0.75 / decay)))


def smoothed_residual_weights(eigenvalues, power: float) -> np.ndarray:
    """``lambda_j^p`` (``1`` everywhere for ``p = 0``; ``0`` for null eigenvalues otherwise)."""
    values = np.maximum(np.asarray(eigenvalues, dtype=np.float64), 0.0)
    if power == 0.0:
        return np.ones_like(values)
    return values**power


def resolve_smoothing_power(owner: str, power, eigenvalues) -> float:
    """``power`` checked to lie in ``[0, 1]``, or ``"auto"`` resolved by :func:`smoothing_power`."""
    if isinstance(power, str):
        check_choice(owner, "power", power, ("auto",))
        return smoothing_power(eigenvalues)
    return check_range(owner, "power", power, 0.0, 1.0)


def squares_per_direction(projected: np.ndarray) -> np.ndarray:
    """``(U^T v)_j^2`` per eigen-direction, averaged over the outputs of multi-output targets."""
    squares = projected**2
    return squares.mean(axis=1) if squares.ndim == 2 else squares


def power_sum_between(first: int, last: np.ndarray, exponent: float) -> np.ndarray:
    """``sum_{n = first}^{last} n^(-exponent)`` for large ``first`` (0 where ``last < first``).

    The Euler-Maclaurin formula with three Bernoulli corrections: for ``first >= 1000``
    the remainder is below ``1e-20`` relative to the sum.
    """
    a = float(first)
    b = np.maximum(np.asarray(last, dtype=np.float64), a - 1.0)
    s = float(exponent)
    log_ratio = np.log(np.maximum(b, a) / a)
    if abs(1.0 - s) < 1e-12:
        integral = log_ratio
    else:
        integral = a ** (1.0 - s) * np.expm1((1.0 - s) * log_ratio) / (1.0 - s)
    total = integral + (a**-s + b**-s) / 2.0
    for order, coefficient in _EULER_MACLAURIN:  # f^(order)(x) = (-1)^order (s)_order x^(-s-order)
        rising = math.prod(s + i for i in range(order))
        derivative = lambda x: -rising * x ** (-s - order)  # noqa: E731 (order is odd)
        total = total + coefficient * (derivative(b) - derivative(a))
    return np.where(b < a, 0.0, total)


def _targets(owner: str, y, m: int) -> np.ndarray:
    targets = np.asarray(y, dtype=np.float64)
    if targets.ndim not in (1, 2) or targets.shape[0] != m:
        raise ValueError(f"{owner}: X and y must have the same number of rows, "
                         f"got X with {m} rows and y of shape {np.shape(y)}")
    if not np.all(np.isfinite(targets)):
        raise ValueError(f"{owner}: y must be finite, got non-finite values")
    return targets


class KernelGradientDescent:
    """Early-stopped gradient descent in an RKHS, with the whole path and stopping rules.

    ``fit`` computes the kernel matrix in float64, checks that it is symmetric
    positive semi-definite, and diagonalizes ``K / m`` once; afterwards ``predict``,
    ``coefficients`` and ``training_mse`` evaluate the iterate ``f_t`` of the
    recursion ``alpha_{t+1} = alpha_t - (gamma_t/m)(K alpha_t - y)`` at any
    ``t <= max_iter`` without iterating, agreeing with the plain recursion to
    rounding error. ``gamma_t = 1/(kappa^2 (t+1)^theta)``; the first step uses
    ``gamma_0``.

    Stopping rules (``select(rule, ...)`` or ``fit(..., rule=...)``):

    * ``"yao"`` (``r``, ``exponent_offset=2.0``, ``constant=1.0``): the a-priori time
      :func:`~keras_regkit.stopping.yao.yao_stopping_time`.
    * ``"raskutti"`` (``sigma=None``): Raskutti, Wainwright & Yu (2014), eq. (6):
      with ``eta_t = sum_{k<t} gamma_k`` and the local empirical kernel complexity
      ``R(eps) = sqrt(mean(min(lambda_i, eps^2)))`` (``lambda_i`` the eigenvalues of
      ``K/m``), stop at ``min{t : R(1/sqrt(eta_t)) > 1/(2 e sigma eta_t)} - 1``.
      Their analysis assumes steps ``<= min(1, 1/lambda_1)``, which the default
      ``kappa`` gives whenever ``kappa >= 1``.
    * ``"discrepancy"`` (``sigma=None``, ``tau=1.0``): the first ``t`` at which the
      training mean squared error is ``<= tau * sigma^2`` (Celisse & Wahl 2021).
    * ``"smoothed_discrepancy"`` (``sigma=None``, ``tau=1.0``, ``power="auto"``): the
      discrepancy principle on smoothed residuals, the first ``t`` with
      ``(1/m) (y - f_t)^T (K/m)^p (y - f_t) <= tau * sigma^2 tr((K/m)^p) / m``
      (the right side is the expected smoothed noise). ``p = 1`` smooths by
      ``(K/m)^(1/2)`` (Celisse & Wahl 2021); other powers are Averyanov & Celisse's
      polynomial smoothing; ``p = 0`` is the plain principle. ``"auto"`` takes
      :func:`smoothing_power` of the spectrum, ``3/(4b)`` for eigenvalues decaying as
      ``j^(-b)``: with a trace-class kernel (``b > 1``) ``p = 1`` over-smooths and stops
      at the capacity-independent time, too early by a factor that grows with ``m``
      (2.3-3.9x the oracle's risk at ``m = 3200`` in ``examples/yao_rates.py``).
      The smoothed residual is non-increasing in ``t`` and, for ``p > 0``, tends to 0,
      so the rule always fires for ``sigma > 0``; a time beyond ``max_iter`` is
      clamped to it with a warning.
    * ``"holdout"`` (``X_val``, ``y_val``, ``patience=20``, ``checkpoints=None``): the
      checkpoint with the lowest validation error, scanning checkpoints in order and
      giving up after ``patience`` checkpoints without a strict improvement.
    * ``"oracle"`` (``X_test`` and ``f_test`` -- the noise-free regression function at
      ``X_test`` -- or ``risk``, a callable mapping coefficient rows ``(n, m)`` to
      excess risks ``(n,)``; ``checkpoints=None``): the checkpoint of least risk.

    ``sigma=None`` uses :func:`estimate_noise_level` on the training data.
    ``checkpoints=None`` means :func:`checkpoint_grid` ``(max_iter)``; ``"all"`` means
    every iteration.

    Args:
        kernel: callable ``kernel(A, B) -> (len(A), len(B))`` Gram matrix.
        theta: step-size decay exponent in ``[0, 1)``.
        kappa: ``sqrt(sup K(x, x))``; ``None`` takes the largest diagonal entry of
            the training kernel matrix. Must make ``gamma_0 lambda_max(K/m) <= 2``
            (otherwise the iteration diverges).

    Attributes (after ``fit``):
        m_, kappa_, max_iter_, eigenvalues_ (of ``K/m``, ascending),
        stopping_time_ (``max_iter`` until a rule selects one), rule_,
        noise_level_ (``sigma`` used by the last selected rule, ``None`` if that rule
        needs none), smoothing_power_ (``p`` of the last ``"smoothed_discrepancy"``,
        else ``None``).

    Raises:
        TypeError: ``kernel`` not callable.
        ValueError: ``theta`` outside ``[0, 1)``, ``kappa <= 0``; at ``fit``: a kernel
            matrix that is not symmetric positive semi-definite, mismatched ``X``/``y``,
            ``max_iter < 1``; in rules: ``r <= 0``, ``sigma <= 0``, ``tau <= 0``,
            ``power`` outside ``[0, 1]``, a validation or test set whose columns or
            rows do not match, unknown rules.

    References:
        Yao, Rosasco & Caponnetto (2007); Raskutti, Wainwright & Yu (2014);
        Celisse & Wahl (2021); Averyanov & Celisse (2020).
    """

    def __init__(self, kernel: Callable, theta: float = 0.0, kappa: float | None = None):
        if not callable(kernel):
            raise TypeError(f"{_OWNER}: kernel must be callable, got {kernel!r}")
        self.kernel = kernel
        self.theta = check_range(_OWNER, "theta", theta, 0.0, 1.0, high_inclusive=False)
        self.kappa = None if kappa is None else check_range(
            _OWNER, "kappa", kappa, 0.0, None, low_inclusive=False)
        self.stopping_time_: int | None = None
        self.rule_: str | None = None
        self.noise_level_: float | None = None
        self.smoothing_power_: float | None = None

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, max_iter: int = 100, rule: str | None = None,
            reuse: "KernelGradientDescent | None" = None, **rule_kwargs):
        """Diagonalizes the kernel matrix and prepares the path for ``t = 0..max_iter``.

        Args:
            X: training inputs, shape ``(m, d)`` or ``(m,)``.
            y: targets, shape ``(m,)`` or ``(m, k)``.
            max_iter: last iteration of the path, ``>= 1``. With ``theta = 0`` the path
                costs nothing per iteration, so large values are free; with
                ``theta > 0`` memory grows as ``min(max_iter, 2^20)`` times ~16 floats
                (plus one float per large eigenvalue), and iterations beyond ``2^20``
                come from a series (``theta >= 0.1``; see the module docstring).
            rule: optional stopping rule to run at once (see the class docstring).
            reuse: a model already fitted on the same ``X`` with the same kernel
                object; its eigendecomposition is reused (and its step-size sums when
                ``theta``, ``kappa`` and ``max_iter`` also agree), so that fitting other
                targets or step sizes on the same inputs costs no new ``O(m^3)``.
            **rule_kwargs: arguments of that rule.

        Returns:
            ``self``.

        Raises:
            ValueError: see the class docstring; ``reuse`` fitted on other inputs;
                ``max_iter`` beyond what the path can represent (``> 2^20`` when
                ``theta`` is so small that the steps at ``2^20`` still make
                ``gamma_t * lambda_max`` close to 1).
        """
        inputs = as_2d(_OWNER, "X", X)
        targets = _targets(_OWNER, y, inputs.shape[0])
        max_iter = check_int(_OWNER, "max_iter", max_iter, minimum=1)
        if reuse is not None:
            if not (isinstance(reuse, KernelGradientDescent) and hasattr(reuse, "_vectors")
                    and reuse.kernel is self.kernel and np.array_equal(reuse.X_, inputs)):
                raise ValueError(f"{_OWNER}: reuse must be a model fitted on the same X with the "
                                 f"same kernel object, got {reuse!r}")
            eigenvalues, eigenvectors = reuse.eigenvalues_, reuse._vectors
            diagonal = reuse._diagonal
        else:
            eigenvalues, eigenvectors, diagonal = self._decompose(inputs)
        kappa = math.sqrt(diagonal) if self.kappa is None else self.kappa
        if kappa <= 0.0:
            raise ValueError(f"{_OWNER}: kappa must be > 0, got {kappa!r} "
                             "(the kernel matrix has a zero diagonal)")
        top = float(eigenvalues[-1])
        if top / kappa**2 > 2.0:
            raise ValueError(f"{_OWNER}: kappa must satisfy gamma_0 * lambda_max(K/m) <= 2 for "
                             f"the iteration to converge, got kappa={kappa!r} with "
                             f"gamma_0 * lambda_max = {top / kappa**2:.3g}")

        self.X_, self.y_, self.m_ = inputs, targets, inputs.shape[0]
        self.kappa_, self.max_iter_ = kappa, max_iter
        self.eigenvalues_, self._vectors, self._diagonal = eigenvalues, eigenvectors, diagonal
        self._projected = eigenvectors.T @ targets
        if (reuse is not None and reuse.theta == self.theta and reuse.kappa_ == kappa
                and reuse.max_iter_ == max_iter):
            self._steps, self._path = reuse._steps, reuse._path
        else:
            count = 1 if self.theta == 0.0 else min(max_iter, STORED_ITERATIONS)
            self._steps = yao_step_size(np.arange(count), kappa, self.theta)
            self._path = self._prepare_path(self._steps, eigenvalues, max_iter, kappa)
        self.stopping_time_, self.rule_, self.noise_level_ = max_iter, None, None
        self.smoothing_power_ = None
        self._estimated_sigma = None
        if rule is not None:
            self.select(rule, **rule_kwargs)
        return self

    def _decompose(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Eigenvalues (clipped at 0) and eigenvectors of ``K/m``, and ``max K(x_i, x_i)``."""
        m = inputs.shape[0]
        gram = np.asarray(self.kernel(inputs, inputs), dtype=np.float64)
        if gram.shape != (m, m) or not np.all(np.isfinite(gram)):
            raise ValueError(f"{_OWNER}: kernel(X, X) must be a finite ({m}, {m}) matrix, "
                             f"got shape {gram.shape}")
        scale = max(float(np.max(np.abs(gram))), np.finfo(np.float64).tiny)
        asymmetry = float(np.max(np.abs(gram - gram.T)))
        if asymmetry > 1e-10 * scale:
            raise ValueError(f"{_OWNER}: the kernel matrix must be symmetric, got "
                             f"max |K - K^T| = {asymmetry:.3g} (max |K| = {scale:.3g})")
        eigenvalues, eigenvectors = np.linalg.eigh((gram + gram.T) / (2.0 * m))
        top = max(float(eigenvalues[-1]), 0.0)
        if eigenvalues[0] < -1e-9 * max(top, scale / m):
            raise ValueError(f"{_OWNER}: the kernel matrix must be positive semi-definite, "
                             f"got smallest eigenvalue of K/m = {eigenvalues[0]:.3g} "
                             f"(largest {top:.3g})")
        return np.maximum(eigenvalues, 0.0), eigenvectors, float(np.max(np.diag(gram)))

    def _prepare_path(self, steps: np.ndarray, eigenvalues: np.ndarray, max_iter: int,
                      kappa: float) -> SimpleNamespace:
        """What ``log |rho_t(lambda)|``, its sign and ``sum_{k<t} gamma_k`` are computed from."""
        x = steps[0] * eigenvalues
        if self.theta == 0.0:
            # Constant steps: rho_t(lambda) = (1 - gamma lambda)^t in closed form, any t.
            with np.errstate(divide="ignore"):
                log_factor = np.where(x < 1.0, np.log1p(-np.minimum(x, 1.0)),
                                      np.log(np.abs(1.0 - x)))
            return SimpleNamespace(log_factor=log_factor, negative_factor=x > 1.0)
        head, tail = np.flatnonzero(x > _HEAD), np.flatnonzero(x <= _HEAD)
        tail_max = float(np.max(x[tail])) if tail.size else 0.0
        terms = 1
        while tail_max > 0.0 and terms < 40 and (
            tail_max**terms / ((terms + 1) * (1.0 - tail_max)) > _SERIES_TOLERANCE
        ):
            terms += 1
        powers = steps[:, None] ** np.arange(1, terms + 1)[None, :]
        orders = np.arange(1, terms + 1)[:, None]
        factors = 1.0 - steps[:, None] * eigenvalues[head][None, :]
        with np.errstate(divide="ignore"):
            logs = np.where(factors > 0.0, np.log1p(-np.minimum(1.0 - factors, 1.0)),
                            np.log(np.abs(factors)))
        zeros = np.zeros((1, head.size))
        path = SimpleNamespace(
            head=head,
            tail=tail,
            power_sums=np.vstack([np.zeros((1, terms)), np.cumsum(powers, axis=0)]),
            series=eigenvalues[tail][None, :] ** orders / orders,  # (terms, n_tail)
            head_log=np.vstack([zeros, np.cumsum(logs, axis=0)]),
            head_negative=np.vstack([zeros, np.cumsum(factors < 0.0, axis=0)]) % 2 == 1,
            stored=len(steps),
        )
        if max_iter > path.stored:
            path.beyond = self._prepare_beyond(path, eigenvalues, max_iter, kappa)
        return path

    def _prepare_beyond(self, path: SimpleNamespace, eigenvalues: np.ndarray, max_iter: int,
                        kappa: float) -> SimpleNamespace:
        """The series of every eigenvalue from the last stored iteration on."""
        stored = path.stored
        largest = float(yao_step_size(np.array([stored]), kappa, self.theta)[0] * eigenvalues[-1])
        terms = 1
        while largest > 0.0 and terms <= _MAX_SERIES_TERMS and (
            largest**terms / ((terms + 1) * (1.0 - largest)) > _SERIES_TOLERANCE
        ):
            terms += 1
        if largest >= 1.0 or terms > _MAX_SERIES_TERMS:
            raise ValueError(
                f"{_OWNER}: max_iter must be <= {stored} for theta={self.theta} (beyond it the path "
                f"is a series in gamma_t * lambda_max, which is still {largest:.3g} at t={stored}: "
                f"steps shrink too slowly), got max_iter={max_iter}"
            )
        orders = np.arange(1, terms + 1)
        log_at_stored = np.empty(eigenvalues.size)
        log_at_stored[path.tail] = -path.power_sums[stored] @ path.series
        log_at_stored[path.head] = path.head_log[stored]
        negative_at_stored = np.zeros(eigenvalues.size, dtype=bool)
        negative_at_stored[path.head] = path.head_negative[stored]
        return SimpleNamespace(
            orders=orders,
            scale=kappa ** (-2.0 * orders),  # gamma_k^j = kappa^(-2j) (k+1)^(-j theta)
            series=eigenvalues[None, :] ** orders[:, None] / orders[:, None],  # (terms, m)
            log_at_stored=log_at_stored,
            negative_at_stored=negative_at_stored,
            first_step_sum=float(path.power_sums[stored, 0]),
        )

    def _power_sums_beyond(self, times: np.ndarray) -> np.ndarray:
        """``P_j(t) - P_j(stored)`` for ``t >= stored``: rows ``times``, columns ``j``."""
        beyond, stored = self._path.beyond, self._path.stored
        # sum_{stored <= k < t} gamma_k^j = kappa^(-2j) sum_{n = stored+1}^{t} n^(-j theta)
        return np.stack([scale * power_sum_between(stored + 1, times, order * self.theta)
                         for order, scale in zip(beyond.orders, beyond.scale)], axis=1)

    # ------------------------------------------------------------------ the path
    def _check_fitted(self) -> None:
        if not hasattr(self, "_vectors"):
            raise ValueError(f"{_OWNER}: call fit(X, y, max_iter) first")

    def _times(self, t, name: str = "t") -> np.ndarray:
        times = np.asarray(t)
        if times.dtype.kind not in "iu" or np.any(times < 0) or np.any(times > self.max_iter_):
            raise ValueError(f"{_OWNER}: {name} must be integers in [0, max_iter={self.max_iter_}]"
                             f", got {t!r}")
        return times.astype(np.int64)

    def step_sums(self, t) -> np.ndarray:
        """``eta_t = sum_{k<t} gamma_k``, the effective inverse regularization at ``t``.

        Args:
            t: an iteration or an integer array of iterations in ``[0, max_iter]``.

        Returns:
            A float64 array of ``t``'s shape.
        """
        self._check_fitted()
        times = self._times(t)
        if self.theta == 0.0:
            return times * self._steps[0]
        stored = self._path.stored
        sums = self._path.power_sums[np.minimum(times, stored), 0]
        if np.any(times > stored):
            late = times > stored
            sums = np.where(late, self._path.beyond.first_step_sum, sums)
            sums[late] += self._power_sums_beyond(times[late])[:, 0]
        return sums

    def _log_residuals(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``log |rho_t(lambda_i)|`` and whether ``rho_t(lambda_i) < 0`` (rows: times)."""
        path = self._path
        if self.theta == 0.0:
            with np.errstate(invalid="ignore"):  # 0 * log(0) at t = 0
                logs = np.nan_to_num(times[:, None] * path.log_factor[None, :], nan=0.0)
            negative = path.negative_factor[None, :] & (times[:, None] % 2 == 1)
            return logs, negative
        logs = np.empty((times.size, self.m_))
        negative = np.zeros((times.size, self.m_), dtype=bool)
        early = times <= path.stored
        stored_times = times[early]
        logs[np.ix_(early, path.tail)] = -path.power_sums[stored_times] @ path.series
        logs[np.ix_(early, path.head)] = path.head_log[stored_times]
        negative[np.ix_(early, path.head)] = path.head_negative[stored_times]
        if not np.all(early):
            late, beyond = ~early, path.beyond
            # Beyond the stored sums every 1 - gamma_k lambda lies in (0, 1): no sign change.
            logs[late] = beyond.log_at_stored[None, :] - self._power_sums_beyond(times[late]) @ beyond.series
            negative[late] = beyond.negative_at_stored[None, :]
        return logs, negative

    def _residual_factors(self, times: np.ndarray) -> np.ndarray:
        """``rho_t(lambda_i)`` for each ``t`` in ``times`` (rows) and eigenvalue (columns)."""
        logs, negative = self._log_residuals(times)
        magnitude = np.exp(logs)
        return np.where(negative, -magnitude, magnitude)

    def _filters(self, times: np.ndarray) -> np.ndarray:
        """``g_t(lambda) = (1 - rho_t(lambda)) / lambda`` (``sum_{k<t} gamma_k`` at 0)."""
        logs, negative = self._log_residuals(times)
        one_minus = np.where(negative, 1.0 + np.exp(logs), -np.expm1(logs))
        positive = self.eigenvalues_ > 0.0
        safe = np.where(positive, self.eigenvalues_, 1.0)
        return np.where(positive[None, :], one_minus / safe[None, :],
                        self.step_sums(times)[:, None])

    def _chunks(self, times: np.ndarray):
        size = max(1, _CHUNK_ELEMENTS // self.m_)
        for start in range(0, times.size, size):
            yield times[start:start + size]

    def coefficients(self, t) -> np.ndarray:
        """The coefficients ``alpha_t`` of ``f_t = sum_i alpha_t[i] K(x_i, .)``.

        Args:
            t: an iteration or an integer array of iterations in ``[0, max_iter]``.

        Returns:
            ``(m,)`` (or ``(m, k)``) for a scalar ``t``; ``(len(t), m[, k])`` otherwise.

        Raises:
            ValueError: ``t`` outside ``[0, max_iter]`` or not fitted.
        """
        self._check_fitted()
        times = self._times(t)
        flat = times.reshape(-1)
        filters = self._filters(flat)  # (n, m)
        if self._projected.ndim == 1:
            alpha = (filters * self._projected[None, :]) @ self._vectors.T / self.m_
        else:
            alpha = np.einsum("nj,jk,ij->nik", filters, self._projected, self._vectors) / self.m_
        return alpha[0] if times.ndim == 0 else alpha

    def training_mse(self, t=None) -> np.ndarray | float:
        """Training mean squared error of ``f_t`` (all iterations when ``t`` is None).

        Args:
            t: an iteration, an integer array of them, or ``None`` for ``0..max_iter``.

        Returns:
            A float for a scalar ``t``, else a float64 array.

        Raises:
            ValueError: ``t`` outside ``[0, max_iter]`` or not fitted.
        """
        self._check_fitted()
        return self._weighted_residuals(t, squares_per_direction(self._projected))

    def _weighted_residuals(self, t, weights: np.ndarray) -> np.ndarray | float:
        """``sum_j weights_j rho_t(lambda_j)^2 / m`` for ``t`` (``None``: every iteration)."""
        times = np.arange(self.max_iter_ + 1) if t is None else self._times(t)
        out = np.concatenate([
            self._residual_factors(chunk) ** 2 @ weights / self.m_
            for chunk in self._chunks(times.reshape(-1))
        ])
        return float(out[0]) if np.ndim(times) == 0 else out.reshape(times.shape)

    def smoothed_residuals(self, t=None, power: float = 1.0) -> np.ndarray | float:
        """``(1/m) (y - f_t)^T (K/m)^p (y - f_t)`` on the training points.

        ``power=0`` gives :meth:`training_mse`; ``power=1`` the residuals smoothed by
        ``(K/m)^(1/2)``. Non-increasing in ``t``.

        Args:
            t: an iteration, an integer array of them, or ``None`` for ``0..max_iter``.
            power: ``p`` in ``[0, 1]``.

        Returns:
            A float for a scalar ``t``, else a float64 array.

        Raises:
            ValueError: ``t`` outside ``[0, max_iter]``, ``power`` outside ``[0, 1]``, or
                not fitted.
        """
        self._check_fitted()
        power = check_range(_OWNER, "power", power, 0.0, 1.0)
        weights = smoothed_residual_weights(self.eigenvalues_, power)
        return self._weighted_residuals(t, weights * squares_per_direction(self._projected))

    def predict(self, X, t=None) -> np.ndarray:
        """Predictions of ``f_t`` at ``X``; ``t`` defaults to ``stopping_time_``.

        Args:
            X: inputs, shape ``(n, d)`` or ``(n,)``.
            t: an iteration in ``[0, max_iter]`` or an integer array of them.

        Returns:
            ``(n,)`` (or ``(n, k)``) for a scalar ``t``; ``(len(t), n[, k])`` otherwise.
            ``t = 0`` gives zeros.

        Raises:
            ValueError: not fitted, bad ``t``, or ``X`` with the wrong number of columns.
        """
        self._check_fitted()
        t = self.stopping_time_ if t is None else t
        inputs = self._inputs_like_training("X", X)
        cross = np.asarray(self.kernel(inputs, self.X_), dtype=np.float64)
        alpha = self.coefficients(t)
        if np.ndim(t) == 0:
            return cross @ alpha
        return np.einsum("nm,tm...->tn...", cross, alpha)

    def mse(self, X, y, t=None) -> np.ndarray:
        """Mean squared difference between ``f_t(X)`` and ``y`` along the path.

        Evaluated in chunks of iterations without storing the coefficients, so the
        whole curve costs ``O(n m)`` per iteration after one ``O(n m^2)`` projection.

        Args:
            X: inputs, shape ``(n, d)`` or ``(n,)``.
            y: values to compare with, shape ``(n,)`` or ``(n, k)`` like the targets.
            t: integer array of iterations; ``None`` for every ``t`` in ``0..max_iter``.

        Returns:
            float64 array with one error per iteration.

        Raises:
            ValueError: not fitted, bad ``t``, mismatched ``X``/``y``.
        """
        self._check_fitted()
        inputs, targets = self._evaluation_set(X, y, "X", "y")
        times = np.arange(self.max_iter_ + 1) if t is None else self._times(np.reshape(t, -1))
        return np.concatenate([errors for _, errors in self._path_errors(inputs, targets, times)])

    def _inputs_like_training(self, name: str, X) -> np.ndarray:
        inputs = as_2d(_OWNER, name, X)
        if inputs.shape[1] != self.X_.shape[1]:
            raise ValueError(f"{_OWNER}: {name} must have {self.X_.shape[1]} columns like the "
                             f"training inputs, got shape {np.shape(X)}")
        return inputs

    def _evaluation_set(self, X, y, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets checked against the training data's columns and target shape."""
        inputs = self._inputs_like_training(x_name, X)
        targets = np.asarray(y, dtype=np.float64)
        if targets.shape[:1] != inputs.shape[:1] or targets.shape[1:] != self._projected.shape[1:]:
            expected = (inputs.shape[0],) + self._projected.shape[1:]
            raise ValueError(f"{_OWNER}: {y_name} must have shape {expected} (one row per row of "
                             f"{x_name}, like the training targets), got {np.shape(y)}")
        if not np.all(np.isfinite(targets)):
            raise ValueError(f"{_OWNER}: {y_name} must be finite, got non-finite values")
        return inputs, targets

    def _path_errors(self, inputs: np.ndarray, targets: np.ndarray, times: np.ndarray):
        """Mean squared differences between ``f_t(inputs)`` and ``targets``, lazily per chunk."""
        cross = np.asarray(self.kernel(inputs, self.X_), dtype=np.float64)
        projected_cross = cross @ self._vectors / self.m_  # (n, m)
        for chunk in self._chunks(times):
            filters = self._filters(chunk)
            if self._projected.ndim == 1:
                predictions = (filters * self._projected[None, :]) @ projected_cross.T
                yield chunk, np.mean((predictions - targets[None, :]) ** 2, axis=1)
            else:
                predictions = np.einsum("tj,jk,nj->tnk", filters, self._projected,
                                        projected_cross)
                yield chunk, np.mean((predictions - targets[None]) ** 2, axis=(1, 2))

    # ------------------------------------------------------------------ rules
    def select(self, rule: str, **kwargs) -> int:
        """Runs a stopping rule and stores its time in ``stopping_time_``.

        Args:
            rule: one of ``"yao"``, ``"raskutti"``, ``"discrepancy"``,
                ``"smoothed_discrepancy"``, ``"holdout"``, ``"oracle"`` (arguments in the
                class docstring).
            **kwargs: the rule's arguments.

        Returns:
            The selected iteration, in ``[0, max_iter]``.

        Raises:
            ValueError: unknown rule, bad or missing rule arguments, not fitted.
        """
        self._check_fitted()
        check_choice(_OWNER, "rule", rule, _RULES)
        method = getattr(self, f"_select_{rule}")
        try:
            inspect.signature(method).bind(**kwargs)
        except TypeError as error:
            raise ValueError(f"{_OWNER}: bad arguments for rule {rule!r}: {error}") from None
        self.noise_level_ = None  # set again by a rule that uses sigma
        self.smoothing_power_ = None
        t = method(**kwargs)
        self.stopping_time_, self.rule_ = int(t), rule
        return self.stopping_time_

    def _clamp(self, t: int, rule: str) -> int:
        if t > self.max_iter_:
            warnings.warn(f"{_OWNER}: rule {rule!r} asks for t={t} > max_iter={self.max_iter_}; "
                          "using max_iter (fit with a larger max_iter)", stacklevel=4)
            return self.max_iter_
        return t

    def _sigma(self, sigma) -> float:
        if sigma is None:
            if self._estimated_sigma is None:
                self._estimated_sigma = estimate_noise_level(self.X_, self.y_)
            sigma = self._estimated_sigma
            if sigma <= 0.0:
                raise ValueError(f"{_OWNER}: the estimated noise level is {sigma!r}; "
                                 "pass sigma > 0")
        else:
            sigma = check_range(_OWNER, "sigma", sigma, 0.0, None, low_inclusive=False)
        self.noise_level_ = float(sigma)
        return float(sigma)

    def _first_true(self, predicate: Callable[[int], bool]) -> int | None:
        """Smallest ``t`` in ``[0, max_iter]`` with a monotone ``predicate(t)``, else None."""
        if not predicate(self.max_iter_):
            return None
        low, high = -1, self.max_iter_
        while high - low > 1:
            middle = (low + high) // 2
            if predicate(middle):
                high = middle
            else:
                low = middle
        return high

    def _select_yao(self, r: float, exponent_offset: float = 2.0, constant: float = 1.0) -> int:
        t = yao_stopping_time(self.m_, r, self.theta, exponent_offset=exponent_offset,
                              constant=constant)
        return self._clamp(t, "yao")

    def _select_discrepancy(self, sigma: float | None = None, tau: float = 1.0) -> int:
        tau = check_range(_OWNER, "tau", tau, 0.0, None, low_inclusive=False)
        threshold = tau * self._sigma(sigma) ** 2
        # The training error never increases: every |1 - gamma_k lambda| <= 1.
        t = self._first_true(lambda s: self.training_mse(s) <= threshold)
        return self._clamp(self.max_iter_ + 1 if t is None else t, "discrepancy")

    def _select_smoothed_discrepancy(self, sigma: float | None = None, tau: float = 1.0,
                                     power: float | str = "auto") -> int:
        tau = check_range(_OWNER, "tau", tau, 0.0, None, low_inclusive=False)
        power = resolve_smoothing_power(_OWNER, power, self.eigenvalues_)
        weights = smoothed_residual_weights(self.eigenvalues_, power)
        threshold = tau * self._sigma(sigma) ** 2 * float(np.sum(weights)) / self.m_
        self.smoothing_power_ = float(power)
        weighted = weights * squares_per_direction(self._projected)  # once, not per bisection step
        t = self._first_true(lambda s: self._weighted_residuals(s, weighted) <= threshold)
        return self._clamp(self.max_iter_ + 1 if t is None else t, "smoothed_discrepancy")

    def _select_raskutti(self, sigma: float | None = None) -> int:
        sigma = self._sigma(sigma)
        eigenvalues = self.eigenvalues_

        def exceeded(t: int) -> bool:
            if t == 0:
                return False
            eta = float(self.step_sums(t))
            complexity = math.sqrt(np.mean(np.minimum(eigenvalues, 1.0 / eta)))
            return complexity > 1.0 / (2.0 * math.e * sigma * eta)

        # R(1/sqrt(eta)) * eta grows with eta, so the condition is monotone in t.
        t = self._first_true(exceeded)
        return self._clamp(self.max_iter_ + 1 if t is None else t - 1, "raskutti")

    def _checkpoints(self, checkpoints) -> np.ndarray:
        if checkpoints is None:
            return checkpoint_grid(self.max_iter_)
        if isinstance(checkpoints, str):
            check_choice(_OWNER, "checkpoints", checkpoints, ("all",))
            return np.arange(self.max_iter_ + 1)
        return np.unique(self._times(np.asarray(checkpoints).reshape(-1), "checkpoints"))

    def _select_holdout(self, X_val, y_val, patience: int = 20, checkpoints=None) -> int:
        patience = check_int(_OWNER, "patience", patience, minimum=1)
        inputs, targets = self._evaluation_set(X_val, y_val, "X_val", "y_val")
        best_t, best, waited = 0, math.inf, 0
        for chunk, errors in self._path_errors(inputs, targets, self._checkpoints(checkpoints)):
            for t, error in zip(chunk, errors):
                if error < best:
                    best_t, best, waited = int(t), float(error), 0
                else:
                    waited += 1
                    if waited >= patience:
                        return best_t
        return best_t

    def _select_oracle(self, X_test=None, f_test=None, risk=None, checkpoints=None) -> int:
        times = self._checkpoints(checkpoints)
        if risk is not None:
            if not callable(risk):
                raise ValueError(f"{_OWNER}: risk must be callable, got {risk!r}")
            risks = np.concatenate([np.asarray(risk(self.coefficients(chunk)), dtype=np.float64)
                                    for chunk in self._chunks(times)])
            return int(times[int(np.argmin(risks))])
        if X_test is None or f_test is None:
            raise ValueError(f"{_OWNER}: rule 'oracle' needs X_test and f_test, or risk")
        inputs, targets = self._evaluation_set(X_test, f_test, "X_test", "f_test")
        best_t, best = 0, math.inf
        for chunk, errors in self._path_errors(inputs, targets, times):
            index = int(np.argmin(errors))
            if errors[index] < best:
                best_t, best = int(chunk[index]), float(errors[index])
        return best_t
