"""DropoutSchedule: the rates it sets, and that changing them never retraces the train step."""

import keras
import numpy as np
import pytest

from keras_regkit import layers as L
from keras_regkit.callbacks import DropoutSchedule, EarlyStopping
from tests.conftest import requires_backend


@keras.saving.register_keras_serializable(package="keras_regkit_tests")
class TraceCounter(keras.layers.Layer):
    """Identity layer counting how often its Python ``call`` runs (once per trace when compiled)."""

    calls = 0

    def call(self, inputs, training=None):
        TraceCounter.calls += 1
        return inputs


class RateProbe(keras.callbacks.Callback):
    def __init__(self, layer):
        super().__init__()
        self.layer, self.rates, self.traces = layer, [], []

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(self.layer.rate)
        self.traces.append(TraceCounter.calls)


TORCH = keras.backend.backend() == "torch"


def _model(rate=0.4):
    inputs = keras.Input((16,))
    h = TraceCounter()(inputs)
    h = L.Dropout(rate, seed=0, name="drop")(h)
    h = L.DropPath(0.2, seed=0, name="path")(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    # torch runs eagerly by default (nothing to retrace); its torch.compile is exercised elsewhere.
    model.compile("sgd", "mse", jit_compile=not TORCH)
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 16)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")


def test_linear_ramp_to_each_layers_own_rate_without_retracing():
    model = _model()
    probe = RateProbe(model.get_layer("drop"))
    x, y = _data()
    model.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=[DropoutSchedule(ramp_epochs=4), probe])
    np.testing.assert_allclose(probe.rates, [0.0, 0.1, 0.2, 0.3, 0.4, 0.4], atol=1e-6)
    assert model.get_layer("path").rate == pytest.approx(0.2)
    if TORCH:  # eager: after the first epoch's build, the Python call runs once per step
        assert np.diff(probe.traces).tolist() == [4] * 5
    else:  # the train step was traced during epoch 1 only: no retrace when the rate changed
        assert probe.traces[0] >= 1 and probe.traces == [probe.traces[0]] * 6


@pytest.mark.parametrize("early_stopping", [EarlyStopping, keras.callbacks.EarlyStopping])
def test_restoring_the_best_weights_never_rewinds_the_schedule(early_stopping, tmp_path):
    """The rate is not a weight: a stop that restores epoch 0 keeps the last scheduled rate."""
    model = _model()
    x, y = _data()
    stop = early_stopping(monitor="loss", patience=1, restore_best_weights=True)
    # The loss is forced to rise after epoch 0, so epoch 0 is restored after epoch 2.
    rising = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(loss=float(epoch)))
    model.fit(x, y, epochs=10, batch_size=16, verbose=0,
              callbacks=[DropoutSchedule(ramp_epochs=4), rising, stop])
    assert stop.stopped_epoch == 1 and stop.best_epoch == 0
    assert model.get_layer("drop").rate == pytest.approx(0.1)  # epoch 1's rate, not epoch 0's 0.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("drop").rate_tensor), 0.1, rtol=1e-6)
    # A model saved afterwards keeps the current rate (in its config) and no rate weight.
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert keras.models.load_model(path).get_layer("drop").rate == pytest.approx(0.1)


def test_one_schedule_serves_several_models_and_fits():
    schedule = DropoutSchedule(ramp_epochs=2)
    x, y = _data()
    first, second = _model(rate=0.4), _model(rate=0.6)
    first.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[schedule])
    second.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[schedule])
    assert first.get_layer("drop").rate == pytest.approx(0.4)  # ramp finished, left alone since
    assert second.get_layer("drop").rate == pytest.approx(0.0)  # epoch 0 of its own ramp
    second.fit(x, y, epochs=3, initial_epoch=1, batch_size=32, verbose=0, callbacks=[schedule])
    assert second.get_layer("drop").rate == pytest.approx(0.6)  # same model: its own target kept


def test_rate_changes_take_effect_in_the_compiled_step():
    model = _model()
    x, y = _data()
    schedule = DropoutSchedule(schedule=lambda epoch, target: 1.0 if epoch == 1 else 0.0, layers=["drop"])
    history = model.fit(x, y, epochs=2, batch_size=64, verbose=0, shuffle=False, callbacks=[schedule])
    # rate 1 zeroes the features: the loss is then that of the bias alone, far from epoch 0's.
    bias = keras.ops.convert_to_numpy(model.layers[-1].bias)
    np.testing.assert_allclose(history.history["loss"][1], np.mean((y - bias) ** 2), rtol=0.05)
    assert model.get_layer("path").rate == pytest.approx(0.2)  # not chosen, untouched


def test_layer_selection_errors():
    model = _model()
    x, y = _data()
    keras_dropout = keras.Sequential([keras.Input((16,)), keras.layers.Dropout(0.1, name="kd"), keras.layers.Dense(1)])
    keras_dropout.compile("sgd", "mse")
    with pytest.raises(TypeError, match="DropoutSchedule: layers must be keras_regkit dropout-family layers"):
        keras_dropout.fit(x, y, epochs=1, verbose=0, callbacks=[DropoutSchedule(layers=["kd"])])
    with pytest.raises(ValueError, match="DropoutSchedule: layers must be names of layers of the model, got 'nope'"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[DropoutSchedule(layers=["nope"])])
    with pytest.raises(ValueError, match=r"DropoutSchedule: scheduled rate must be in \[0, 1\], got 2.0"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[DropoutSchedule(schedule=lambda e, t: 2.0)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"schedule": "cosine"}, "DropoutSchedule: schedule must be one of 'linear', got 'cosine'"),
        ({"start_rate": -0.1}, r"DropoutSchedule: start_rate must be in \[0, 1\], got -0.1"),
        ({"end_rate": 1.5}, r"DropoutSchedule: end_rate must be in \[0, 1\], got 1.5"),
        ({"ramp_epochs": 0}, "DropoutSchedule: ramp_epochs must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DropoutSchedule(**kwargs)


def test_config_round_trip():
    schedule = DropoutSchedule(start_rate=0.05, end_rate=0.3, ramp_epochs=5, layers=["a"], verbose=1)
    assert DropoutSchedule(**schedule.get_config()).get_config() == schedule.get_config()
    assert schedule.rate_at(0, 0.3) == pytest.approx(0.05) and schedule.rate_at(9, 0.3) == pytest.approx(0.3)


@requires_backend("torch")
def test_torch_compile_follows_the_schedule_without_recompiling():
    import torch._dynamo

    inputs = keras.Input((16,))
    model = keras.Model(inputs, keras.layers.Dense(1)(L.Dropout(0.4, seed=0, name="drop")(inputs)))
    model.compile("sgd", "mse", jit_compile=True)  # torch.compile
    graphs = []
    count = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"]))
    x, y = _data()
    schedule = DropoutSchedule(schedule=lambda epoch, target: 1.0 if epoch == 2 else 0.1 * epoch, layers=["drop"])
    history = model.fit(x, y, epochs=4, batch_size=64, verbose=0, shuffle=False, callbacks=[schedule, count])
    bias = keras.ops.convert_to_numpy(model.layers[-1].bias)
    np.testing.assert_allclose(history.history["loss"][2], np.mean((y - bias) ** 2), rtol=0.05)
    assert graphs[1:] == [graphs[1]] * 3  # compiled in the first epochs, never again
