"""EarlyStopping: Keras parity, named reasons, thresholds, restore on exceptions, backups."""

import math
import os
import signal
import subprocess
import sys
import time
import textwrap
import warnings

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_regkit.callbacks import EarlyStopping
from keras_regkit.stopping import GeneralizationLoss, UpStrips

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def drive(callback, model, values, key="loss", extra=None):
    """Feeds scripted logs to a callback as fit would; epoch e's weights are all e."""
    model.stop_training = False
    callback.set_model(model)
    callback.on_train_begin()
    ran = 0
    for epoch, value in enumerate(values):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        logs = dict(extra[epoch]) if extra is not None else {}
        if value is not None:
            logs[key] = value
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, logs)
        ran = epoch + 1
        if model.stop_training:
            break
    callback.on_train_end()
    return ran, float(model.get_weights()[0].flat[0])


# ----------------------------------------------------------------- Keras parity
values_st = st.one_of(
    st.floats(-5, 5, allow_nan=False, width=32),
    st.sampled_from([0.1, 0.2, 0.3, 0.30000001, 0.3000001, 1.0, 1.01, 1.5]),
    st.none(),
)


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(values_st, min_size=1, max_size=14),
    patience=st.integers(0, 4),
    min_delta=st.sampled_from([0.0, 0.01, -0.2, 0.5]),
    mode=st.sampled_from(["min", "max", "auto"]),
    baseline=st.one_of(st.none(), st.floats(-2, 2, allow_nan=False, width=32)),
    start_from_epoch=st.integers(0, 3),
    restore=st.booleans(),
)
def test_same_decisions_as_keras_on_scripted_logs(
    values, patience, min_delta, mode, baseline, start_from_epoch, restore
):
    model = tiny_model()
    kwargs = dict(
        monitor="loss",
        min_delta=min_delta,
        patience=patience,
        mode=mode,
        baseline=baseline,
        restore_best_weights=restore,
        start_from_epoch=start_from_epoch,
    )
    theirs = keras.callbacks.EarlyStopping(**kwargs)
    ours = EarlyStopping(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = drive(theirs, model, values)
        got = drive(ours, model, values)
    assert got == expected
    assert_same_attributes(ours, theirs)
    assert (ours.stop_reason == "patience") == (theirs.stopped_epoch > 0)


def keras_attributes(callback) -> dict:
    """The public attributes Keras's EarlyStopping keeps (what a user can read or set)."""
    return {k: v for k, v in vars(callback).items() if not k.startswith("_") and k != "params"}


def assert_same_attributes(ours, theirs):
    """Every attribute of Keras's callback exists on ours with the same value (and type)."""
    for name, value in keras_attributes(theirs).items():
        mine = getattr(ours, name)
        if name == "best_weights" and value is not None:
            assert len(mine) == len(value)
            for a, b in zip(mine, value):
                np.testing.assert_array_equal(a, b)
        elif name == "model":
            assert mine is value
        else:
            assert mine == value and type(mine) is type(value), (name, mine, value)


def _fit(callback, seed=3):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(48, 6)).astype("float32")
    y = (x[:, :1] + rng.normal(scale=1.0, size=(48, 1))).astype("float32")
    xv = rng.normal(size=(32, 6)).astype("float32")
    yv = (xv[:, :1] + rng.normal(scale=1.0, size=(32, 1))).astype("float32")
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    history = model.fit(
        x, y, validation_data=(xv, yv), epochs=30, batch_size=16, shuffle=False,
        verbose=0, callbacks=[callback],
    )
    return model, history


