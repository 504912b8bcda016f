"""Keras shells for the Yao–Rosasco–Caponnetto theory: step schedule and theory-driven stops.

* :class:`YaoStepSchedule` -- the step sizes ``gamma_t = scale / (kappa^2 (t+1)^theta)``
  as a ``keras.optimizers.schedules.LearningRateSchedule``;
* :class:`YaoStoppingTime` -- stops ``model.fit`` at the a-priori time ``t*(m)``,
  counted in optimizer steps or in epochs;
* :class:`DiscrepancyStopping` -- stops when the training loss first falls to ``sigma^2``;
* :class:`SmoothedDiscrepancyStopping` -- stops when the training residuals, smoothed
  by a power of the kernel matrix of the features, fall to their expected noise level.

With full-batch plain SGD on ``0.5 * mean squared error`` over a bias-free Dense
layer on fixed features ``phi``, ``model.fit`` runs exactly kernel gradient
descent with the kernel ``<phi(x), phi(x')>`` (tested against
:class:`~keras_regkit.stopping.KernelGradientDescent`).

References:
    Y. Yao, L. Rosasco, A. Caponnetto, "On Early Stopping in Gradient Descent
    Learning", Constr. Approx. 26 (2007) 289-315.
    A. Celisse, M. Wahl, "Analyzing the discrepancy principle for kernelized
    spectral filter learning algorithms", JMLR 22 (2021).
    Y. Averyanov, A. Celisse, "Early stopping and polynomial smoothing in regression
    with reproducing kernels", arXiv:2007.06827 (2020).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_regkit import _compat
from keras_regkit._validation import check_choice, check_int, check_range
from keras_regkit.stopping.kernel_gd import (
    resolve_smoothing_power,
    smoothed_residual_weights,
    squares_per_direction,
)
from keras_regkit.stopping.yao import yao_stopping_time

__all__ = ["DiscrepancyStopping", "SmoothedDiscrepancyStopping", "YaoStepSchedule",
           "YaoStoppingTime"]


@keras.saving.register_keras_serializable(package="keras_regkit")
class YaoStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate ``scale / (kappa^2 (step + 1)^theta)``: Yao et al.'s step sizes.

    The optimizer's first step (``step = 0``) uses ``gamma_0 = scale / kappa^2``.
    Keras's ``"mean_squared_error"`` has no factor 1/2, so its gradient is twice the
    one in the theory; use ``scale=0.5`` with it (or a half-MSE loss and ``scale=1``).

    Args:
        kappa: ``sqrt(sup_x K(x, x))``, i.e. the largest feature-vector norm, ``> 0``.
        theta: decay exponent in ``[0, 1)``.
        scale: multiplier on every step, ``> 0``.
        name: name of the schedule.

    Raises:
        ValueError: ``kappa <= 0``, ``theta`` outside ``[0, 1)``, ``scale <= 0``.

    References:
        Yao, Rosasco, Caponnetto (2007).
    """

    def __init__(self, kappa: float, theta: float = 0.0, scale: float = 1.0,
                 name: str = "YaoStepSchedule"):
        owner = "YaoStepSchedule"
        self.kappa = check_range(owner, "kappa", kappa, 0.0, None, low_inclusive=False)
        self.theta = check_range(owner, "theta", theta, 0.0, 1.0, high_inclusive=False)
        self.scale = check_range(owner, "scale", scale, 0.0, None, low_inclusive=False)
        self.name = name

    def __call__(self, step):
        dtype = keras.backend.floatx()
        t = ops.cast(step, dtype)
        return ops.divide(ops.cast(self.scale / self.kappa**2, dtype),
                          ops.power(t + 1.0, ops.cast(self.theta, dtype)))

    def get_config(self) -> dict:
        return {"kappa": self.kappa, "theta": self.theta, "scale": self.scale, "name": self.name}


