"""StochasticWeightAveraging and ExponentialMovingAverage against NumPy reference math.

Snapshots are taken by a recording callback placed before the averaging callback, and the
expected averages are computed from them in float64: SWA's mean of the epoch-end weights,
the EMA recursion of the per-step weights (BatchNormalization statistics included), and
Algorithm 2's population statistics of a Dense -> BatchNormalization model under the
averaged weights.
"""

import math
import warnings

import keras
import numpy as np
import pytest

from keras_regkit.callbacks import EarlyStopping, ExponentialMovingAverage, StochasticWeightAveraging
from keras_regkit.layers import BatchNormalization

BACKEND = keras.backend.backend()


def np_(x):
    return np.array(keras.ops.convert_to_numpy(x))


def _data(rng, n=64):
    x = rng.normal(size=(n, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 1)) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def _model(bn_cls=None, optimizer="sgd", **compile_kwargs):
    layers = [keras.Input((5,)), keras.layers.Dense(8, name="d1")]
    if bn_cls is not None:
        layers.append(bn_cls(momentum=0.5, name="bn"))
    layers += [keras.layers.Dense(1, name="d2")]
    model = keras.Sequential(layers)
    model.compile(optimizer, "mse", **compile_kwargs)
    return model


class Recorder(keras.callbacks.Callback):
    """Copies of the variables after every step and at every epoch end (before validation's swap)."""

    def __init__(self, variables=lambda m: m.trainable_variables):
        super().__init__()
        self.pick = variables
        self.steps, self.epochs, self.at_train_begin = [], [], None

    def on_train_begin(self, logs=None):
        self.at_train_begin = [np_(v) for v in self.pick(self.model)]

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([np_(v) for v in self.pick(self.model)])

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append([np_(v) for v in self.pick(self.model)])


def _bn_and_trainable(model):
    bn = [layer for layer in model.layers if isinstance(layer, (BatchNormalization, keras.layers.BatchNormalization))]
    return list(model.trainable_variables) + [v for layer in bn for v in layer.non_trainable_weights]


def _population_statistics(model, x, batch_size):
    """NumPy Algorithm 2 for Dense d1 -> BN: mean of batch means and of unbiased batch variances."""
    d1 = model.get_layer("d1")
    h = x.astype("float64") @ np_(d1.kernel).astype("float64") + np_(d1.bias)
    batches = [h[i:i + batch_size] for i in range(0, len(h), batch_size)]
    means = np.mean([b.mean(0) for b in batches], 0)
    variances = np.mean([b.var(0, ddof=1) for b in batches], 0)
    return means, variances


# ------------------------------------------------------------------------------- SWA
@pytest.mark.parametrize("start_epoch, first", [(2, 2), (0.5, 3), (0, 0)])
def test_swa_writes_the_exact_mean_of_the_epoch_end_weights(rng, start_epoch, first):
    x, y = _data(rng)
    model = _model()
    recorder = Recorder()
    swa = StochasticWeightAveraging(start_epoch)
    model.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=[recorder, swa])
    assert swa.start == first and swa.averaged_epochs == list(range(first, 6))
    snapshots = recorder.epochs[first:]
    for i, variable in enumerate(model.trainable_variables):
        total = snapshots[0][i].astype("float64")
        for snapshot in snapshots[1:]:
            total = total + snapshot[i]
        np.testing.assert_array_equal(np_(variable), (total / len(snapshots)).astype("float32"))
    assert not np.array_equal(np_(model.trainable_variables[0]), recorder.epochs[-1][0])


@pytest.mark.parametrize("bn_cls", [BatchNormalization, keras.layers.BatchNormalization])
def test_swa_recomputes_batch_norm_statistics_under_the_averaged_weights(rng, bn_cls):
    x, y = _data(rng)
    model = _model(bn_cls)
    swa = StochasticWeightAveraging(1, bn_data=x, bn_batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # bn_data given: no warning
        model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[swa])
    mean, variance = _population_statistics(model, x, 16)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(np_(bn.moving_mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_(bn.moving_variance), variance, rtol=1e-5, atol=1e-6)


def test_swa_warns_once_about_batch_norm_without_bn_data(rng):
    x, y = _data(rng)
    model = _model(BatchNormalization)
    swa = StochasticWeightAveraging(1)
    with pytest.warns(UserWarning, match="bn_data is None"):
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[swa])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[swa])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no BatchNormalization layer: no warning
        _model().fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[StochasticWeightAveraging(1)])


