"""YaoStepSchedule, YaoStoppingTime, DiscrepancyStopping, SmoothedDiscrepancyStopping in model.fit.

Run on both backends: ``KERAS_BACKEND=jax pytest tests/callbacks/test_yao.py``.
"""

import math

import keras
import numpy as np
import pytest

from keras_regkit.callbacks import (
    DiscrepancyStopping,
    SmoothedDiscrepancyStopping,
    YaoStepSchedule,
    YaoStoppingTime,
)
from keras_regkit.stopping import FeatureMapKernel, KernelGradientDescent, smoothing_power


def features(x):
    """An explicit finite feature map on [0, 1): a few Fourier modes, damped."""
    k = np.arange(1, 6)
    angle = 2 * np.pi * x[:, :1] * k
    return np.concatenate([np.ones((len(x), 1)), np.cos(angle) / k, np.sin(angle) / k], axis=1)


def half_mse(y_true, y_pred):
    return 0.5 * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


def linear_model(kappa, theta, width):
    model = keras.Sequential([keras.Input((width,)),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(YaoStepSchedule(kappa, theta)), loss=half_mse)
    return model


def problem(rng, m=48):
    x = rng.uniform(size=(m, 1))
    y = np.sin(2 * np.pi * x[:, 0]) + 0.1 * np.cos(6 * np.pi * x[:, 0]) + 0.3 * rng.normal(size=m)
    return x, y


@pytest.mark.parametrize("theta", [0.0, 0.5])
def test_full_batch_sgd_with_yao_schedule_is_kernel_gradient_descent(rng, theta):
    x, y = problem(rng)
    phi = features(x)
    kappa = float(np.sqrt(np.max(np.sum(phi**2, axis=1))))
    steps = 60
    model = linear_model(kappa, theta, phi.shape[1])
    # every batch is the whole (tiled) data set: 20 full-batch steps per epoch
    tiles = 20
    model.fit(np.tile(phi, (tiles, 1)).astype("float32"), np.tile(y, tiles).astype("float32"),
              batch_size=len(y), epochs=steps // tiles, shuffle=False, verbose=0)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == steps

    kgd = KernelGradientDescent(FeatureMapKernel(features), theta=theta).fit(x, y, max_iter=steps)
    assert kgd.kappa_ == pytest.approx(kappa)
    x_new = rng.uniform(size=(25, 1))
    keras_prediction = model.predict(features(x_new).astype("float32"), verbose=0)[:, 0]
    expected = kgd.predict(x_new, t=steps)
    np.testing.assert_allclose(keras_prediction, expected, rtol=2e-4, atol=2e-5)
    # and it is not just the converged least-squares fit: f_steps differs from f_(steps/2)
    assert np.max(np.abs(kgd.predict(x_new, t=steps // 2) - expected)) > 1e-2


def test_schedule_values_and_serialization():
    schedule = YaoStepSchedule(kappa=2.0, theta=0.5, scale=0.5)
    values = [float(keras.ops.convert_to_numpy(schedule(t))) for t in (0, 3)]
    np.testing.assert_allclose(values, [0.125, 0.0625], rtol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, YaoStepSchedule)
    assert restored.get_config() == schedule.get_config()
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    again = keras.optimizers.SGD.from_config(optimizer.get_config())
    assert isinstance(again._learning_rate, YaoStepSchedule)
    assert again._learning_rate.get_config() == schedule.get_config()


def test_schedule_in_a_saved_model(tmp_path):
    model = linear_model(1.5, 0.25, 3)
    model.fit(np.ones((4, 3), "float32"), np.ones(4, "float32"), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, custom_objects={"half_mse": half_mse})
    expected = model.optimizer._learning_rate.get_config()
    assert loaded.optimizer._learning_rate.get_config() == expected


@pytest.mark.parametrize("unit, r, expected", [("steps", 1.0, 3), ("epochs", 0.5, 4)])
def test_yao_stopping_time_reads_m_and_stops(rng, unit, r, expected):
    x, y = problem(rng, m=64)
    phi = features(x).astype("float32")
    stop = YaoStoppingTime(r=r, unit=unit)
    model = linear_model(1.0, 0.0, phi.shape[1])
    history = model.fit(phi, y.astype("float32"), batch_size=16, epochs=20, verbose=0,
                        callbacks=[stop])
    assert stop.m == 64
    assert stop.stopping_time == expected == math.ceil(round(64 ** (1 / (2 * r + 2)), 9))
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if unit == "steps":  # 64^(1/4) -> 3 steps: stops inside the first epoch
        assert iterations == 3 and stop.stopped_at == 3 and len(history.epoch) == 1
    else:  # 64^(1/3) -> 4 epochs of 4 steps
        assert len(history.epoch) == 4 and iterations == 16 and stop.stopped_at == 4


def test_yao_stopping_time_given_m_and_config(rng):
    stop = YaoStoppingTime(r=0.5, theta=0.5, m=1000, constant=0.5, verbose=1)
    assert YaoStoppingTime(**stop.get_config()).get_config() == stop.get_config()
    x, y = problem(rng, m=16)
    model = linear_model(1.0, 0.5, 11)
    model.fit(np.tile(features(x), (10, 1)).astype("float32"), np.tile(y, 10).astype("float32"),
              batch_size=16, epochs=50, verbose=0, callbacks=[stop])
    assert stop.stopping_time == math.ceil(0.5 * 1000 ** (1 / 1.5))  # 50 (given m, not 160)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 50


def test_yao_stopping_time_needs_m_for_generators(rng):
    def batches():
        while True:
            yield np.ones((4, 11), "float32"), np.ones((4,), "float32")

    model = linear_model(1.0, 0.0, 11)
    with pytest.raises(ValueError, match="YaoStoppingTime: m must be given"):
        model.fit(batches(), steps_per_epoch=2, epochs=2, verbose=0,
                  callbacks=[YaoStoppingTime(r=1.0)])


def test_discrepancy_stopping_matches_kernel_gd(rng):
    x, y = problem(rng)
    phi = features(x)
    kgd = KernelGradientDescent(FeatureMapKernel(features)).fit(x, y, max_iter=400)
    mse = kgd.training_mse()
    target_t = 10
    sigma = math.sqrt((mse[target_t] + mse[target_t - 1]) / 2)  # far from rounding ties
    assert kgd.select("discrepancy", sigma=sigma) == target_t
    stop = DiscrepancyStopping(sigma=sigma, tau=0.5)  # the loss is 0.5 * MSE
    kappa = kgd.kappa_
    model = linear_model(kappa, 0.0, phi.shape[1])
    model.fit(phi.astype("float32"), y.astype("float32"), batch_size=len(y), epochs=40,
              shuffle=False, verbose=0, callbacks=[stop])
    assert stop.stopped_epoch == target_t  # the loss of f_t is logged at the end of epoch t
    assert "discrepancy principle" in stop.stop_message
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == target_t + 1
    assert DiscrepancyStopping(**stop.get_config()).get_config() == stop.get_config()


def test_discrepancy_missing_monitor(rng):
    model = linear_model(1.0, 0.0, 11)
    with pytest.raises(ValueError, match="monitor must be a key of the epoch logs"):
        model.fit(np.ones((4, 11), "float32"), np.ones(4, "float32"), epochs=1, verbose=0,
                  callbacks=[DiscrepancyStopping(sigma=0.1, monitor="val_loss")])


@pytest.mark.parametrize("power", ["auto", 1.0, 0.0])
def test_smoothed_discrepancy_stopping_matches_kernel_gd(rng, power):
    x, y = problem(rng)
    phi = features(x)
    kgd = KernelGradientDescent(FeatureMapKernel(features)).fit(x, y, max_iter=400)
    probe = SmoothedDiscrepancyStopping(phi, y, sigma=1.0, power=power)
    if power == "auto":
        assert probe.power_ == pytest.approx(smoothing_power(kgd.eigenvalues_), rel=1e-6)
    values = kgd.smoothed_residuals(power=probe.power_)
    target_t = 10
    threshold = (values[target_t] + values[target_t - 1]) / 2  # far from rounding ties
    sigma = math.sqrt(threshold / probe.threshold)  # the threshold is sigma^2 * probe.threshold
    assert kgd.select("smoothed_discrepancy", sigma=sigma, power=probe.power_) == target_t
    stop = SmoothedDiscrepancyStopping(phi.astype("float32"), y, sigma=sigma, power=power)
    assert stop.threshold == pytest.approx(threshold, rel=1e-6)
    model = linear_model(kgd.kappa_, 0.0, phi.shape[1])
    model.fit(phi.astype("float32"), y.astype("float32"), batch_size=len(y), epochs=40,
              shuffle=False, verbose=0, callbacks=[stop])
    # the residuals of the weights at each epoch end: f_1, f_2, ...
    np.testing.assert_allclose(stop.residuals, values[1:target_t + 1], rtol=1e-4)
    assert stop.stopped_epoch == target_t - 1
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == target_t
    assert "smoothed discrepancy principle" in stop.stop_message
    config = stop.get_config()
    again = SmoothedDiscrepancyStopping.from_config(config)
    assert again.get_config() == config and again.power_ == stop.power_
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(stop))
    assert isinstance(restored, SmoothedDiscrepancyStopping)
    assert restored.threshold == stop.threshold


def test_smoothed_discrepancy_with_separate_features_and_multi_output(rng):
    x, y = problem(rng, m=30)
    phi = features(x)
    y2 = np.stack([y, 2 * y], axis=1)
    stop = SmoothedDiscrepancyStopping(x, y2, sigma=0.3, power=0.5, features=phi)
    kgd = KernelGradientDescent(FeatureMapKernel(features)).fit(x, y2, max_iter=5)
    predictions = kgd.predict(x, t=3)
    assert stop.smoothed_residual(predictions) == pytest.approx(
        float(kgd.smoothed_residuals(3, power=0.5)), rel=1e-9)
    assert stop.threshold == pytest.approx(
        0.09 * np.sum(np.maximum(kgd.eigenvalues_, 0) ** 0.5) / 30, rel=1e-9)
    with pytest.raises(ValueError, match=r"predictions on x must have the size of y \(30, 2\)"):
        stop.smoothed_residual(np.zeros(30))


def test_smoothed_discrepancy_prediction_shape_mismatch_at_fit(rng):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((4, 3), "float32")
    with pytest.raises(ValueError, match="predictions on x must have the size of y"):
        model.fit(x, np.ones((4, 2), "float32"), epochs=1, verbose=0,
                  callbacks=[SmoothedDiscrepancyStopping(x, np.ones(4), sigma=0.1)])


@pytest.mark.parametrize("call, match", [
    (lambda: SmoothedDiscrepancyStopping(np.ones((4, 2)), np.ones(4), sigma=0.0),
     r"SmoothedDiscrepancyStopping: sigma must be in \(0, inf\), got 0.0"),
    (lambda: SmoothedDiscrepancyStopping(np.ones((4, 2)), np.ones(4), 1.0, tau=0.0), "tau must be"),
    (lambda: SmoothedDiscrepancyStopping(np.ones((4, 2)), np.ones(4), 1.0, power=2.0),
     r"power must be in \[0, 1\], got 2.0"),
    (lambda: SmoothedDiscrepancyStopping(np.ones((4, 2)), np.ones(4), 1.0, power="kernel"),
     "power must be one of 'auto', got 'kernel'"),
    (lambda: SmoothedDiscrepancyStopping(np.ones((4, 2)), np.ones(5), 1.0),
     r"y must have shape \(m,\) or \(m, k\) with m = 4 rows like x, got \(5,\)"),
    (lambda: SmoothedDiscrepancyStopping(np.ones((4, 2, 2)), np.ones(4), 1.0),
     r"x must be a 2-D array with m = 4 rows .*got shape \(4, 2, 2\)"),
    (lambda: SmoothedDiscrepancyStopping(np.ones((4, 2)), np.ones(4), 1.0, features=np.ones((3, 2))),
     r"features must be a 2-D array with m = 4 rows"),
    (lambda: SmoothedDiscrepancyStopping(np.ones((4, 2)), np.array([1.0, np.nan, 0, 0]), 1.0),
     "must be finite"),
    (lambda: SmoothedDiscrepancyStopping(np.ones((4, 2)), np.ones(4), 1.0, batch_size=0),
     "batch_size must be"),
])
def test_smoothed_discrepancy_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: YaoStepSchedule(kappa=0.0), "YaoStepSchedule: kappa must be"),
    (lambda: YaoStepSchedule(kappa=1.0, theta=1.0), r"theta must be in \[0, 1\)"),
    (lambda: YaoStoppingTime(r=0.0), r"YaoStoppingTime: r must be in \(0, inf\), got 0.0"),
    (lambda: YaoStoppingTime(r=1.0, theta=-0.5), "theta must be"),
    (lambda: YaoStoppingTime(r=1.0, m=0), "m must be an integer >= 1, got 0"),
    (lambda: YaoStoppingTime(r=1.0, unit="batches"), "unit must be one of"),
    (lambda: DiscrepancyStopping(sigma=0.0), r"DiscrepancyStopping: sigma must be in \(0, inf\)"),
    (lambda: DiscrepancyStopping(sigma=1.0, tau=-1.0), "tau must be"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
