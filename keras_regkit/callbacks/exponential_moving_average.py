"""An exponential moving average of the weights, BatchNormalization statistics included."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import keras
import numpy as np
from keras import ops

from keras_regkit import _compat
from keras_regkit import _validation as check
from keras_regkit.callbacks import _averaging

_OWNER = "ExponentialMovingAverage"


@keras.saving.register_keras_serializable(package="keras_regkit")
class ExponentialMovingAverage(keras.callbacks.Callback):
    """Keeps an exponential moving average (EMA) of the weights during ``fit``.

    After every training step (every call of ``on_train_batch_end``, so every
    ``steps_per_execution`` steps) each averaged variable's shadow copy moves towards
    the variable: ``average <- d * average + (1 - d) * variable``, with
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates when ``warmup`` is on (the
    ramp of TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` and timm's
    ``ModelEmaV3``), else ``d = decay``. The average starts from the weights at the start
    of ``fit``. Validation inside ``fit`` runs with the averaged weights swapped in (and
    the training weights swapped back afterwards); at the end of training the average is
    written into the model, and with ``bn_data`` every BatchNormalization layer's
    population statistics are then recomputed under the averaged weights
    (:func:`keras_regkit.recompute_batch_statistics`).

    Beyond Keras's ``optimizer(use_ema=True)``, which averages the trainable variables
    only: the moving mean and variance of every BatchNormalization layer (Keras's and
    keras_regkit's) are averaged too, so the averaged model's statistics belong to
    averaged weights rather than to the last ones; the average is a callback, so it
    works with any optimizer and can be added to a compiled model; the decay warms up.

    The update is one compiled call per step with the weight ``1 - d`` as an argument,
    so changing ``d`` never retraces: an XLA-compiled ``tf.function`` on TensorFlow, a
    jitted function that reuses the old buffers on JAX (reading the training state
    without synchronising it into the model), ``torch._foreach_lerp_`` on PyTorch. The
    shadow copies live on the weights' device and take as much memory as the averaged
    variables.

    With ``keras_regkit.callbacks.EarlyStopping(restore_best_weights=True)`` in the same
    ``fit``, the order of the callbacks list decides what the model holds at the end
    (Keras calls ``on_train_end`` in list order): put EarlyStopping first to end with
    the average (EarlyStopping restores its best epoch, then the average overwrites it),
    or this callback first to end with EarlyStopping's best raw weights. Either way
    EarlyStopping sees the validation of the averaged weights.

    Args:
        decay: the decay ``d`` in [0, 1); 0 keeps the last weights, values near 1 average
            over about ``1 / (1 - decay)`` steps. Defaults to 0.999.
        warmup: use the ramp ``min(decay, (1 + n) / (10 + n))`` so that the early,
            random weights are forgotten quickly. Defaults to True.
        bn_data: training inputs on which to recompute the BatchNormalization population
            statistics after the average has been written (arrays, a ``tf.data.Dataset``
            or an iterable of batches, as :func:`keras_regkit.recompute_batch_statistics`
            takes them), or None to keep the averaged moving statistics.
        bn_batch_size: batch size for array ``bn_data`` (default 32).
        bn_steps: number of ``bn_data`` batches to use (default: all).
        verbose: 1 prints a line when the average is written.

    Attributes:
        updates: number of updates made in the current (or last) ``fit``.
        averaged_weights: NumPy copies of the averages (trainable variables first, then
            the BatchNormalization statistics), or None before ``fit``.

    Raises:
        ValueError: ``decay`` outside [0, 1), ``bn_steps`` or ``bn_batch_size`` < 1,
            ``bn_batch_size`` without array ``bn_data``; in ``set_state``, a state that does not
            match the model.
        TypeError: a non-bool ``warmup``, a non-numeric ``decay``.

    Reference:
        Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging",
        SIAM J. Control Optim. 30(4), 1992; Izmailov et al., "Averaging Weights Leads to
        Wider Optima and Better Generalization", UAI 2018 (BN statistics of averaged
        weights).
    """

    def __init__(
        self,
        decay: float = 0.999,
        warmup: bool = True,
        bn_data: Any = None,
        bn_batch_size: Optional[int] = None,
        bn_steps: Optional[int] = None,
        verbose: int = 0,
    ):
        super().__init__()
        self.decay = check.check_range(_OWNER, "decay", decay, 0.0, 1.0, high_inclusive=False)
        if not isinstance(warmup, (bool, np.bool_)):
            raise TypeError(f"{_OWNER}: warmup must be a bool, got {warmup!r}")
        self.warmup = bool(warmup)
        self.bn_data = bn_data
        self.bn_batch_size, self.bn_steps = _averaging.check_bn_arguments(_OWNER, bn_data, bn_batch_size, bn_steps)
        self.verbose = check.check_int(_OWNER, "verbose", verbose, 0)
        self.updates = 0
        self._average: Optional[_averaging.DeviceAverage] = None
        self._variables: list = []
        self._in_fit = False
        self._swapped_out: Optional[list] = None
        self._resume: Optional[Mapping[str, Any]] = None

    # ----------------------------------------------------------------- the rule
    def current_decay(self, updates: Optional[int] = None) -> float:
        """The decay used by update number ``updates`` (default: the next one)."""
        n = self.updates if updates is None else updates
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @property
    def averaged_weights(self) -> Optional[list]:
        return None if self._average is None else self._average.numpy()

    # ---------------------------------------------------------------- callbacks
    def on_train_begin(self, logs=None):
        model = self._model
        self._variables = _averaging.trainable_variables(model) + _averaging.batch_norm_statistics(model)
        self._average = _averaging.DeviceAverage(self._variables, _averaging.current_values(model, self._variables))
        self.updates = 0
        if self._resume is not None:
            self._load_state(self._resume)
            self._resume = None
        self._in_fit = True

    def on_train_batch_end(self, batch, logs=None):
        if self._average is None:
            return
        weight = 1.0 - self.current_decay()
        self._average.lerp(_averaging.current_values(self._model, self._variables), weight)
        self.updates += 1

    def on_test_begin(self, logs=None):
        if not self._in_fit or self._average is None or self._swapped_out is not None:
            return
        values = _averaging.current_values(self._model, self._variables)
        self._swapped_out = [ops.copy(v) for v in values]
        self._average.write_to_variables()

    def on_test_end(self, logs=None):
        if self._swapped_out is not None:
            _averaging.assign(self._variables, self._swapped_out)
            self._swapped_out = None

    def on_train_end(self, logs=None):
        self._in_fit = False
        if self._average is None:
            return
        self.on_test_end()
        self._average.write_to_variables()
        if self.verbose:
            _compat.print_msg(f"{_OWNER}: wrote the average of {self.updates} updates into the model")
        _averaging.finish_with_batch_norm(_OWNER, self._model, self.bn_data, self.bn_batch_size,
                                          self.bn_steps, self.verbose)

    # ------------------------------------------------------------ state, config
    def get_state(self) -> dict:
        """The update count and the averages (NumPy), to resume a ``fit`` later."""
        return {"updates": self.updates, "averages": self.averaged_weights}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`get_state`; the next ``fit`` continues this average."""
        self._resume = dict(state)

    def _load_state(self, state: Mapping[str, Any]) -> None:
        averages = state.get("averages")
        if averages is not None:
            _averaging.check_state_shapes(_OWNER, "averages", self._variables, averages)
            self._average.load([np.asarray(a) for a in averages])
        self.updates = check.check_int(_OWNER, "state['updates']", state.get("updates", 0), 0)

    def get_config(self) -> dict:
        """The constructor arguments (``bn_data`` as given: not JSON-serializable when a dataset)."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "bn_data": self.bn_data,
            "bn_batch_size": self.bn_batch_size,
            "bn_steps": self.bn_steps,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ExponentialMovingAverage":
        return cls(**config)
