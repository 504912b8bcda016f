"""DropoutSchedule: changes the drop rate of chosen layers over epochs, without retracing.

References:
    Ghiasi, Lin, Le, "DropBlock", NeurIPS 2018 (linear ramp of the drop rate from 0).
    Morerio et al., "Curriculum Dropout", ICCV 2017 (drop rate rising over training).
"""

from __future__ import annotations

from typing import Callable, Sequence

import weakref

import keras

from keras_regkit import _compat, _validation
from keras_regkit.layers._stochastic import ScheduledRateMixin


def _schedulable(layer) -> bool:
    return isinstance(layer, ScheduledRateMixin) and layer.schedulable


@keras.saving.register_keras_serializable(package="keras_regkit")
class DropoutSchedule(keras.callbacks.Callback):
    """Sets ``layer.rate`` of dropout-family layers at the start of every epoch.

    The rate of ``keras_regkit.layers`` dropout-family layers (``Dropout``, ``SpatialDropout*``,
    ``DropPath``, ``DropBlock2D``, ``DropConnect``) rides in the layer's random state, which
    the compiled train step reads, so changing it does not retrace (TensorFlow graph and XLA,
    JAX, torch). It is not a weight: ``EarlyStopping(restore_best_weights=True)`` (ours or
    Keras's) restores weights only and never rewinds the schedule. With ``schedule="linear"``
    each layer's rate goes linearly from ``start_rate`` at epoch 0 to its target at epoch
    ``ramp_epochs`` and stays there; the target is ``end_rate`` or, if ``None``, the rate the
    layer had when training began (the DropBlock ramp). A callable ``schedule(epoch, target)``
    returns the rate for a 0-based epoch given a layer's target (curriculum dropout, etc.).

    Layers constructed with ``rate=0`` have no random state (as Keras's) and are not
    scheduled; construct a layer with its target rate to ramp it.

    One schedule object can serve several ``fit`` calls and models: it always schedules the
    model being fitted. A later ``fit`` of the same model keeps each layer's target (so
    ``initial_epoch`` continues a ramp); a ``fit`` of another model takes that model's layers
    and their rates afresh.

    Args:
        schedule: ``"linear"`` or a callable ``(epoch: int, target: float) -> float``.
        start_rate: rate at epoch 0 for ``"linear"``, in [0, 1].
        end_rate: target rate in [0, 1], or ``None`` for each layer's own initial rate.
        ramp_epochs: epochs of the linear ramp, an int >= 1.
        layers: names or instances of the layers to schedule; ``None`` takes every
            schedulable layer of the model.
        verbose: 1 prints the rates at each epoch.

    Raises:
        ValueError: bad ``start_rate``/``end_rate``/``ramp_epochs``/``schedule``, a named layer
            that is missing, or a schedule that returns a rate outside [0, 1].
        TypeError: a chosen layer without a schedulable ``rate``: ``keras.layers.Dropout``
            (whose Python-float rate is baked into the traced graph), or one of ours
            constructed with ``rate=0``.
    """

    def __init__(
        self,
        schedule: str | Callable[[int, float], float] = "linear",
        start_rate: float = 0.0,
        end_rate: float | None = None,
        ramp_epochs: int = 10,
        layers: Sequence | None = None,
        verbose: int = 0,
    ):
        super().__init__()
        if not callable(schedule):
            _validation.check_choice("DropoutSchedule", "schedule", schedule, ("linear",))
        self.schedule = schedule
        owner = "DropoutSchedule"
        self.start_rate = _validation.check_range(owner, "start_rate", start_rate, 0.0, 1.0)
        if end_rate is not None:
            end_rate = _validation.check_range(owner, "end_rate", end_rate, 0.0, 1.0)
        self.end_rate = end_rate
        self.ramp_epochs = _validation.check_int(owner, "ramp_epochs", ramp_epochs, minimum=1)
        self.layers = None if layers is None else list(layers)
        self.verbose = verbose
        self._targets = None
        self._scheduled_model = None

    def _resolve_layers(self):
        everything = _compat.flatten_layers(self.model)
        if self.layers is None:
            return [layer for layer in everything if _schedulable(layer)]
        chosen = []
        by_name = {layer.name: layer for layer in everything}
        for item in self.layers:
            if isinstance(item, str):
                if item not in by_name:
                    raise ValueError(
                        "DropoutSchedule: layers must be names of layers of the model, "
                        f"got {item!r}"
                    )
                item = by_name[item]
            if not _schedulable(item):
                raise TypeError(
                    "DropoutSchedule: layers must be keras_regkit dropout-family layers "
                    f"constructed with rate > 0, got {item.name!r}"
                )
            chosen.append(item)
        return chosen

    def rate_at(self, epoch: int, target: float) -> float:
        """The scheduled rate of a layer whose target is ``target`` at 0-based ``epoch``."""
        if callable(self.schedule):
            rate = self.schedule(epoch, target)
        else:
            progress = min(epoch / self.ramp_epochs, 1.0)
            rate = self.start_rate + (target - self.start_rate) * progress
        return _validation.check_range("DropoutSchedule", "scheduled rate", rate, 0.0, 1.0)

    def on_train_begin(self, logs=None):
        if self._scheduled_model is not None and self._scheduled_model() is self.model:
            return  # a later fit() of the same model continues the same schedule
        layers = self._resolve_layers()
        self._targets = [
            (layer, layer.rate if self.end_rate is None else self.end_rate) for layer in layers
        ]
        self._scheduled_model = weakref.ref(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        for layer, target in self._targets:
            layer.rate = self.rate_at(epoch, target)
        if self.verbose:
            rates = ", ".join(f"{layer.name}={layer.rate:.4f}" for layer, _ in self._targets)
            print(f"Epoch {epoch + 1}: DropoutSchedule rates {rates}")

    def get_config(self):
        return {
            "schedule": self.schedule,
            "start_rate": self.start_rate,
            "end_rate": self.end_rate,
            "ramp_epochs": self.ramp_epochs,
            "layers": self.layers,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config) -> "DropoutSchedule":
        return cls(**config)