def test_same_decisions_as_keras_in_model_fit():
    kwargs = dict(monitor="val_loss", patience=2, restore_best_weights=True)
    theirs = keras.callbacks.EarlyStopping(**kwargs)
    ours = EarlyStopping(**kwargs)
    model_k, hist_k = _fit(theirs)
    model_o, hist_o = _fit(ours)
    assert theirs.stopped_epoch > 0  # the setting overfits: Keras stops early
    np.testing.assert_allclose(hist_o.history["val_loss"], hist_k.history["val_loss"], rtol=1e-6)
    assert (ours.stopped_epoch, ours.best_epoch) == (theirs.stopped_epoch, theirs.best_epoch)
    assert ours.best == pytest.approx(theirs.best, rel=1e-6)
    assert ours.stop_reason == "patience" and ours.restored_epoch == theirs.best_epoch
    for a, b in zip(model_o.get_weights(), model_k.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    for a, b in zip(ours.best_weights, theirs.best_weights):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert set(keras_attributes(theirs)) <= set(dir(ours))
    assert (ours.monitor_op, ours.min_delta, ours.wait) == (theirs.monitor_op, theirs.min_delta, theirs.wait)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_delta": -0.3, "mode": "min"},
        {"min_delta": -0.3, "mode": "max"},
        {"min_delta": 2, "mode": "auto"},
        {"patience": 3.0},
        {"verbose": True},
        {"start_from_epoch": 1.0, "baseline": 1},
        {"restore_best_weights": True, "baseline": 0.25},
    ],
)
def test_arguments_keras_accepts_give_keras_attributes(kwargs):
    """Keras stores abs(min_delta) (negated once the mode resolves to min), keeps
    patience=3.0 and verbose=True as given, ...: so do we, before and after training."""
    theirs = keras.callbacks.EarlyStopping(monitor="loss", **kwargs)
    ours = EarlyStopping(monitor="loss", **kwargs)
    assert_same_attributes(ours, theirs)
    values = [3.0, 2.0, 2.5, 1.0, 1.5, 1.6, 1.7, 0.5]
    assert drive(ours, tiny_model(), values) == drive(theirs, tiny_model(), values)
    assert_same_attributes(ours, theirs)


def test_best_and_counters_can_be_set_as_in_keras():
    """Keras's tests (and users resuming a run) assign best, wait and best_weights."""
    model = tiny_model()
    results = []
    for cls in (keras.callbacks.EarlyStopping, EarlyStopping):
        cb = cls(monitor="loss", patience=2)
        cb.set_model(model)
        cb.on_train_begin()
        cb.best, cb.wait, cb.best_epoch = 0.5, 1, 7
        for epoch, value in enumerate([0.7, 0.6, 0.4, 0.45]):
            cb.on_epoch_end(epoch, {"loss": value})
        results.append((cb.best, cb.wait, cb.best_epoch, cb.stopped_epoch))
    assert results[0] == results[1]
    # A new fit starts afresh (Keras >= 3.13 does too; 3.12 kept a stale best).
    cb.best_weights = object()
    cb.on_train_begin()
    assert cb.best is None and cb.wait == 0 and cb.best_weights is None


class OwnWeightIO(keras.Sequential):
    """A model that stores and loads its weights through its own methods (as Keras allows)."""

    calls = []

    def get_weights(self):
        OwnWeightIO.calls.append("get")
        return [w * 2 for w in super().get_weights()]

    def set_weights(self, weights):
        OwnWeightIO.calls.append("set")
        super().set_weights([w / 2 for w in weights])


