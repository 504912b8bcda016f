"""EarlyStopping: Keras's decisions, named reasons, more rules, and a restore that cannot lose."""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Mapping

import keras
import numpy as np

from keras_regkit import _compat
from keras_regkit._distribution import is_chief, mean_over_workers, model_strategy
from keras_regkit._validation import check_choice, check_whole
from keras_regkit._validation import check_finite as finite_number
from keras_regkit.callbacks._fit_guard import FitGuard
from keras_regkit.stopping.prechelt import GeneralizationLoss, ProgressQuotient, UpStrips
from keras_regkit.stopping.rules import (
    BestTracker,
    Direction,
    DivergenceThreshold,
    NonFinite,
    Patience,
    StoppingRule,
    StoppingThreshold,
)

_OWNER = "EarlyStopping"
_CRITERIA = {
    "GL": (GeneralizationLoss, float),
    "PQ": (ProgressQuotient, float),
    "UP": (UpStrips, int),
}
_CRITERION_RE = re.compile(r"^(GL|PQ|UP)(\d+(?:\.\d*)?|\.\d+)?$")


def _parse_criterion(spec: Any) -> list[StoppingRule]:
    allowed = (
        "None, 'GL', 'PQ', 'UP' (optionally with the parameter, e.g. 'GL5', 'PQ0.5', 'UP3'), "
        "a keras_regkit.stopping rule, or a list of these"
    )
    if spec is None:
        return []
    if isinstance(spec, StoppingRule):
        return [spec]
    if isinstance(spec, str):
        match = _CRITERION_RE.match(spec)
        if match is None:
            raise ValueError(f"{_OWNER}: criterion must be {allowed}, got {spec!r}")
        cls, kind = _CRITERIA[match.group(1)]
        if match.group(2) is None:
            return [cls()]
        number = float(match.group(2))
        if kind is int and not number.is_integer():
            raise ValueError(f"{_OWNER}: criterion 'UP<s>' needs an integer s, got {spec!r}")
        return [cls(kind(number))]
    if isinstance(spec, dict):
        return [keras.saving.deserialize_keras_object(spec)]
    if isinstance(spec, (list, tuple)) and spec:
        return [rule for item in spec for rule in _parse_criterion(item)]
    raise ValueError(f"{_OWNER}: criterion must be {allowed}, got {spec!r}")


def _infer_mode(model, monitor: str) -> str | None:
    """Keras's ``MonitorCallback`` inference: 'loss' is minimised, else the metric's direction."""
    name = monitor.removeprefix("val_")
    return _compat.metric_direction(model, name) or ("min" if name == "loss" else None)


def _uses_keras_weight_io(model) -> bool:
    """Whether ``model`` reads and writes its weights with Keras's own methods."""
    cls = type(model)
    return (
        isinstance(model, keras.layers.Layer)
        and cls.get_weights is keras.layers.Layer.get_weights
        and cls.set_weights is keras.layers.Layer.set_weights
    )