@pytest.mark.parametrize("annealing_epochs", [0, 1, 3])
def test_swa_anneals_the_learning_rate_with_a_cosine(rng, annealing_epochs):
    x, y = _data(rng)
    model = _model(optimizer=keras.optimizers.SGD(0.1))
    swa = StochasticWeightAveraging(2, learning_rate=0.01, annealing_epochs=annealing_epochs)
    seen = []

    class LearningRates(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                seen.append(float(np_(self.model.optimizer.learning_rate)))

    history = model.fit(x, y, epochs=7, batch_size=32, verbose=0, callbacks=[swa, LearningRates()])
    expected = [0.1, 0.1]
    for k in range(1, 6):  # epochs 2..6
        t = min(k / annealing_epochs, 1.0) if annealing_epochs else 1.0
        expected.append(0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * t)) / 2)
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    np.testing.assert_allclose(history.history["learning_rate"], expected[2:], rtol=1e-6)


def test_swa_refuses_a_learning_rate_schedule(rng):
    x, y = _data(rng)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    model = _model(optimizer=keras.optimizers.SGD(schedule))
    with pytest.raises(ValueError, match="learning_rate"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[StochasticWeightAveraging(1, learning_rate=0.01)])
    model.fit(x, y, epochs=3, verbose=0, callbacks=[StochasticWeightAveraging(1)])  # no lr: fine


class Scripted(keras.callbacks.Callback):
    """Writes a scripted ``score`` into the logs, for EarlyStopping to monitor."""

    def __init__(self, scores):
        super().__init__()
        self.scores = scores

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.scores[epoch]


@pytest.mark.parametrize("swa_last", [True, False])
def test_swa_with_early_stopping_the_list_order_decides(rng, swa_last):
    x, y = _data(rng)
    model = _model()
    recorder = Recorder()
    stopper = EarlyStopping(monitor="score", mode="min", patience=1, restore_best_weights=True)
    swa = StochasticWeightAveraging(1)
    callbacks = [recorder, Scripted([5, 4, 3, 6, 7, 8, 9, 10]), stopper]
    callbacks = callbacks + [swa] if swa_last else callbacks[:2] + [swa, stopper]
    model.fit(x, y, epochs=8, batch_size=16, verbose=0, callbacks=callbacks)
    assert stopper.stopped_epoch == 3 and swa.averaged_epochs == [1, 2, 3]
    if swa_last:
        expected = [np.mean([s[i].astype("float64") for s in recorder.epochs[1:4]], 0).astype("float32")
                    for i in range(len(model.trainable_variables))]
    else:
        expected = recorder.epochs[2]  # EarlyStopping's best epoch
    for variable, value in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(np_(variable), value, rtol=1e-6, atol=1e-7)


def test_swa_warns_and_keeps_the_weights_when_training_stops_before_start(rng):
    x, y = _data(rng)
    model = _model()
    recorder = Recorder()
    stopper = EarlyStopping(monitor="score", mode="min", patience=0)
    swa = StochasticWeightAveraging(4)
    with pytest.warns(UserWarning, match="before start_epoch"):
        model.fit(x, y, epochs=8, verbose=0, callbacks=[recorder, Scripted([1, 2, 3, 4, 5, 6, 7, 8]), stopper, swa])
    for variable, value in zip(model.trainable_variables, recorder.epochs[-1]):
        np.testing.assert_array_equal(np_(variable), value)


