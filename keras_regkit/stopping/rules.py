"""Stopping rules as small objects: patience, thresholds, non-finite values.

A stopping callback keeps one :class:`BestTracker` (the best monitored value and
the epochs waited since, with exactly the comparisons of
``keras.callbacks.EarlyStopping``) and asks a list of :class:`StoppingRule`
objects after every monitored epoch whether to stop. Each rule sees an
:class:`Observation` and answers ``None`` (go on) or a one-line reason; rules
compose by listing them, so other callbacks can reuse them unchanged.

Reference:
    Lightning's ``EarlyStopping`` (``stopping_threshold``,
    ``divergence_threshold``, ``check_finite``) for the threshold rules;
    Keras 3's ``EarlyStopping`` for the patience rule and the comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import keras
import numpy as np

from keras_regkit._validation import check_choice, check_int, check_number


class Direction:
    """Which way is better for a monitored value, with Keras's ``min_delta``.

    Comparisons are made in float32, as Keras's ``MonitorCallback`` does with
    ``keras.ops.less``/``greater`` on Python floats.

    Args:
        mode: ``"min"`` or ``"max"``.
        min_delta: minimum change that counts as an improvement (its sign is
            ignored, as in Keras).
    """

    def __init__(self, mode: str = "min", min_delta: float = 0.0):
        self.mode = check_choice("Direction", "mode", mode, ("min", "max"))
        delta = abs(check_number("Direction", "min_delta", min_delta))
        # Keras stores min_delta negated in "min" mode and compares
        # `value - min_delta` with the reference.
        self._delta = -delta if mode == "min" else delta

    def is_improvement(self, value: float, reference: float | None) -> bool:
        """Whether ``value`` improves on ``reference`` by more than ``min_delta``."""
        if reference is None:
            return True
        return self.better(value - self._delta, reference)

    def better(self, a: float, b: float) -> bool:
        """Strictly better in float32 (``False`` whenever a NaN is involved)."""
        a32, b32 = np.float32(a), np.float32(b)
        return bool(a32 < b32) if self.mode == "min" else bool(a32 > b32)


@dataclass
class Observation:
    """What a rule sees after one monitored epoch.

    Attributes:
        epoch: 0-based epoch index, as in Keras's callbacks.
        value: the monitored value at this epoch.
        logs: the epoch's full logs (rules may read other keys, e.g. ``loss``).
        improved: whether this epoch became the new best.
        best: best monitored value so far (``None`` before the first finite one).
        best_epoch: epoch of ``best``.
        wait: epochs since the last improvement that also beat the baseline,
            counted exactly as Keras's ``EarlyStopping.wait``.
    """

    epoch: int
    value: float
    logs: Mapping[str, Any]
    improved: bool
    best: float | None
    best_epoch: int
    wait: int


class BestTracker:
    """Keras-exact bookkeeping of the best value and the epochs waited since.

    It differs from Keras in one way only: a non-finite value (NaN, +-inf)
    never becomes the best (Keras takes a NaN on the first monitored epoch as
    its best); it counts as an epoch without improvement.

    Args:
        direction: the :class:`Direction` of the monitored value.
        baseline: ``wait`` is reset only by improvements that also beat it.
    """

    def __init__(self, direction: Direction, baseline: float | None = None):
        self.direction = direction
        self.baseline = baseline
        self.reset()

    def reset(self) -> None:
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0

    def update(self, epoch: int, value: float, logs: Mapping[str, Any]) -> Observation:
        """Records one monitored epoch and returns the observation for the rules."""
        self.wait += 1
        improved = math.isfinite(value) and self.direction.is_improvement(value, self.best)
        if improved:
            self.best = value
            self.best_epoch = epoch
            if self.baseline is None or self.direction.is_improvement(value, self.baseline):
                self.wait = 0
        return Observation(epoch, value, logs, improved, self.best, self.best_epoch, self.wait)

    def get_state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.best = state["best"]
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])


class StoppingRule:
    """Base class: one reason to stop training.

    Subclasses set ``name`` (the ``stop_reason`` recorded by the callback) and
    implement :meth:`update`. Rules with memory override :meth:`reset`,
    :meth:`get_state` and :meth:`set_state`.
    """

    name = "rule"
    #: Log keys the rule needs besides the monitored value.
    required_keys: tuple[str, ...] = ()

    def reset(self, direction: Direction) -> None:
        """Called at the start of training with the resolved direction."""
        self.direction = direction

    def update(self, obs: Observation) -> str | None:
        """Returns a one-line reason to stop after ``obs``, or ``None``."""
        raise NotImplementedError

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: Mapping[str, Any]) -> None:
        del state

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "StoppingRule":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_regkit")
class Patience(StoppingRule):
    """Keras's rule: stop when ``wait >= patience`` on an epoch without improvement.

    As in Keras, training never stops at epoch 0 and an improving epoch never
    stops it.

    Args:
        patience: epochs without improvement to tolerate (>= 0).
    """

    name = "patience"

    def __init__(self, patience: int = 0):
        self.patience = check_int("Patience", "patience", patience, minimum=0)

    def update(self, obs: Observation) -> str | None:
        if obs.improved or obs.wait < self.patience or obs.epoch <= 0:
            return None
        return f"no improvement for {obs.wait} epochs (patience {self.patience})"

    def get_config(self) -> dict:
        return {"patience": self.patience}


@keras.saving.register_keras_serializable(package="keras_regkit")
class StoppingThreshold(StoppingRule):
    """Stop as soon as the monitored value is better than ``threshold``.

    Args:
        threshold: the good-enough value (strictly better stops).
    """

    name = "threshold"

    def __init__(self, threshold: float):
        self.threshold = check_number("StoppingThreshold", "threshold", threshold)

    def update(self, obs: Observation) -> str | None:
        if self.direction.better(obs.value, self.threshold):
            return f"value {obs.value:.6g} reached the stopping threshold {self.threshold:g}"
        return None

    def get_config(self) -> dict:
        return {"threshold": self.threshold}


@keras.saving.register_keras_serializable(package="keras_regkit")
class DivergenceThreshold(StoppingRule):
    """Stop as soon as the monitored value is worse than ``threshold``.

    Args:
        threshold: the hopeless value (strictly worse stops).
    """

    name = "divergence"

    def __init__(self, threshold: float):
        self.threshold = check_number("DivergenceThreshold", "threshold", threshold)

    def update(self, obs: Observation) -> str | None:
        if self.direction.better(self.threshold, obs.value):
            return (
                f"value {obs.value:.6g} is worse than the divergence threshold {self.threshold:g}"
            )
        return None

    def get_config(self) -> dict:
        return {"threshold": self.threshold}


@keras.saving.register_keras_serializable(package="keras_regkit")
class NonFinite(StoppingRule):
    """Stop as soon as the monitored value is NaN or infinite."""

    name = "non-finite"

    def update(self, obs: Observation) -> str | None:
        if math.isfinite(obs.value):
            return None
        return f"value is {obs.value}"