@keras.saving.register_keras_serializable(package="keras_regkit")
class EarlyStopping(keras.callbacks.Callback):
    """Stop training when a monitored quantity stops improving, and never lose the best weights.

    A drop-in for ``keras.callbacks.EarlyStopping`` (Keras 3): it takes the same
    arguments and, for the same logs, makes the same decisions and holds the same
    attributes (``monitor``, ``mode``, ``min_delta``, ``monitor_op``, ``patience``,
    ``verbose``, ``baseline``, ``best``, ``best_epoch``, ``wait``, ``stopped_epoch``,
    ``restore_best_weights``, ``best_weights``, ``start_from_epoch``), all of which can
    be read and set as in Keras. It snapshots and restores through
    ``model.get_weights()``/``model.set_weights()``, as Keras does, so a model that
    overrides those two is restored through its own methods. Beyond Keras:

    * every stop is named in ``stop_reason`` (``"patience"``, ``"threshold"``,
      ``"divergence"``, ``"non-finite"``, ``"GL"``, ``"PQ"``, ``"UP"``, or
      ``"exception"`` when ``fit`` was left by an error) with a one-line
      ``stop_message``, printed with ``verbose``;
    * Lightning's ``stopping_threshold``, ``divergence_threshold`` and ``check_finite``;
    * Prechelt's criteria GL_alpha, PQ_alpha and UP_s via ``criterion=``
      (they replace the patience rule);
    * a non-finite value never becomes the best (Keras takes a NaN on the first
      monitored epoch as its best and then never improves); with
      ``restore_best_weights``, the best weights are also restored when ``fit`` is left
      by an exception (KeyboardInterrupt, an error in another callback, out of memory),
      and the exception then propagates unchanged;
    * ``backup_path`` keeps the best weights on disk (atomically replaced at each
      improvement), so they survive a killed process;
    * ``get_state``/``set_state`` to save and resume the callback's counters;
    * multi-worker training (``tf.distribute.MultiWorkerMirroredStrategy``, found in
      scope or as ``model.distribute_strategy``): the monitored value (and the training
      loss the criteria read) is averaged over the workers before every decision, so
      every worker stops at the same epoch and restores the same weights even when
      the logs it was given are its own; only the chief writes ``backup_path``. Every
      worker must then call the callback at every epoch end with the same log keys.

    Only weights are restored: state that is not a weight (a ``DropoutSchedule``'s
    rates, seed generators, the optimizer) is left as the last epoch left it.

    For a model with Keras's own ``get_weights``/``set_weights`` (outside
    ``tf.distribute``), the snapshot is one set of buffers overwritten in place, so memory
    stays flat and nothing is allocated per improvement (``tf.Variable`` buffers on the
    device on TensorFlow, NumPy buffers on JAX and torch); ``best_weights`` then reads NumPy
    copies of them.

    Args:
        monitor: log key to monitor. Defaults to ``"val_loss"``.
        min_delta: minimum change that counts as an improvement (a finite number;
            stored as its absolute value, and negated when the mode resolves to
            ``"min"``, as Keras does). Defaults to 0.
        patience: epochs without improvement after which training stops, a whole
            number >= 0 (``3`` or ``3.0``). Defaults to 0.
        verbose: 0 (silent) or 1 (one line when the callback stops or restores);
            a bool or int >= 0.
        mode: ``"auto"``, ``"min"`` or ``"max"``; ``"auto"`` infers it as Keras does.
        baseline: ``wait`` is only reset by improvements that also beat it (finite).
        restore_best_weights: restore the weights of the best epoch at the end
            of training (and when ``fit`` is left by an exception).
        start_from_epoch: epochs to wait before monitoring (a whole number >= 0).
        stopping_threshold: stop as soon as the monitored value is better than this.
        divergence_threshold: stop as soon as the monitored value is worse than this.
        check_finite: stop as soon as the monitored value is NaN or infinite.
        criterion: ``None`` (Keras's patience rule), ``"GL"``, ``"PQ"``, ``"UP"``
            (Prechelt's defaults GL_2, PQ_0.5, UP_3 with strips of 5 epochs) or
            with a parameter (``"GL5"``, ``"PQ0.75"``, ``"UP2"``), a
            :class:`keras_regkit.stopping.rules.StoppingRule`, or a list of these
            (training stops when any of them says so). GL and PQ need positive errors.
        backup_path: a path ending in ``.weights.h5``; the best weights are
            written there at every improvement (temporary file, then rename).
            Missing parent folders are created, as ``keras.callbacks.ModelCheckpoint`` does.
        strict: raise instead of warning when ``monitor`` is missing from the logs.

    Attributes:
        best, best_epoch, wait, stopped_epoch, best_weights, monitor_op: as in Keras
            (epochs are 0-based).
        stop_reason: name of the rule that stopped training, or ``None``.
        stop_message: one line saying why.
        restored_epoch: epoch whose weights were restored, or ``None``.

    Raises:
        ValueError: bad ``mode``; ``patience``/``start_from_epoch`` not a whole number
            >= 0; a NaN or infinite ``min_delta``, ``baseline`` or threshold;
            thresholds that contradict the mode or each other; an unknown
            ``criterion``; a ``backup_path`` not ending in ``.weights.h5``;
            during ``fit``, a criterion whose training loss is not logged, GL or PQ
            on an error <= 0, or a missing ``monitor`` with ``strict=True``.
        TypeError: a non-numeric ``min_delta``, ``patience``, ``verbose``,
            ``baseline``, threshold or ``start_from_epoch``; an empty or non-str
            ``monitor``.

    Reference:
        Lutz Prechelt, "Early Stopping - But When?", Neural Networks: Tricks of
        the Trade, LNCS 1524, 1998 (criteria GL, PQ, UP).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
        *,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_finite: bool = False,
        criterion: Any = None,
        backup_path: str | os.PathLike | None = None,
        strict: bool = False,
    ):
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"{_OWNER}: monitor must be a non-empty str, got {monitor!r}")
        self.monitor = monitor
        self.mode = check_choice(_OWNER, "mode", mode, ("auto", "min", "max"))
        self.min_delta = abs(finite_number(_OWNER, "min_delta", min_delta))
        self.patience = check_whole(_OWNER, "patience", patience, minimum=0)
        self.verbose = verbose if isinstance(verbose, bool) else check_whole(
            _OWNER, "verbose", verbose, minimum=0
        )
        self.baseline = _optional_finite("baseline", baseline)
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = check_whole(_OWNER, "start_from_epoch", start_from_epoch, minimum=0)
        self.stopping_threshold = _optional_finite("stopping_threshold", stopping_threshold)
        self.divergence_threshold = _optional_finite("divergence_threshold", divergence_threshold)
        self.check_finite = bool(check_finite)
        self.criterion = criterion
        self._criteria = _parse_criterion(criterion)
        if backup_path is not None:
            backup_path = os.fspath(backup_path)
            if not backup_path.endswith(".weights.h5"):
                raise ValueError(
                    f"{_OWNER}: backup_path must end in '.weights.h5', got {backup_path!r}"
                )
        self.backup_path = backup_path
        self.strict = bool(strict)
        if self.mode != "auto":
            self._check_against_mode(self.mode)

        rules: list[StoppingRule] = []
        if self.check_finite:
            rules.append(NonFinite())
        if self.stopping_threshold is not None:
            rules.append(StoppingThreshold(self.stopping_threshold))
        if self.divergence_threshold is not None:
            rules.append(DivergenceThreshold(self.divergence_threshold))
        rules.extend(self._criteria or [Patience(int(self.patience))])
        self.rules = rules

        self.monitor_op = None
        self._tracker = BestTracker(None, self.baseline)
        self._direction: Direction | None = None
        self._rules_ready = False
        self._resume = False
        self._guard = FitGuard(self._on_fit_error)
        self._strategy = None
        self._reset_run()
        self._clear_snapshot()

    # ------------------------------------------------------------------ state
    def _reset_run(self) -> None:
        self._tracker.reset()
        self.stopped_epoch = 0
        self.stop_reason: str | None = None
        self.stop_message: str | None = None
        self.restored_epoch: int | None = None
        self._rules_ready = False

    def _clear_snapshot(self) -> None:
        """Drops the best weights: every fit (a resumed one too) snapshots its own."""
        self.best_weights = None
        self._snapshot_epoch: int | None = None

    best = property(
        lambda self: self._tracker.best,
        lambda self, value: setattr(self._tracker, "best", value),
        doc="The best monitored value so far (``None`` before the first finite one).",
    )
    best_epoch = property(
        lambda self: self._tracker.best_epoch,
        lambda self, value: setattr(self._tracker, "best_epoch", value),
        doc="The 0-based epoch of ``best``.",
    )
    wait = property(
        lambda self: self._tracker.wait,
        lambda self, value: setattr(self._tracker, "wait", value),
        doc="Epochs since the last improvement that also beat ``baseline`` (Keras's count).",
    )

    @property
    def best_weights(self) -> list | None:
        """The snapshot of the best weights (``model.get_weights()`` order), or ``None``.

        A list of NumPy arrays (copies of the in-place buffers, where those are used).
        Setting it, as Keras allows, replaces the snapshot that a restore uses.
        """
        if self._buffers is not None:
            return [np.array(buffer) for buffer in self._buffers]
        return self._best_weights

    @best_weights.setter
    def best_weights(self, value) -> None:
        self._buffers = None
        self._best_weights = value

    def get_monitor_value(self, logs):
        """The monitored value in ``logs`` (``None``, with Keras's warning, when missing)."""
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            if self.strict:
                raise ValueError(f"{_OWNER}: monitor={self.monitor!r} is not in the logs "
                                 f"(strict=True); available keys: {', '.join(logs)}")
            warnings.warn(
                f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
                f"Available metrics are: {','.join(list(logs.keys()))}",
                stacklevel=3,
            )
        return value

    def get_state(self) -> dict:
        """The callback's counters and rule states (not the weight snapshot), as plain Python."""
        return {
            **self._tracker.get_state(),
            "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason,
            "stop_message": self.stop_message,
            "mode": None if self._direction is None else self._direction.mode,
            "rules": [rule.get_state() for rule in self.rules] if self._rules_ready else None,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`get_state`; the next ``fit`` then resumes instead of starting afresh."""
        self._tracker.set_state(state)
        self.stopped_epoch = int(state["stopped_epoch"])
        self.stop_reason = state["stop_reason"]
        self.stop_message = state["stop_message"]
        if state["mode"] is not None and self._direction is None:
            self._set_direction(state["mode"])
        if state["rules"] is not None and self._direction is not None:
            for rule, rule_state in zip(self.rules, state["rules"]):
                rule.reset(self._direction)
                rule.set_state(rule_state)
            self._rules_ready = True
        self._resume = True

    def get_config(self) -> dict:
        criterion = self.criterion
        if isinstance(criterion, StoppingRule):
            criterion = keras.saving.serialize_keras_object(criterion)
        elif isinstance(criterion, (list, tuple)):
            criterion = [
                keras.saving.serialize_keras_object(c) if isinstance(c, StoppingRule) else c
                for c in criterion
            ]
        return {
            "monitor": self.monitor,
            "min_delta": abs(self.min_delta),
            "patience": self.patience,
            "verbose": self.verbose,
            "mode": self.mode,
            "baseline": self.baseline,
            "restore_best_weights": self.restore_best_weights,
            "start_from_epoch": self.start_from_epoch,
            "stopping_threshold": self.stopping_threshold,
            "divergence_threshold": self.divergence_threshold,
            "check_finite": self.check_finite,
            "criterion": criterion,
            "backup_path": self.backup_path,
            "strict": self.strict,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "EarlyStopping":
        return cls(**config)

    # --------------------------------------------------------------- checking
    def _check_against_mode(self, mode: str) -> None:
        stop, div = self.stopping_threshold, self.divergence_threshold
        if stop is not None and div is not None:
            ok = stop < div if mode == "min" else stop > div
            if not ok:
                relation = "<" if mode == "min" else ">"
                raise ValueError(
                    f"{_OWNER}: stopping_threshold must be {relation} divergence_threshold "
                    f"in mode={mode!r}, got stopping_threshold={stop!r}, "
                    f"divergence_threshold={div!r}"
                )
        if self.baseline is not None and div is not None:
            if not Direction(mode).better(self.baseline, div):
                raise ValueError(
                    f"{_OWNER}: baseline must be better than divergence_threshold in "
                    f"mode={mode!r}, got baseline={self.baseline!r}, divergence_threshold={div!r}"
                )

    def _set_direction(self, mode: str) -> None:
        """Fixes the direction once, with Keras's side effects on ``monitor_op``/``min_delta``."""
        self._check_against_mode(mode)
        self._direction = Direction(mode, self.min_delta)
        self._tracker.direction = self._direction
        self.monitor_op = keras.ops.less if mode == "min" else keras.ops.greater
        if mode == "min":
            self.min_delta = -abs(self.min_delta)

    def _resolve_direction(self) -> None:
        mode = self.mode
        if mode == "auto":
            mode = _infer_mode(self.model, self.monitor)
            if mode is None:
                raise ValueError(
                    f"{_OWNER}: mode='auto' cannot tell whether monitor={self.monitor!r} "
                    "should be minimised or maximised; pass mode='min' or mode='max'"
                )
        self._set_direction(mode)

    # ---------------------------------------------------------------- training
    def on_train_begin(self, logs=None):
        if self._resume:
            self._resume = False
        else:
            self._reset_run()
        self._clear_snapshot()
        self._strategy = model_strategy(self.model)
        self._guard.install(self.model, _compat.fit_callback_list(self))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._direction is None:
            self._resolve_direction()
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if not self._rules_ready:
            for rule in self.rules:
                rule.reset(self._direction)
            self._rules_ready = True
        for rule in self.rules:
            missing = [key for key in rule.required_keys if key not in logs]
            if missing:
                raise ValueError(
                    f"{_OWNER}: criterion={self.criterion!r} needs {missing[0]!r} (the training "
                    f"loss) in the logs, got only: {', '.join(logs)}"
                )

        logs = self._agreed_logs(logs)
        obs = self._tracker.update(epoch, logs[self.monitor], logs)
        if self.restore_best_weights and (obs.improved or self._snapshot_epoch is None):
            if not obs.improved and self.best is None:
                # As Keras: until an epoch improves, the first monitored one stands for the best.
                self._tracker.best_epoch = epoch
            self._snapshot(epoch)
        if obs.improved and self.backup_path is not None:
            self._write_backup()
        for rule in self.rules:
            reason = rule.update(obs)
            if reason is not None:
                self._stop(epoch, rule.name, reason)
                break

    def on_train_end(self, logs=None):
        self._guard.uninstall()
        if self.stop_reason is not None and self.verbose > 0:
            _compat.print_msg(self._summary())
        restored = self._restore()
        if restored and self.verbose > 0 and self.stop_reason is None:
            _compat.print_msg(
                f"Epoch {self.restored_epoch + 1}: restored the best weights "
                f"({self.monitor}={self.best:.6g}) at the end of training."
            )

    # ---------------------------------------------------------------- helpers
    def _stop(self, epoch: int, reason: str, message: str) -> None:
        self.stopped_epoch = epoch
        self.stop_reason = reason
        self.stop_message = message
        self.model.stop_training = True

    def _agreed_logs(self, logs: Mapping[str, Any]) -> dict:
        """``logs`` with the values the decisions read averaged over the workers (as floats)."""
        read = {key for rule in self.rules for key in rule.required_keys}
        keys = [self.monitor] + sorted(read - {self.monitor})
        agreed = mean_over_workers(self._strategy, [_scalar(key, logs[key]) for key in keys])
        return {**logs, **dict(zip(keys, agreed))}

    def _summary(self) -> str:
        where = f"Epoch {self.stopped_epoch + 1}: early stopping ({self.stop_reason}): "
        if self.restore_best_weights and self._snapshot_epoch is not None:
            best = "" if self.best is None else f" ({self.monitor}={self.best:.6g})"
            tail = f"; restoring weights from epoch {self._snapshot_epoch + 1}{best}."
        else:
            tail = "; weights of the last epoch kept."
        return where + self.stop_message + tail

    def _snapshot(self, epoch: int) -> None:
        """Keeps the current weights as the best: ``model.get_weights()``, as Keras does.

        For a model with Keras's own weight methods (outside ``tf.distribute``), one set of
        buffers allocated at the first snapshot is overwritten in place instead (flat memory,
        no allocation per improvement): ``tf.Variable``s on TensorFlow (TensorFlow shares the
        buffer and copies it on the next write: one device-side copy, no transfer to the
        host), NumPy arrays filled from host views of the variables on JAX and torch.
        """
        model = self.model
        if self._strategy is not None or not _uses_keras_weight_io(model):
            self.best_weights = model.get_weights()
        else:
            variables = model.weights
            if self._buffers is None or len(self._buffers) != len(variables):
                self.best_weights = None
                self._buffers = [_new_buffer(v) for v in variables]
            else:
                for buffer, variable in zip(self._buffers, variables):
                    _fill_buffer(buffer, variable)
        self._snapshot_epoch = epoch

    def _restore(self) -> bool:
        if not self.restore_best_weights or (self._buffers is None and self._best_weights is None):
            return False
        # JAX keeps the live state outside the variables during an epoch; sync it first so
        # that fit's own final sync cannot overwrite the restore.
        _compat.jax_state_sync(self.model)
        if self._buffers is not None:
            for variable, buffer in zip(self.model.weights, self._buffers):
                # A copy: a backend may alias a NumPy array it is assigned from, and the
                # buffers are overwritten in place by the next snapshot.
                variable.assign(buffer if not isinstance(buffer, np.ndarray) else buffer.copy())
        else:
            self.model.set_weights(self._best_weights)
        self.restored_epoch = self._snapshot_epoch
        return True

    def _write_backup(self) -> None:
        if not is_chief(self._strategy):  # under multi-worker training only the chief writes
            return
        folder, name = os.path.split(os.path.abspath(self.backup_path))
        stem = name[: -len(".weights.h5")]
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".{stem}.tmp{os.getpid()}.weights.h5")
        self.model.save_weights(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, self.backup_path)

    def _on_fit_error(self, error: BaseException) -> None:
        if self.stop_reason is None:
            self.stop_reason = "exception"
            self.stop_message = f"fit was left by {type(error).__name__}"
        restored = self._restore()
        if self.verbose > 0:
            tail = (
                f"restored weights from epoch {self.restored_epoch + 1}"
                if restored
                else "no weights restored"
            )
            _compat.print_msg(f"EarlyStopping: fit was left by {type(error).__name__}; {tail}.")


def _host_view(variable) -> np.ndarray:
    """The variable's value as a NumPy array, without a copy where the backend allows."""
    value = variable.value
    if keras.backend.backend() == "torch":
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _new_buffer(variable):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.Variable(variable.value, trainable=False)
    return np.array(_host_view(variable))


def _fill_buffer(buffer, variable) -> None:
    if isinstance(buffer, np.ndarray):
        np.copyto(buffer, _host_view(variable))
    else:
        buffer.assign(variable.value)


def _scalar(key: str, value) -> float:
    """A logged value as a float; one-element arrays (e.g. a one-class F1 score) are scalars."""
    array = np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")
    if array.size != 1:
        raise ValueError(
            f"{_OWNER}: the logged value of {key!r} must be a scalar, got an array of shape "
            f"{array.shape}; monitor a scalar metric (e.g. F1Score(average='macro'))"
        )
    return float(array.reshape(()))


def _optional_finite(name: str, value):
    return None if value is None else finite_number(_OWNER, name, value)