def test_restore_goes_through_the_models_get_and_set_weights():
    model = OwnWeightIO([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    script = Scripted([1.0, 0.5, 0.7, 0.9])
    es = EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    x = np.random.default_rng(0).normal(size=(16, 2)).astype("float32")
    OwnWeightIO.calls.clear()
    model.fit(x, x[:, :1], epochs=4, verbose=0, callbacks=[script, es])
    assert OwnWeightIO.calls[-1] == "set" and "get" in OwnWeightIO.calls
    for got, want in zip(keras.Sequential.get_weights(model), script.weights[1]):
        np.testing.assert_allclose(got, want / 2, rtol=1e-6)  # Scripted read the doubled weights


# ------------------------------------------------------------ beyond Keras
def test_nan_first_epoch_is_never_best():
    values = [float("nan"), 1.0, 2.0, 3.0]
    keras_cb = keras.callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    ours = EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    # Keras takes the NaN as best, stops at epoch 1 and restores epoch 0.
    assert drive(keras_cb, tiny_model(), values) == (2, 0.0)
    assert drive(ours, tiny_model(), values) == (3, 1.0)
    assert ours.best == 1.0 and ours.best_epoch == 1 and ours.stopped_epoch == 2


def test_check_finite_stops_with_reason():
    cb = EarlyStopping(monitor="loss", patience=10, check_finite=True, restore_best_weights=True)
    ran, restored = drive(cb, tiny_model(), [3.0, 2.0, float("inf"), 1.0])
    assert (ran, restored) == (3, 1.0)
    assert cb.stop_reason == "non-finite" and cb.stopped_epoch == 2


@pytest.mark.parametrize(
    "mode, values, kwargs, reason, stop",
    [
        ("min", [5.0, 3.0, 0.9, 0.5], {"stopping_threshold": 1.0}, "threshold", 2),
        ("min", [5.0, 3.0, 12.0, 0.5], {"divergence_threshold": 10.0}, "divergence", 2),
        ("max", [0.5, 0.8, 0.96, 0.99], {"stopping_threshold": 0.95}, "threshold", 2),
        ("max", [0.5, 0.6, 0.05, 0.9], {"divergence_threshold": 0.1}, "divergence", 2),
        ("min", [5.0, 1.0, 1.0, 0.5], {"stopping_threshold": 1.0}, "threshold", 3),
    ],
)
def test_thresholds(mode, values, kwargs, reason, stop):
    cb = EarlyStopping(monitor="m", mode=mode, patience=10, **kwargs)
    ran, _ = drive(cb, tiny_model(), values, key="m")
    assert cb.stop_reason == reason and cb.stopped_epoch == stop and ran == stop + 1


def test_divergence_can_stop_at_epoch_zero():
    cb = EarlyStopping(monitor="loss", divergence_threshold=1.0)
    assert drive(cb, tiny_model(), [2.0, 0.5])[0] == 1
    assert cb.stop_reason == "divergence" and cb.stopped_epoch == 0


def test_criterion_replaces_patience_and_lists_combine():
    values = [1.0, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85, 0.9]
    gl = 100 * (np.array(values) / np.minimum.accumulate(values) - 1)
    first = int(np.argmax(gl > 5.0))
    cb = EarlyStopping(monitor="loss", patience=0, criterion="GL5", restore_best_weights=True)
    assert drive(cb, tiny_model(), values) == (first + 1, 1.0)
    assert cb.stop_reason == "GL" and "GL=" in cb.stop_message
    both = EarlyStopping(monitor="loss", criterion=[GeneralizationLoss(50.0), UpStrips(1, strip=2)])
    # strip ends at epochs 2, 4, 6, 8 (1-based); UP_1 stops at the first rise: 0.82 > 0.8.
    assert drive(both, tiny_model(), values)[0] == 4
    assert both.stop_reason == "UP"


def test_verbose_prints_one_line_with_reason_epoch_and_restore(capsys):
    cb = EarlyStopping(monitor="loss", patience=1, verbose=1, restore_best_weights=True)
    drive(cb, tiny_model(), [3.0, 1.0, 2.0, 2.5])
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        "Epoch 3: early stopping (patience): no improvement for 1 epochs (patience 1); "
        "restoring weights from epoch 2 (loss=1)."
    ]


def test_missing_monitor_warns_or_raises():
    cb = EarlyStopping(monitor="val_acc", mode="max")
    with pytest.warns(UserWarning, match="Available metrics are: loss,acc"):
        drive(cb, tiny_model(), [1.0], key="acc", extra=[{"loss": 1.0}])
    strict = EarlyStopping(monitor="val_acc", mode="max", strict=True)
    with pytest.raises(ValueError, match="monitor='val_acc'.*loss, acc"):
        drive(strict, tiny_model(), [1.0], key="acc", extra=[{"loss": 1.0}])


def test_snapshot_buffers_are_reused():
    cb = EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)
    model = tiny_model()
    cb.set_model(model)
    cb.on_train_begin()
    ids = []
    for epoch, value in enumerate([5.0, 4.0, 3.0, 2.0]):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        cb.on_epoch_end(epoch, {"loss": value})
        ids.append([id(b) for b in cb._buffers])
        assert float(cb.best_weights[0].flat[0]) == epoch
    assert all(i == ids[0] for i in ids)


def test_state_round_trip_resumes_the_same_decisions():
    values = [3.0, 2.0, 2.5, 1.0, 1.5, 1.6, 1.7, 0.5]
    full = EarlyStopping(monitor="loss", patience=2, criterion=None)
    drive(full, tiny_model(), values)
    first = EarlyStopping(monitor="loss", patience=2)
    drive(first, tiny_model(), values[:5])
    assert first.stop_reason is None
    second = EarlyStopping(monitor="loss", patience=2)
    second.set_state(first.get_state())
    model = tiny_model()
    second.set_model(model)
    second.on_train_begin()
    for epoch in range(5, len(values)):
        second.on_epoch_end(epoch, {"loss": values[epoch]})
        if model.stop_training:
            break
    assert (second.stopped_epoch, second.best, second.wait) == (
        full.stopped_epoch, full.best, full.wait
    )


