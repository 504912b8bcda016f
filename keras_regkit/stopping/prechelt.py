"""Prechelt's stopping criteria GL_alpha, PQ_alpha and UP_s.

Definitions (t counts the epochs the rule has seen, from 1; E_va is the
monitored validation error, E_tr the training error; both are minimised):

* generalization loss ``GL(t) = 100 * (E_va(t) / E_opt(t) - 1)`` with
  ``E_opt(t) = min_{t' <= t} E_va(t')``; GL_alpha stops after the first
  epoch with ``GL(t) > alpha``.
* training strips of length k: epochs ``n+1 .. n+k`` with n divisible by k.
  Training progress at a strip end
  ``P_k(t) = 1000 * (sum_{t'=t-k+1..t} E_tr(t') / (k * min_{t'=t-k+1..t} E_tr(t')) - 1)``.
  PQ_alpha stops after the first strip end with ``GL(t) / P_k(t) > alpha``.
* UP_s stops after the strip end t at which the validation error rose at s
  successive strip ends: ``E_va(t) > E_va(t-k)``, ``E_va(t-k) > E_va(t-2k)``, ...

Non-finite values are skipped (they neither count as epochs nor update E_opt).
GL and PQ are defined for positive errors only (GL divides by E_opt, P_k by the
strip's smallest training error, and both invert their meaning on negative
values): a validation error (GL, PQ) or training error (PQ) <= 0 raises a
``ValueError`` naming the criterion, the epoch and the value. UP_s only compares
errors and takes any finite value.
The first strip end has no ``E_va(t-k)`` to compare with, so UP_s can stop at
the earliest at strip end ``s+1``. When the training error is constant over a
strip (``P_k = 0``) the quotient is taken as ``+inf`` if ``GL > 0`` and 0 otherwise.

Reference:
    Lutz Prechelt, "Early Stopping - But When?", in Neural Networks: Tricks of
    the Trade, LNCS 1524, Springer 1998, pp. 55-69 (section 2.2).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from keras_regkit._validation import check_int, check_range
from keras_regkit.stopping.rules import Direction, Observation, StoppingRule


def generalization_loss(value: float, best: float) -> float:
    """``GL = 100 * (value / best - 1)`` in percent.

    Args:
        value: the current validation error E_va(t).
        best: the lowest validation error so far E_opt(t) (> 0).

    Returns:
        The generalization loss in percent.
    """
    return 100.0 * (value / best - 1.0)


def training_progress(strip: Sequence[float]) -> float:
    """``P_k = 1000 * (mean(strip) / min(strip) - 1)`` in per mille.

    Args:
        strip: the training errors of the k epochs of one strip (> 0).

    Returns:
        How much larger the strip's mean training error is than its minimum.
    """
    strip = np.asarray(strip, dtype=np.float64)
    return 1000.0 * (strip.sum() / (strip.size * strip.min()) - 1.0)


def _check_positive(rule: str, what: str, obs: Observation, value: float) -> None:
    if value <= 0:
        raise ValueError(
            f"{rule}: Prechelt's GL and PQ are defined for positive errors, got {what}="
            f"{value!r} at epoch {obs.epoch + 1}; monitor a positive error (a loss or an error "
            "rate) or use the UP criterion or patience"
        )


class _PrecheltRule(StoppingRule):
    """Shared parts: validation-error criteria defined for minimised values."""

    def reset(self, direction: Direction) -> None:
        if direction.mode != "min":
            raise ValueError(
                f"{type(self).__name__}: Prechelt's criteria need a minimised error, "
                f"got mode={direction.mode!r}; monitor a loss or an error rate with mode='min'"
            )
        super().reset(direction)


@keras.saving.register_keras_serializable(package="keras_regkit")
class GeneralizationLoss(_PrecheltRule):
    """GL_alpha: stop when the generalization loss exceeds ``alpha`` percent.

    Defined for positive validation errors only.

    Args:
        alpha: threshold on ``GL(t)`` in percent (> 0).

    Raises:
        ValueError: ``alpha <= 0``; during training, a validation error <= 0.

    Reference:
        Prechelt 1998, "Early Stopping - But When?", definition of GL_alpha.
    """

    name = "GL"

    def __init__(self, alpha: float = 2.0):
        self.alpha = check_range("GeneralizationLoss", "alpha", alpha, 0, None, low_inclusive=False)
        self.e_opt: float | None = None

    def reset(self, direction: Direction) -> None:
        super().reset(direction)
        self.e_opt = None

    def gl(self, value: float) -> float:
        """Updates ``E_opt`` with ``value`` and returns ``GL(t)``."""
        self.e_opt = value if self.e_opt is None else min(self.e_opt, value)
        return generalization_loss(value, self.e_opt)

    def update(self, obs: Observation) -> str | None:
        if not math.isfinite(obs.value):
            return None
        _check_positive("GL", "the validation error", obs, obs.value)
        gl = self.gl(obs.value)
        if gl > self.alpha:
            return f"generalization loss GL={gl:.3g}% > alpha={self.alpha:g}%"
        return None

    def get_state(self) -> dict:
        return {"e_opt": self.e_opt}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.e_opt = state["e_opt"]

    def get_config(self) -> dict:
        return {"alpha": self.alpha}


@keras.saving.register_keras_serializable(package="keras_regkit")
class ProgressQuotient(_PrecheltRule):
    """PQ_alpha: at a strip end, stop when ``GL(t) / P_k(t) > alpha``.

    Defined for positive validation and training errors only.

    Args:
        alpha: threshold on the quotient (> 0).
        strip: strip length k (>= 2; Prechelt uses 5).
        train_monitor: log key of the training error (default ``"loss"``).

    Raises:
        ValueError: ``alpha <= 0``, ``strip < 2``; during training, an error <= 0.
        TypeError: ``train_monitor`` not a non-empty str.

    Reference:
        Prechelt 1998, "Early Stopping - But When?", definition of PQ_alpha.
    """

    name = "PQ"

    def __init__(self, alpha: float = 0.5, strip: int = 5, train_monitor: str = "loss"):
        self.alpha = check_range("ProgressQuotient", "alpha", alpha, 0, None, low_inclusive=False)
        self.strip = check_int("ProgressQuotient", "strip", strip, minimum=2)
        if not isinstance(train_monitor, str) or not train_monitor:
            raise TypeError(
                f"ProgressQuotient: train_monitor must be a non-empty str, got {train_monitor!r}"
            )
        self.train_monitor = train_monitor
        self.required_keys = (train_monitor,)
        self._gl = GeneralizationLoss(alpha=1.0)
        self._train: list[float] = []
        self.count = 0

    def reset(self, direction: Direction) -> None:
        super().reset(direction)
        self._gl.reset(direction)
        self._train = []
        self.count = 0

    def update(self, obs: Observation) -> str | None:
        train = obs.logs.get(self.train_monitor)
        if train is None:
            raise ValueError(
                f"ProgressQuotient: train_monitor={self.train_monitor!r} is not in the logs; "
                f"it needs the training error, available keys: {', '.join(obs.logs)}"
            )
        if not (math.isfinite(obs.value) and math.isfinite(train)):
            return None
        _check_positive("PQ", "the validation error", obs, obs.value)
        _check_positive("PQ", f"the training error {self.train_monitor!r}", obs, train)
        gl = self._gl.gl(obs.value)
        self.count += 1
        self._train = (self._train + [float(train)])[-self.strip:]
        if self.count % self.strip:
            return None
        progress = training_progress(self._train)
        if progress > 0:
            quotient = gl / progress
        else:
            quotient = math.inf if gl > 0 else 0.0
        if quotient > self.alpha:
            return (
                f"progress quotient GL/P_{self.strip}={quotient:.3g} > alpha={self.alpha:g} "
                f"(GL={gl:.3g}%, P_{self.strip}={progress:.3g})"
            )
        return None

    def get_state(self) -> dict:
        return {"e_opt": self._gl.e_opt, "train": list(self._train), "count": self.count}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._gl.e_opt = state["e_opt"]
        self._train = list(state["train"])
        self.count = int(state["count"])

    def get_config(self) -> dict:
        return {"alpha": self.alpha, "strip": self.strip, "train_monitor": self.train_monitor}


@keras.saving.register_keras_serializable(package="keras_regkit")
class UpStrips(_PrecheltRule):
    """UP_s: stop when the validation error rose at ``s`` successive strip ends.

    Args:
        s: number of successive rising strips (>= 1).
        strip: strip length k (>= 1; Prechelt uses 5).

    Reference:
        Prechelt 1998, "Early Stopping - But When?", definition of UP_s.
    """

    name = "UP"

    def __init__(self, s: int = 3, strip: int = 5):
        self.s = check_int("UpStrips", "s", s, minimum=1)
        self.strip = check_int("UpStrips", "strip", strip, minimum=1)
        self.count = 0
        self.rises = 0
        self.last: float | None = None

    def reset(self, direction: Direction) -> None:
        super().reset(direction)
        self.count = 0
        self.rises = 0
        self.last = None

    def update(self, obs: Observation) -> str | None:
        if not math.isfinite(obs.value):
            return None
        self.count += 1
        if self.count % self.strip:
            return None
        previous, self.last = self.last, obs.value
        if previous is None:
            return None
        self.rises = self.rises + 1 if obs.value > previous else 0
        if self.rises >= self.s:
            return (
                f"validation error rose at {self.rises} successive strip ends of "
                f"{self.strip} epochs (s={self.s})"
            )
        return None

    def get_state(self) -> dict:
        return {"count": self.count, "rises": self.rises, "last": self.last}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.count = int(state["count"])
        self.rises = int(state["rises"])
        self.last = state["last"]

    def get_config(self) -> dict:
        return {"s": self.s, "strip": self.strip}