def test_swa_state_resumes_the_average(rng):
    x, y = _data(rng)
    model = _model()
    recorder = Recorder()
    first = StochasticWeightAveraging(1)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[recorder, first])
    second = StochasticWeightAveraging.from_config(first.get_config())
    second.set_state(first.get_state())
    model.fit(x, y, epochs=5, initial_epoch=3, batch_size=16, verbose=0, callbacks=[recorder, second])
    assert second.averaged_epochs == [1, 2, 3, 4]
    snapshots = recorder.epochs[1:]
    for i, variable in enumerate(model.trainable_variables):
        expected = sum(s[i].astype("float64") for s in snapshots) / 4
        np.testing.assert_array_equal(np_(variable), expected.astype("float32"))


def test_swa_config_round_trip():
    swa = StochasticWeightAveraging(0.25, learning_rate=0.05, annealing_epochs=2, verbose=1)
    config = swa.get_config()
    clone = StochasticWeightAveraging.from_config(config)
    assert clone.get_config() == config
    assert config["start_epoch"] == 0.25 and config["annealing_epochs"] == 2
    registered = keras.saving.get_registered_object("keras_regkit>StochasticWeightAveraging")
    assert registered is StochasticWeightAveraging


@pytest.mark.parametrize("kwargs, error, word", [
    ({"start_epoch": -1}, ValueError, "start_epoch"),
    ({"start_epoch": 1.0}, ValueError, "start_epoch"),
    ({"start_epoch": 0.0}, ValueError, "start_epoch"),
    ({"start_epoch": 1.5}, ValueError, "start_epoch"),
    ({"start_epoch": float("nan")}, ValueError, "start_epoch"),
    ({"start_epoch": True}, TypeError, "start_epoch"),
    ({"start_epoch": "2"}, TypeError, "start_epoch"),
    ({"start_epoch": 1, "annealing_epochs": -1}, ValueError, "annealing_epochs"),
    ({"start_epoch": 1, "annealing_epochs": 2}, ValueError, "annealing_epochs"),
    ({"start_epoch": 1, "learning_rate": 0.0}, ValueError, "learning_rate"),
    ({"start_epoch": 1, "learning_rate": -0.1}, ValueError, "learning_rate"),
    ({"start_epoch": 1, "bn_batch_size": 8}, ValueError, "bn_batch_size"),
    ({"start_epoch": 1, "bn_data": np.ones((4, 5)), "bn_steps": 0}, ValueError, "bn_steps"),
])
def test_swa_bad_arguments(kwargs, error, word):
    with pytest.raises(error, match=word):
        StochasticWeightAveraging(**kwargs)


@pytest.mark.parametrize("start_epoch", [5, 7])
def test_swa_start_past_the_last_epoch(rng, start_epoch):
    x, y = _data(rng)
    with pytest.raises(ValueError, match=r"start_epoch must fall before the last epoch.*got start_epoch"):
        _model().fit(x, y, epochs=5, verbose=0, callbacks=[StochasticWeightAveraging(start_epoch)])


# ------------------------------------------------------------------------------- EMA
def _ema_reference(initial, steps, decay, warmup):
    average = [a.astype("float64") for a in initial]
    for n, values in enumerate(steps):
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        average = [d * a + (1 - d) * v for a, v in zip(average, values)]
    return average


@pytest.mark.parametrize("decay, warmup", [(0.0, True), (0.9, True), (0.9, False), (0.9999, False)])
def test_ema_follows_the_recursion_batch_norm_statistics_included(rng, decay, warmup):
    x, y = _data(rng)
    model = _model(BatchNormalization)
    recorder = Recorder(_bn_and_trainable)
    ema = ExponentialMovingAverage(decay=decay, warmup=warmup)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[recorder, ema])
    assert ema.updates == len(recorder.steps) == 24
    expected = _ema_reference(recorder.at_train_begin, recorder.steps, decay, warmup)
    for variable, value in zip(_bn_and_trainable(model), expected):
        np.testing.assert_allclose(np_(variable), value, rtol=2e-5, atol=2e-6)
    last, first = recorder.steps[-1], recorder.at_train_begin
    final = [np_(v) for v in _bn_and_trainable(model)]
    if decay == 0.0:  # the last weights
        for got, want in zip(final, last):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    if decay == 0.9999:  # near the initial weights
        moved = max(np.abs(g - f).max() for g, f in zip(final, first))
        travelled = max(np.abs(w - f).max() for w, f in zip(last, first))
        assert moved < 0.01 * travelled


