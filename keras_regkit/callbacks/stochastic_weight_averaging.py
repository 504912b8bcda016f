"""Stochastic Weight Averaging (SWA): the mean of the weights over the last epochs."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Mapping, Optional, Union

import keras
import numpy as np
from keras import ops

from keras_regkit import _compat
from keras_regkit import _validation as check
from keras_regkit.callbacks import _averaging

_OWNER = "StochasticWeightAveraging"


@keras.saving.register_keras_serializable(package="keras_regkit")
class StochasticWeightAveraging(keras.callbacks.Callback):
    """Averages the weights of the epochs from ``start_epoch`` on, with equal weights.

    At the end of every epoch from ``start_epoch`` on, the trainable weights are added
    to a running sum (in float64 on the host, so the result is the exact mean of the
    snapshots rounded once to the variables' dtype); at the end of training the mean is
    written into the model. The BatchNormalization moving statistics of the last epoch
    do not belong to the averaged weights, so pass ``bn_data`` (training inputs) to
    recompute every BatchNormalization layer's population statistics under them
    (:func:`keras_regkit.recompute_batch_statistics`, Keras's layer and keras_regkit's);
    without it a model with BatchNormalization layers gets one warning per callback.

    With ``learning_rate``, the optimizer's learning rate is moved from its value at
    ``start_epoch`` to ``learning_rate`` over ``annealing_epochs`` epochs (cosine, set at
    the start of each epoch, reaching ``learning_rate`` in epoch
    ``start_epoch + annealing_epochs - 1``; at once when ``annealing_epochs`` is 0) and
    then held there, as in Izmailov et al.'s SWA schedule and PyTorch's ``SWALR``. It is
    logged as ``learning_rate`` and left at that value after training.

    With ``keras_regkit.callbacks.EarlyStopping(restore_best_weights=True)`` in the same
    ``fit``, the callbacks list decides what the model holds at the end (Keras calls
    ``on_train_end`` in list order): ``[EarlyStopping(...), StochasticWeightAveraging(...)]``
    ends with the average of the epochs that were run (EarlyStopping restores its best
    epoch, then the average is written, then BN statistics are recomputed for it);
    the reverse order ends with EarlyStopping's best single weights (and their own
    moving statistics). When training stops before ``start_epoch``, nothing is averaged,
    the model keeps its weights and a warning says so.

    Args:
        start_epoch: the first epoch (0-based) whose weights are averaged: an int >= 0,
            or a float in (0, 1) for a fraction of the ``epochs`` given to ``fit``
            (``floor(start_epoch * epochs)``). Must fall before the last epoch.
        learning_rate: the SWA learning rate, or None to leave the learning rate alone.
        annealing_epochs: epochs over which the learning rate moves to ``learning_rate``
            (an int >= 0; needs ``learning_rate`` when > 0). Defaults to 0.
        bn_data: inputs on which to recompute the BatchNormalization statistics after
            the average has been written (arrays, a ``tf.data.Dataset`` or an iterable of
            batches, as :func:`keras_regkit.recompute_batch_statistics` takes them).
        bn_batch_size: batch size for array ``bn_data`` (default 32).
        bn_steps: number of ``bn_data`` batches to use (default: all).
        verbose: 1 prints a line when the average is written.

    Attributes:
        averaged_epochs: the 0-based epochs whose weights are in the average.
        averaged_weights: NumPy copies of the current mean (in the dtypes of the
            trainable variables), or None before the first averaged epoch.
        start: the resolved first averaged epoch (an int, set by ``fit``).

    Raises:
        ValueError: ``start_epoch`` negative, a float outside (0, 1), or (when ``fit``
            begins) not before the last epoch; ``learning_rate`` <= 0;
            ``annealing_epochs`` < 0 or > 0 without ``learning_rate``; ``bn_steps`` or
            ``bn_batch_size`` < 1, ``bn_batch_size`` without array ``bn_data``; with
            ``learning_rate``, an optimizer whose learning rate is a schedule.
        TypeError: a non-numeric ``start_epoch``, ``learning_rate`` or
            ``annealing_epochs``.

    Reference:
        Izmailov, Podoprikhin, Garipov, Vetrov & Wilson, "Averaging Weights Leads to
        Wider Optima and Better Generalization", UAI 2018.
    """

    def __init__(
        self,
        start_epoch: Union[int, float],
        learning_rate: Optional[float] = None,
        annealing_epochs: int = 0,
        bn_data: Any = None,
        bn_batch_size: Optional[int] = None,
        bn_steps: Optional[int] = None,
        verbose: int = 0,
    ):
        super().__init__()
        self.start_epoch = _check_start_epoch(start_epoch)
        if learning_rate is not None:
            learning_rate = check.check_range(_OWNER, "learning_rate", learning_rate, 0.0, low_inclusive=False)
        self.learning_rate = learning_rate
        self.annealing_epochs = check.check_int(_OWNER, "annealing_epochs", annealing_epochs, 0)
        if self.annealing_epochs > 0 and learning_rate is None:
            raise ValueError(
                f"{_OWNER}: annealing_epochs > 0 needs a learning_rate to anneal to, got "
                f"annealing_epochs={annealing_epochs!r} with learning_rate=None"
            )
        self.bn_data = bn_data
        self.bn_batch_size, self.bn_steps = _averaging.check_bn_arguments(_OWNER, bn_data, bn_batch_size, bn_steps)
        self.verbose = check.check_int(_OWNER, "verbose", verbose, 0)
        self.start: Optional[int] = None
        self.averaged_epochs: list = []
        self._sums: Optional[list] = None
        self._variables: list = []
        self._anneal_from: Optional[float] = None
        self._warned_bn = False
        self._resume: Optional[Mapping[str, Any]] = None

    # ------------------------------------------------------------------ the rule
    def resolve_start(self, epochs: int) -> int:
        """The first averaged epoch for a ``fit`` of ``epochs`` epochs."""
        start = self.start_epoch
        if isinstance(start, float):
            start = int(math.floor(start * epochs))
        if start >= epochs:
            raise ValueError(
                f"{_OWNER}: start_epoch must fall before the last epoch (index < {epochs} for "
                f"epochs={epochs}), got start_epoch={self.start_epoch!r} (epoch {start})"
            )
        return start

    def learning_rate_at(self, epoch: int, anneal_from: float) -> float:
        """The learning rate of ``epoch`` (>= ``start``) when annealing starts at ``anneal_from``."""
        done = epoch - self.start + 1
        if self.annealing_epochs == 0 or done >= self.annealing_epochs:
            return self.learning_rate
        alpha = (1.0 - math.cos(math.pi * done / self.annealing_epochs)) / 2.0
        return alpha * self.learning_rate + (1.0 - alpha) * anneal_from

    @property
    def averaged_weights(self) -> Optional[list]:
        if not self._sums:
            return None
        count = len(self.averaged_epochs)
        return [(total / count).astype(v.dtype) for total, v in zip(self._sums, self._variables)]

    # ----------------------------------------------------------------- callbacks
    def on_train_begin(self, logs=None):
        model = self._model
        epochs = self.params.get("epochs") if self.params else None
        if epochs is None:
            raise ValueError(f"{_OWNER}: needs the number of epochs, which fit passes to its callbacks")
        self.start = self.resolve_start(int(epochs))
        self._variables = _averaging.trainable_variables(model)
        self._sums, self.averaged_epochs, self._anneal_from = None, [], None
        if self._resume is not None:
            self._load_state(self._resume)
            self._resume = None
        if self.learning_rate is not None:
            _check_settable_learning_rate(model.optimizer)
        if not self._warned_bn:
            self._warned_bn = _averaging.warn_without_bn_data(
                _OWNER, model, self.bn_data,
                "the moving statistics of the last epoch will be kept with the averaged weights.")

    def on_epoch_begin(self, epoch, logs=None):
        if self.learning_rate is None or epoch < self.start:
            return
        optimizer = self._model.optimizer
        if self._anneal_from is None:
            self._anneal_from = float(ops.convert_to_numpy(optimizer.learning_rate))
        optimizer.learning_rate = self.learning_rate_at(epoch, self._anneal_from)

    def on_epoch_end(self, epoch, logs=None):
        if self.learning_rate is not None and logs is not None and epoch >= self.start:
            logs["learning_rate"] = float(ops.convert_to_numpy(self._model.optimizer.learning_rate))
        if epoch < self.start:
            return
        _compat.jax_state_sync(self._model)
        if self._sums is None:
            self._sums = [np.array(ops.convert_to_numpy(v.value), dtype="float64") for v in self._variables]
        else:  # added in place: no float64 temporary
            for total, variable in zip(self._sums, self._variables):
                np.add(total, ops.convert_to_numpy(variable.value), out=total)
        self.averaged_epochs.append(int(epoch))

    def on_train_end(self, logs=None):
        if not self.averaged_epochs:
            warnings.warn(
                f"{_OWNER}: training ended before start_epoch (epoch {self.start}); nothing was "
                "averaged and the model keeps its weights.",
                stacklevel=2,
            )
            return
        _averaging.assign(self._variables, self.averaged_weights)
        if self.verbose:
            epochs = self.averaged_epochs
            _compat.print_msg(f"{_OWNER}: wrote the mean of the weights of epochs {epochs[0] + 1}-"
                              f"{epochs[-1] + 1} ({len(epochs)} snapshots) into the model")
        _averaging.finish_with_batch_norm(_OWNER, self._model, self.bn_data, self.bn_batch_size,
                                          self.bn_steps, self.verbose)

    # ------------------------------------------------------------- state, config
    def get_state(self) -> dict:
        """The averaged epochs, the float64 sums and the annealing start, to resume later."""
        return {
            "averaged_epochs": list(self.averaged_epochs),
            "sums": None if self._sums is None else [s.copy() for s in self._sums],
            "anneal_from": self._anneal_from,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`get_state`; the next ``fit`` (e.g. with ``initial_epoch``) continues it."""
        self._resume = dict(state)

    def _load_state(self, state: Mapping[str, Any]) -> None:
        sums = state.get("sums")
        if sums is not None:
            _averaging.check_state_shapes(_OWNER, "sums", self._variables, sums)
            sums = [np.array(s, dtype="float64") for s in sums]
        self._sums = sums
        self.averaged_epochs = [int(e) for e in state.get("averaged_epochs", [])]
        self._anneal_from = state.get("anneal_from")

    def get_config(self) -> dict:
        """The constructor arguments (``bn_data`` as given: not JSON-serializable when a dataset)."""
        return {
            "start_epoch": self.start_epoch,
            "learning_rate": self.learning_rate,
            "annealing_epochs": self.annealing_epochs,
            "bn_data": self.bn_data,
            "bn_batch_size": self.bn_batch_size,
            "bn_steps": self.bn_steps,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "StochasticWeightAveraging":
        return cls(**config)


def _check_start_epoch(value) -> Union[int, float]:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{_OWNER}: start_epoch must be an int >= 0 or a float in (0, 1), got {value!r}")
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise ValueError(f"{_OWNER}: start_epoch must be an int >= 0 or a float in (0, 1), got {value!r}")
        return int(value)
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{_OWNER}: start_epoch must be an int >= 0 or a float in (0, 1), got {value!r}")
    return value


def _check_settable_learning_rate(optimizer) -> None:
    """Raises a ValueError when the learning rate cannot be set (Keras refuses for schedules)."""
    try:
        optimizer.learning_rate = float(ops.convert_to_numpy(optimizer.learning_rate))
    except TypeError as error:
        raise ValueError(
            f"{_OWNER}: learning_rate needs an optimizer whose learning rate can be set (not a "
            f"LearningRateSchedule), got {type(optimizer).__name__} whose learning rate is not "
            "settable; pass learning_rate=None or give the optimizer a constant learning rate"
        ) from error