def test_config_round_trip():
    cb = EarlyStopping(
        monitor="val_acc", min_delta=0.01, patience=3, mode="max", baseline=0.5,
        restore_best_weights=True, start_from_epoch=2, stopping_threshold=0.99,
        divergence_threshold=0.1, check_finite=True, criterion=None, strict=True,
    )
    config = cb.get_config()
    assert config == EarlyStopping.from_config(config).get_config()
    with_rules = EarlyStopping(criterion=[UpStrips(2, strip=3), "GL3"])
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(with_rules)
    )
    assert restored.get_config() == with_rules.get_config()
    assert [type(r).__name__ for r in restored.rules] == ["UpStrips", "GeneralizationLoss"]
    assert restored.rules[0].s == 2 and restored.rules[1].alpha == 3.0


# -------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "best"}, r"mode must be one of 'auto', 'min', 'max', got 'best'"),
        ({"patience": -1}, r"patience must be a whole number >= 0, got -1"),
        ({"patience": 2.5}, r"patience must be a whole number >= 0, got 2.5"),
        ({"start_from_epoch": -2}, r"start_from_epoch must be a whole number >= 0, got -2"),
        ({"verbose": -1}, r"verbose must be a whole number >= 0, got -1"),
        ({"min_delta": float("nan")}, r"min_delta must be a finite real number, got nan"),
        ({"min_delta": float("inf")}, r"min_delta must be a finite real number, got inf"),
        ({"baseline": float("nan")}, r"baseline must be a finite real number, got nan"),
        ({"baseline": -float("inf")}, r"baseline must be a finite real number, got -inf"),
        ({"stopping_threshold": float("nan")}, r"stopping_threshold must be a finite real number"),
        ({"divergence_threshold": float("inf")}, r"divergence_threshold must be a finite real number"),
        ({"mode": "min", "stopping_threshold": 2.0, "divergence_threshold": 1.0},
         r"stopping_threshold must be < divergence_threshold in mode='min'"),
        ({"mode": "max", "stopping_threshold": 0.1, "divergence_threshold": 0.5},
         r"stopping_threshold must be > divergence_threshold in mode='max'"),
        ({"mode": "min", "baseline": 3.0, "divergence_threshold": 1.0},
         r"baseline must be better than divergence_threshold"),
        ({"criterion": "XY"}, r"criterion must be None, 'GL', 'PQ', 'UP'.*got 'XY'"),
        ({"criterion": "UP2.5"}, r"integer s"),
        ({"backup_path": "best.h5"}, r"backup_path must end in '.weights.h5', got 'best.h5'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**kwargs)


def test_contradiction_found_when_auto_mode_is_resolved():
    cb = EarlyStopping(monitor="val_loss", stopping_threshold=2.0, divergence_threshold=1.0)
    with pytest.raises(ValueError, match="stopping_threshold must be < divergence_threshold"):
        drive(cb, tiny_model(), [1.0], key="val_loss")


def test_pq_without_training_loss_raises():
    cb = EarlyStopping(monitor="val_loss", criterion="PQ")
    with pytest.raises(ValueError, match=r"criterion='PQ' needs 'loss'.*val_loss"):
        drive(cb, tiny_model(), [1.0], key="val_loss")


@pytest.mark.parametrize("criterion, values, train", [
    ("GL5", [0.5, 0.2, 0.0], None),
    ("GL", [0.5, -0.1], None),
    ("PQ0.5", [0.5, 0.4, 0.3, 0.2, 0.1], [0.5, 0.4, 0.3, 0.2, 0.0]),
])
def test_prechelt_on_non_positive_errors_raises_value_error_and_restores(criterion, values, train):
    """GL and PQ divide by errors: a zero or negative one is a clear error, never
    ZeroDivisionError, and the best weights are still restored."""
    model = tiny_model()
    cb = EarlyStopping(monitor="val_loss", criterion=criterion, restore_best_weights=True)
    extra = None if train is None else [{"loss": t} for t in train]
    with pytest.raises(ValueError, match=rf"{criterion[:2]}: Prechelt's GL and PQ are defined for "
                                         rf"positive errors, got .*=-?0\.[01]+ at epoch {len(values)}"):
        drive(cb, model, values, key="val_loss", extra=extra)


def test_prechelt_needs_a_minimised_value():
    cb = EarlyStopping(monitor="acc", mode="max", criterion="GL")
    with pytest.raises(ValueError, match="mode='max'"):
        drive(cb, tiny_model(), [0.5], key="acc")


# ----------------------------------------------------- restore on exceptions
class Scripted(keras.callbacks.Callback):
    """Overwrites the monitored value with a script and records each epoch's weights."""

    def __init__(self, values):
        super().__init__()
        self.values = values
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        logs["loss"] = self.values[epoch]
        self.weights[epoch] = [w.copy() for w in self.model.get_weights()]


class Raise(keras.callbacks.Callback):
    def __init__(self, error, hook, epoch, batch=0):
        super().__init__()
        self.error, self.hook, self.epoch, self.batch = error, hook, epoch, batch
        self.current = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.hook == "batch" and self.current == self.epoch and batch == self.batch:
            self._raise()

    def on_epoch_end(self, epoch, logs=None):
        if self.hook == "epoch" and epoch == self.epoch:
            self._raise()

    def on_train_end(self, logs=None):
        if self.hook == "train_end":
            self._raise()

    def _raise(self):
        if self.error == "sigint":
            # Re-arm Python's own handler at the C level (a native library loaded by an earlier
            # test may have taken SIGINT over), then deliver the signal to this (main) thread:
            # Python's handler raises KeyboardInterrupt as raise_signal returns.
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                signal.raise_signal(signal.SIGINT)
                for _ in range(2000):
                    time.sleep(0.001)
            finally:
                signal.signal(signal.SIGINT, previous)
        raise self.error


def _fit_with(error, hook, epoch=4, values=(1.0, 0.5, 0.7, 0.9, 2.0, 3.0)):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = x.sum(1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    script = Scripted(list(values))
    es = EarlyStopping(monitor="loss", patience=100, restore_best_weights=True)
    raiser = Raise(error, hook, epoch)
    # A failing on_train_end is placed before ours, so that ours never runs.
    order = [script, raiser, es] if hook == "train_end" else [script, es, raiser]
    with pytest.raises(BaseException) as info:
        model.fit(x, y, epochs=len(values), batch_size=16, verbose=0, callbacks=order)
    return model, script, es, info.value


@pytest.mark.parametrize(
    "error, hook",
    [
        (RuntimeError("later callback failed"), "epoch"),
        (KeyboardInterrupt(), "epoch"),
        (KeyboardInterrupt(), "batch"),
        (MemoryError("out of memory"), "batch"),
        (RuntimeError("late"), "train_end"),
        ("sigint", "batch"),
    ],
)
def test_exception_restores_best_and_propagates_unchanged(error, hook):
    model, script, es, raised = _fit_with(error, hook)
    if error == "sigint":
        assert isinstance(raised, KeyboardInterrupt)
    else:
        assert raised is error
    for got, want in zip(model.get_weights(), script.weights[1]):
        np.testing.assert_array_equal(got, want)
    assert es.restored_epoch == 1
    if hook != "train_end":
        assert es.stop_reason == "exception"
    # The guard is gone: the model is back to its own methods.
    assert "evaluate" not in model.__dict__ and "reset_metrics" not in model.__dict__


def test_prechelt_error_mid_fit_still_restores_the_best_weights():
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    script = Scripted([1.0, 0.5, 0.7, 0.9])  # the monitored val_loss: best at epoch 1
    training = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: logs.update(val_loss=logs["loss"], loss=[2.0, 1.0, 0.5, 0.0][epoch]))
    es = EarlyStopping(monitor="val_loss", criterion="PQ", restore_best_weights=True)
    with pytest.raises(ValueError, match="PQ: Prechelt's GL and PQ .* training error 'loss'=0.0 at epoch 4"):
        model.fit(x, x[:, :1], epochs=4, verbose=0, callbacks=[script, training, es])
    assert es.restored_epoch == 1 and es.stop_reason == "exception"
    for got, want in zip(model.get_weights(), script.weights[1]):
        np.testing.assert_array_equal(got, want)


def test_exception_in_fit_own_code_is_caught():
    """An error raised by fit itself between hooks (here while resetting the metrics)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    script = Scripted([1.0, 0.5, 0.7, 0.9])
    es = EarlyStopping(monitor="loss", patience=100, restore_best_weights=True)
    calls = []
    original = model.reset_metrics

    def failing_reset():
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        original()

    model.reset_metrics = failing_reset
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, x[:, :1], epochs=4, verbose=0, callbacks=[script, es])
    for got, want in zip(model.get_weights(), script.weights[1]):
        np.testing.assert_array_equal(got, want)


def test_fit_works_again_after_an_exception():
    model, script, es, _ = _fit_with(RuntimeError("x"), "epoch")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 4)).astype("float32")
    history = model.fit(x, x.sum(1, keepdims=True), epochs=2, verbose=0, callbacks=[es])
    assert len(history.history["loss"]) == 2 and es.stop_reason is None


# ------------------------------------------------------------------ backups
def test_backup_file_holds_best_weights(tmp_path):
    path = str(tmp_path / "best.weights.h5")
    model = tiny_model()
    cb = EarlyStopping(monitor="loss", patience=10, backup_path=path)
    drive(cb, model, [3.0, 2.0, 2.5, 1.0, 1.5])
    fresh = tiny_model()
    fresh.load_weights(path)
    assert all(np.all(w == 3.0) for w in fresh.get_weights())
    assert os.listdir(tmp_path) == ["best.weights.h5"]  # no temporary file left


KILLED_RUN = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np, keras
    from keras_regkit.callbacks import EarlyStopping
    out = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    values = [1.0, 0.5, 0.7, 0.4, 0.6, 0.9]
    es = EarlyStopping(monitor="loss", patience=100, backup_path=os.path.join(out, "b.weights.h5"))

    class Script(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["loss"] = values[epoch]

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if es.best_epoch == epoch:
                np.savez(os.path.join(out, "ref.npz"), *self.model.get_weights())
            if epoch == 4:
                print("READY", es.best_epoch, flush=True)
                time.sleep(600)

    model.fit(x, x[:, :1], epochs=6, verbose=0, callbacks=[Script(), es, Report()])
    """
)