@keras.saving.register_keras_serializable(package="keras_regkit")
class YaoStoppingTime(keras.callbacks.Callback):
    """Stops ``model.fit`` at Yao's a-priori time ``t*(m)``.

    ``t*(m) = ceil(constant * m^(1/((2r + exponent_offset)(1 - theta))))``
    (:func:`~keras_regkit.stopping.yao_stopping_time`), counted in optimizer steps
    (``unit="steps"``, the theory's iterations when every step uses the full batch)
    or in epochs. Steps are read from ``model.optimizer.iterations`` relative to the
    start of ``fit``, so ``steps_per_execution > 1`` stops at the first execution
    that reaches ``t*``.

    Args:
        r: source-condition exponent ``> 0``.
        theta: step-size decay exponent in ``[0, 1)`` (match the schedule's).
        m: number of training samples; ``None`` reads it from the arrays passed to
            ``fit`` (NumPy/tensor inputs; pass ``m`` for ``tf.data`` and generators).
        unit: ``"steps"`` or ``"epochs"``.
        exponent_offset: offset in ``2r + offset``, ``> 0`` (2 by default; see the docs
            of ``yao_stopping_time`` for what was verified).
        constant: multiplicative constant on ``t*``, ``> 0``.
        verbose: 0 or 1 (one line when it stops).

    Attributes:
        stopping_time: ``t*`` of the last ``fit`` (``None`` before).
        stopped_at: the step or epoch count at which it stopped, or ``None``.
        m: the sample size used.

    Raises:
        ValueError: bad arguments; at ``on_train_begin``, ``m`` unknown.
    """

    def __init__(self, r: float, theta: float = 0.0, m: int | None = None, unit: str = "steps",
                 exponent_offset: float = 2.0, constant: float = 1.0, verbose: int = 0):
        super().__init__()
        owner = "YaoStoppingTime"
        self.r = check_range(owner, "r", r, 0.0, None, low_inclusive=False)
        self.theta = check_range(owner, "theta", theta, 0.0, 1.0, high_inclusive=False)
        self.m = None if m is None else check_int(owner, "m", m, minimum=1)
        self.unit = check_choice(owner, "unit", unit, ("steps", "epochs"))
        self.exponent_offset = check_range(owner, "exponent_offset", exponent_offset, 0.0, None,
                                           low_inclusive=False)
        self.constant = check_range(owner, "constant", constant, 0.0, None, low_inclusive=False)
        self.verbose = check_choice(owner, "verbose", verbose, (0, 1))
        self._given_m = self.m
        self.stopping_time: int | None = None
        self.stopped_at: int | None = None

    def on_train_begin(self, logs=None):
        m = self._given_m if self._given_m is not None else _compat.fit_sample_count()
        if m is None:
            raise ValueError("YaoStoppingTime: m must be given for this kind of training data "
                             "(it could not be read from the arrays passed to fit), got m=None")
        self.m = m
        self.stopping_time = yao_stopping_time(m, self.r, self.theta,
                                               exponent_offset=self.exponent_offset,
                                               constant=self.constant)
        self.stopped_at = None
        self._epochs = 0
        self._start = int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def _stop(self, count: int) -> None:
        self.model.stop_training = True
        self.stopped_at = count
        if self.verbose:
            _compat.print_msg(f"YaoStoppingTime: stopping after {count} {self.unit} "
                               f"(t*(m={self.m}) = {self.stopping_time})")

    def on_train_batch_end(self, batch, logs=None):
        if self.unit == "steps" and self.stopped_at is None:
            steps = int(ops.convert_to_numpy(self.model.optimizer.iterations)) - self._start
            if steps >= self.stopping_time:
                self._stop(steps)

    def on_epoch_end(self, epoch, logs=None):
        self._epochs += 1
        if self.unit == "epochs" and self.stopped_at is None and self._epochs >= self.stopping_time:
            self._stop(self._epochs)

    def get_config(self) -> dict:
        return {"r": self.r, "theta": self.theta, "m": self._given_m, "unit": self.unit,
                "exponent_offset": self.exponent_offset, "constant": self.constant,
                "verbose": self.verbose}

    @classmethod
    def from_config(cls, config) -> "YaoStoppingTime":
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_regkit")
class DiscrepancyStopping(keras.callbacks.Callback):
    """Stops when the training loss first falls to ``tau * sigma^2`` (discrepancy principle).

    Checked at the end of every epoch on ``logs[monitor]``. Keras logs the loss of
    the weights *before* each step, averaged over the epoch; with full-batch
    gradient descent the callback therefore sees the training error of ``f_t`` at
    the end of epoch ``t + 1`` and stops with ``f_(t+1)`` in the model, one step
    after :class:`~keras_regkit.stopping.KernelGradientDescent`'s ``"discrepancy"``
    time ``t``. Use ``tau=0.5`` when the loss is ``0.5 * mean squared error``.
    The training error's own noise (``sigma^2 sqrt(2/m)``) makes this time swing between
    samples when the target is smooth; :class:`SmoothedDiscrepancyStopping` removes most
    of it.

    Args:
        sigma: noise standard deviation, ``> 0`` (see
            :func:`~keras_regkit.stopping.estimate_noise_level`).
        monitor: log key of the training loss, default ``"loss"``.
        tau: multiplier on ``sigma^2``, ``> 0``.
        verbose: 0 or 1.

    Attributes:
        stopped_epoch: 0-based epoch at whose end training stopped, or ``None``.
        stop_message: why it stopped (or ``None``).

    Raises:
        ValueError: ``sigma <= 0``, ``tau <= 0``; at an epoch end, ``monitor`` missing
            or non-finite.

    References:
        Celisse & Wahl (2021).
    """

    def __init__(self, sigma: float, monitor: str = "loss", tau: float = 1.0, verbose: int = 0):
        super().__init__()
        owner = "DiscrepancyStopping"
        self.sigma = check_range(owner, "sigma", sigma, 0.0, None, low_inclusive=False)
        self.tau = check_range(owner, "tau", tau, 0.0, None, low_inclusive=False)
        self.monitor = monitor
        self.verbose = check_choice(owner, "verbose", verbose, (0, 1))
        self.stopped_epoch: int | None = None
        self.stop_message: str | None = None

    @property
    def threshold(self) -> float:
        """``tau * sigma^2``."""
        return self.tau * self.sigma**2

    def on_train_begin(self, logs=None):
        self.stopped_epoch, self.stop_message = None, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"DiscrepancyStopping: monitor must be a key of the epoch logs "
                             f"({sorted(logs)}), got {self.monitor!r}")
        value = float(logs[self.monitor])
        if not math.isfinite(value):
            raise ValueError(f"DiscrepancyStopping: {self.monitor} must be finite, got {value!r}")
        if value <= self.threshold and self.stopped_epoch is None:
            self.model.stop_training = True
            self.stopped_epoch = epoch
            self.stop_message = (f"Epoch {epoch + 1}: {self.monitor}={value:.6g} <= "
                                 f"tau * sigma^2 = {self.threshold:.6g} (discrepancy principle)")
            if self.verbose:
                _compat.print_msg(self.stop_message)

    def get_config(self) -> dict:
        return {"sigma": self.sigma, "monitor": self.monitor, "tau": self.tau,
                "verbose": self.verbose}

    @classmethod
    def from_config(cls, config) -> "DiscrepancyStopping":
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_regkit")
class SmoothedDiscrepancyStopping(keras.callbacks.Callback):
    """Stops when the smoothed training residuals fall to their expected noise level.

    With ``Phi`` the ``(m, D)`` features that define the kernel ``K = Phi Phi^T``
    (by default ``x`` itself: the inputs of a bias-free ``Dense`` layer, whose full-batch
    SGD is kernel gradient descent with that kernel) and ``r = y - model(x)``, it
    stops at the first epoch end where::

        (1/m) r^T (K/m)^p r  <=  tau * sigma^2 tr((K/m)^p) / m

    The right side is the expected value of the left one for pure noise, so this is
    the discrepancy principle on residuals smoothed by ``(K/m)^(p/2)``: ``p = 1`` is the
    smoothing of Celisse & Wahl (2021), other powers Averyanov & Celisse's (2020)
    polynomial smoothing, and ``"auto"`` (the default) takes
    :func:`~keras_regkit.stopping.smoothing_power` of the spectrum, ``3/(4b)`` for
    eigenvalues decaying as ``j^(-b)``; the docstring of
    :class:`~keras_regkit.stopping.KernelGradientDescent` says why ``p = 1`` stops too
    early for trace-class kernels. Smoothing removes most of the noise in the plain
    principle's training error, whose fluctuations (``sigma^2 sqrt(2/m)``) make its
    stopping time swing between samples.

    The residuals are those of the weights at the epoch end (``model.predict`` on
    ``x``), so with full-batch gradient descent it stops with the iterate ``f_t`` that
    ``KernelGradientDescent.select("smoothed_discrepancy")`` returns, ``t >= 1`` (tested).
    ``K/m`` is diagonalized once, when the callback is made: ``O(m^3)``.

    Args:
        x: the training inputs, passed to ``model.predict`` (an array of ``m`` rows).
        y: the training targets, shape ``(m,)`` or ``(m, k)``.
        sigma: noise standard deviation, ``> 0`` (see
            :func:`~keras_regkit.stopping.estimate_noise_level`).
        power: ``p`` in ``[0, 1]``, or ``"auto"``.
        tau: multiplier on the threshold, ``> 0``.
        features: ``(m, D)`` features of the kernel; ``None`` uses ``x`` (2-D).
        batch_size: for ``model.predict``; ``None`` is Keras's default.
        verbose: 0 or 1.

    Attributes:
        power_: the power used (``"auto"`` resolved).
        threshold: the right side above.
        residuals: the smoothed residual at each epoch end of the last ``fit``.
        stopped_epoch: 0-based epoch at whose end training stopped, or ``None``.
        stop_message: why it stopped (or ``None``).

    Raises:
        ValueError: ``sigma <= 0``, ``tau <= 0``, ``power`` not in ``[0, 1]`` or
            ``"auto"``, ``x``/``y``/``features`` with different numbers of rows,
            non-finite values, ``features`` (or ``x``) not 2-D; at an epoch end,
            predictions that cannot be matched to ``y``.

    References:
        Celisse & Wahl (2021); Averyanov & Celisse (2020).
    """

    def __init__(self, x, y, sigma: float, power: float | str = "auto", tau: float = 1.0,
                 features=None, batch_size: int | None = None, verbose: int = 0):
        super().__init__()
        owner = "SmoothedDiscrepancyStopping"
        self.sigma = check_range(owner, "sigma", sigma, 0.0, None, low_inclusive=False)
        self.tau = check_range(owner, "tau", tau, 0.0, None, low_inclusive=False)
        self.batch_size = None if batch_size is None else check_int(owner, "batch_size",
                                                                    batch_size, minimum=1)
        self.verbose = check_choice(owner, "verbose", verbose, (0, 1))
        self.x = np.asarray(x)
        self.y = np.asarray(y, dtype=np.float64)
        m = self.x.shape[0] if self.x.ndim else 0
        if self.y.ndim not in (1, 2) or self.y.shape[0] != m or m < 1:
            raise ValueError(f"{owner}: y must have shape (m,) or (m, k) with m = {m} rows like x, "
                             f"got {self.y.shape}")
        self.features = None if features is None else np.asarray(features, dtype=np.float64)
        phi = np.asarray(self.x if features is None else self.features, dtype=np.float64)
        name = "x" if features is None else "features"
        if phi.ndim != 2 or phi.shape[0] != m:
            raise ValueError(f"{owner}: {name} must be a 2-D array with m = {m} rows (the kernel "
                             f"is K = {name} {name}^T), got shape {phi.shape}")
        if not (np.all(np.isfinite(phi)) and np.all(np.isfinite(self.y))):
            raise ValueError(f"{owner}: {name} and y must be finite, got non-finite values")
        eigenvalues, self._vectors = np.linalg.eigh(phi @ phi.T / m)
        eigenvalues = np.maximum(eigenvalues, 0.0)
        self.power_ = resolve_smoothing_power(owner, power, eigenvalues)
        self.power = power if isinstance(power, str) else self.power_
        self._weights = smoothed_residual_weights(eigenvalues, self.power_)
        self.threshold = self.tau * self.sigma**2 * float(np.sum(self._weights)) / m
        self.residuals: list[float] = []
        self.stopped_epoch: int | None = None
        self.stop_message: str | None = None

    def smoothed_residual(self, predictions) -> float:
        """``(1/m) r^T (K/m)^p r`` for ``r = y - predictions``."""
        predictions = np.asarray(predictions, dtype=np.float64)
        if predictions.size != self.y.size:
            raise ValueError(f"SmoothedDiscrepancyStopping: the model's predictions on x must "
                             f"have the size of y {self.y.shape}, got shape {predictions.shape}")
        residual = self.y - predictions.reshape(self.y.shape)
        squares = squares_per_direction(self._vectors.T @ residual)
        return float(np.sum(self._weights * squares) / self.y.shape[0])

    def on_train_begin(self, logs=None):
        self.residuals, self.stopped_epoch, self.stop_message = [], None, None

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped_epoch is not None:
            return
        value = self.smoothed_residual(self.model.predict(self.x, batch_size=self.batch_size,
                                                          verbose=0))
        self.residuals.append(value)
        if not math.isfinite(value):
            raise ValueError(f"SmoothedDiscrepancyStopping: the smoothed residual must be finite, "
                             f"got {value!r} at epoch {epoch + 1}")
        if value <= self.threshold:
            self.model.stop_training = True
            self.stopped_epoch = epoch
            self.stop_message = (f"Epoch {epoch + 1}: smoothed residual {value:.6g} <= "
                                 f"tau * sigma^2 tr((K/m)^p)/m = {self.threshold:.6g} "
                                 f"(p = {self.power_:.3g}; smoothed discrepancy principle)")
            if self.verbose:
                _compat.print_msg(self.stop_message)

    def get_config(self) -> dict:
        return {"x": self.x.tolist(), "y": self.y.tolist(), "sigma": self.sigma,
                "power": self.power, "tau": self.tau,
                "features": None if self.features is None else self.features.tolist(),
                "batch_size": self.batch_size, "verbose": self.verbose}

    @classmethod
    def from_config(cls, config) -> "SmoothedDiscrepancyStopping":
        return cls(**config)