def test_ema_validates_with_the_average_and_trains_on_the_raw_weights(rng):
    x, y = _data(rng)
    model = _model(BatchNormalization)
    recorder = Recorder(_bn_and_trainable)
    ema = ExponentialMovingAverage(decay=0.8)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, validation_data=(x[:32], y[:32]),
                        callbacks=[recorder, ema])
    # At every epoch end (after validation) the model holds the raw weights of the last step.
    for epoch, snapshot in enumerate(recorder.epochs):
        for got, want in zip(snapshot, recorder.steps[4 * epoch + 3]):
            np.testing.assert_array_equal(got, want)
    # The last validation ran on the average, which is what the model holds now.
    np.testing.assert_allclose(history.history["val_loss"][-1], model.evaluate(x[:32], y[:32], verbose=0),
                               rtol=1e-5)
    assert not np.allclose(np_(model.trainable_variables[0]), recorder.steps[-1][0])


@pytest.mark.parametrize("bn_cls", [BatchNormalization, keras.layers.BatchNormalization])
def test_ema_recomputes_batch_norm_statistics_with_bn_data(rng, bn_cls):
    x, y = _data(rng)
    model = _model(bn_cls)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0,
              callbacks=[ExponentialMovingAverage(decay=0.9, bn_data=x, bn_batch_size=32)])
    mean, variance = _population_statistics(model, x, 32)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(np_(bn.moving_mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_(bn.moving_variance), variance, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND not in ("tensorflow", "jax"), reason="counts traces of a compiled function")
def test_ema_update_never_retraces(rng):
    x, y = _data(rng)
    model = _model(BatchNormalization, jit_compile=True)
    ema = ExponentialMovingAverage(decay=0.99)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[ema])
    compiled = ema._average._compiled
    traces = compiled.experimental_get_tracing_count() if BACKEND == "tensorflow" else compiled._cache_size()
    assert ema.updates == 32 and traces == 1


def test_ema_under_mixed_precision(rng):
    keras.config.set_dtype_policy("mixed_float16")
    x, y = _data(rng)
    model = _model(BatchNormalization)
    recorder = Recorder(_bn_and_trainable)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[recorder, ExponentialMovingAverage(0.5)])
    expected = _ema_reference(recorder.at_train_begin, recorder.steps, 0.5, True)
    for variable, value in zip(_bn_and_trainable(model), expected):
        assert variable.dtype == "float32"
        np.testing.assert_allclose(np_(variable), value, rtol=1e-5, atol=1e-6)


def test_ema_state_and_config_round_trip(rng):
    x, y = _data(rng)
    model = _model()
    ema = ExponentialMovingAverage(decay=0.5, warmup=False)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[ema])
    clone = ExponentialMovingAverage.from_config(ema.get_config())
    assert clone.get_config() == ema.get_config()
    clone.set_state(ema.get_state())
    recorder = Recorder()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[recorder, clone])
    expected = _ema_reference(ema.averaged_weights, recorder.steps, 0.5, False)
    assert clone.updates == 8
    for variable, value in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(np_(variable), value, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shapes"):
        bad = ExponentialMovingAverage()
        bad.set_state({"updates": 1, "averages": [np.zeros(3)]})
        model.fit(x, y, epochs=1, verbose=0, callbacks=[bad])


@pytest.mark.parametrize("kwargs, error, word", [
    ({"decay": 1.0}, ValueError, "decay"),
    ({"decay": -0.1}, ValueError, "decay"),
    ({"decay": float("nan")}, ValueError, "decay"),
    ({"decay": "0.9"}, TypeError, "decay"),
    ({"warmup": 1}, TypeError, "warmup"),
    ({"bn_batch_size": 4}, ValueError, "bn_batch_size"),
])
def test_ema_bad_arguments(kwargs, error, word):
    with pytest.raises(error, match=word):
        ExponentialMovingAverage(**kwargs)