@pytest.mark.slow
def test_backup_path_creates_missing_folders(tmp_path):
    x, y = np.ones((8, 2), "float32"), np.ones((8, 1), "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    path = tmp_path / "runs" / "a" / "best.weights.h5"
    es = EarlyStopping(monitor="loss", backup_path=path)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[es])
    restored = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    restored.load_weights(path)
    assert os.listdir(path.parent) == ["best.weights.h5"]


def test_backup_survives_sigkill(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.split() == ["READY", "3"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.load_weights(str(tmp_path / "b.weights.h5"))
    ref = np.load(tmp_path / "ref.npz")
    for i, got in enumerate(model.get_weights()):
        np.testing.assert_array_equal(got, ref[f"arr_{i}"])
    assert not math.isnan(float(model.get_weights()[0].flat[0]))


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="fit's finally clause is JAX-only")
def test_jax_finally_hook_catches_errors_between_hooks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    script = Scripted([1.0, 0.5, 0.7, 0.9])
    es = EarlyStopping(monitor="loss", patience=100, restore_best_weights=True)
    original = model._should_eval
    calls = []

    def failing(epoch, validation_freq):
        calls.append(1)
        if len(calls) == 3:  # fit's own code, not a guarded hook
            raise ValueError("inside fit")
        return original(epoch, validation_freq)

    model._should_eval = failing
    with pytest.raises(ValueError, match="inside fit"):
        model.fit(x, x[:, :1], validation_data=(x, x[:, :1]), epochs=4, verbose=0,
                  callbacks=[script, es])
    for got, want in zip(model.get_weights(), script.weights[1]):
        np.testing.assert_array_equal(got, want)


def test_mixed_precision_and_jit_compile_restore():
    keras.config.set_dtype_policy("mixed_float16")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    script = Scripted([1.0, 0.5, 0.7, 0.9])
    es = EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    model.fit(x, x[:, :1], epochs=4, verbose=0, callbacks=[script, es])
    assert es.stop_reason == "patience" and es.stopped_epoch == 2 and es.restored_epoch == 1
    for got, want in zip(model.get_weights(), script.weights[1]):
        np.testing.assert_array_equal(got, want)
