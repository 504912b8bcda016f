"""Keras shells for the Yao–Rosasco–Caponnetto theory: step schedule and theory-driven stops.

* :class:`YaoStepSchedule` -- the step sizes ``gamma_t = scale / (kappa^2 (t+1)^theta)``
  as a ``keras.optimizers.schedules.LearningRateSchedule``;
* :class:`YaoStoppingTime` -- stops ``model.fit`` at the a-priori time ``t*(m)``,
  counted in optimizer steps or in epochs;
* :class:`DiscrepancyStopping` -- stops when the training loss first falls to ``sigma^2``.

With full-batch plain SGD on ``0.5 * mean squared error`` over a bias-free Dense
layer on fixed features ``phi``, ``model.fit`` runs exactly kernel gradient
descent with the kernel ``<phi(x), phi(x')>`` (tested against
:class:`~keras_regkit.stopping.KernelGradientDescent`).

References:
    Y. Yao, L. Rosasco, A. Caponnetto, "On Early Stopping in Gradient Descent
    Learning", Constr. Approx. 26 (2007) 289-315.
    A. Celisse, M. Wahl, "Analyzing the discrepancy principle for kernelized
    spectral filter learning algorithms", JMLR 22 (2021).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_regkit import _compat
from keras_regkit._validation import check_choice, check_int, check_range
from keras_regkit.stopping.yao import yao_stopping_time

__all__ = ["DiscrepancyStopping", "YaoStepSchedule", "YaoStoppingTime"]


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
