"""Every argument of every layer and callback survives ``from_config(get_config())``.

Property tests over the arguments (hypothesis draws them): the config of the clone equals the
original's, a seeded layer and its clone draw the same training outputs, and a model saved to a
``.keras`` file loads with the same config and the same inference outputs.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from keras_regkit import callbacks as C
from keras_regkit import layers as L
from keras_regkit import stopping as S
from keras_regkit.layers._twin import own_defaults

np_ = keras.ops.convert_to_numpy
RATES = st.one_of(st.sampled_from([0.0, 0.1, 0.35, 0.5, 1.0]), st.floats(0.0, 1.0, width=32))
SEEDS = st.integers(0, 2**31 - 1)
FORMATS = st.sampled_from(["channels_last", "channels_first"])
SCALINGS = st.sampled_from(["inverted", "test_time"])


def _noise_shape(shape):
    return st.one_of(st.none(), st.tuples(*[st.sampled_from([None, 1, d]) for d in shape]))


def _dense():
    return st.builds(lambda units, act, bias: keras.layers.Dense(units, activation=act, use_bias=bias),
                     st.integers(1, 4), st.sampled_from([None, "relu", "tanh"]), st.booleans())


def _batch_norm(draw):
    kwargs = draw(st.fixed_dictionaries({
        "axis": st.sampled_from([-1, 1]),
        "momentum": st.floats(0.0, 1.0),
        "epsilon": st.floats(1e-6, 1.0),
        "center": st.booleans(),
        "scale": st.booleans(),
        "beta_initializer": st.sampled_from(["zeros", "ones", "random_normal"]),
        "gamma_initializer": st.sampled_from(["ones", "glorot_uniform"]),
        "moving_mean_initializer": st.sampled_from(["zeros", "ones"]),
        "moving_variance_initializer": st.sampled_from(["ones", "random_uniform"]),
        "beta_regularizer": st.sampled_from([None, "l2", "l1"]),
        "gamma_regularizer": st.sampled_from([None, "l2"]),
        "beta_constraint": st.sampled_from([None, "non_neg"]),
        "gamma_constraint": st.sampled_from([None, "unit_norm"]),
        "renorm": st.booleans(),
        "renorm_momentum": st.floats(0.0, 1.0),
        "synchronized": st.booleans(),
        "virtual_batch_size": st.sampled_from([None, 1, 2, 4]),
        "unbiased_variance": st.booleans(),
        "fused": st.sampled_from([None, False]),
    }))
    if kwargs["renorm"]:
        kwargs["renorm_clipping"] = draw(st.sampled_from([None, {"rmax": 2.0}, {"rmax": 3.0, "rmin": 0.5, "dmax": 1.0}]))
    return kwargs


def _instance_norm(draw):
    kwargs = draw(st.fixed_dictionaries({
        "axis": st.sampled_from([-1, 1]),
        "epsilon": st.floats(1e-6, 1.0),
        "center": st.booleans(),
        "scale": st.booleans(),
        "beta_initializer": st.sampled_from(["zeros", "ones", "random_normal"]),
        "gamma_initializer": st.sampled_from(["ones", "glorot_uniform"]),
        "beta_regularizer": st.sampled_from([None, "l2", "l1"]),
        "gamma_regularizer": st.sampled_from([None, "l2"]),
        "beta_constraint": st.sampled_from([None, "non_neg"]),
        "gamma_constraint": st.sampled_from([None, "unit_norm"]),
    }))
    return L.InstanceNormalization, kwargs, (6, 3, 2, 2) if kwargs["axis"] == 1 else (6, 3, 2)


def _ws_conv(draw, rank):
    """WSConv1D/WSConv2D; tuples as Keras stores them (so the config compares as given)."""
    strides = draw(st.sampled_from([1, 2]))
    kwargs = draw(st.fixed_dictionaries({
        "filters": st.sampled_from([2, 4]),
        "kernel_size": st.integers(1, 3).map(lambda k: (k,) * rank),
        "padding": st.sampled_from(["valid", "same"] + (["causal"] if rank == 1 else [])),
        "data_format": FORMATS,
        "dilation_rate": st.sampled_from([1, 2] if strides == 1 else [1]).map(lambda d: (d,) * rank),
        "groups": st.sampled_from([1, 2]),
        "activation": st.sampled_from(["linear", "relu", "tanh"]),  # Keras stores None as "linear"
        "use_bias": st.booleans(),
        "kernel_initializer": st.sampled_from(["glorot_uniform", "he_normal"]),
        "bias_initializer": st.sampled_from(["zeros", "random_normal"]),
        "kernel_regularizer": st.sampled_from([None, "l2"]),
        "bias_regularizer": st.sampled_from([None, "l1"]),
        "activity_regularizer": st.sampled_from([None, "l2"]),
        "kernel_constraint": st.sampled_from([None, "max_norm"]),
        "bias_constraint": st.sampled_from([None, "non_neg"]),
        "standardization_epsilon": st.floats(1e-8, 1.0),
    }))
    kwargs["strides"] = (strides,) * rank
    spatial = (5,) * rank
    shape = (6, 4, *spatial) if kwargs["data_format"] == "channels_first" else (6, *spatial, 4)
    return (L.WSConv1D if rank == 1 else L.WSConv2D), kwargs, shape


@st.composite
def layer_cases(draw):
    """``(class, kwargs, input shape)`` for a layer of keras_regkit with drawn arguments."""
    kind = draw(st.sampled_from(["dropout", "spatial1d", "spatial2d", "spatial3d", "gaussian_dropout",
                                 "gaussian_noise", "alpha", "drop_path", "drop_block", "drop_connect",
                                 "weight_noise", "batch_norm", "instance_norm", "ws_conv1d", "ws_conv2d"]))
    seed = draw(SEEDS)
    if kind == "dropout":
        shape = (6, 3, 4)
        return L.Dropout, {"rate": draw(RATES), "noise_shape": draw(_noise_shape(shape)), "seed": seed,
                           "scaling": draw(SCALINGS)}, shape
    if kind.startswith("spatial"):
        rank = int(kind[-2])
        cls = {1: L.SpatialDropout1D, 2: L.SpatialDropout2D, 3: L.SpatialDropout3D}[rank]
        return cls, {"rate": draw(RATES), "seed": seed, "data_format": draw(FORMATS),
                     "scaling": draw(SCALINGS)}, (6,) + (3,) * rank + (2,)
    if kind == "gaussian_dropout":
        return L.GaussianDropout, {"rate": draw(RATES), "seed": seed}, (6, 5)
    if kind == "gaussian_noise":
        return L.GaussianNoise, {"stddev": draw(st.floats(0.0, 3.0)), "seed": seed}, (6, 5)
    if kind == "alpha":
        shape = (6, 5)
        return L.AlphaDropout, {"rate": draw(RATES), "noise_shape": draw(_noise_shape(shape)), "seed": seed}, shape
    if kind == "drop_path":
        return L.DropPath, {"rate": draw(RATES), "seed": seed}, (6, 5)
    if kind == "drop_block":
        data_format = draw(FORMATS)
        shape = (6, 2, 5, 5) if data_format == "channels_first" else (6, 5, 5, 2)
        return L.DropBlock2D, {"rate": draw(RATES), "block_size": draw(st.integers(1, 5)),
                               "data_format": data_format, "seed": seed}, shape
    if kind == "drop_connect":
        return L.DropConnect, {"layer": draw(_dense()), "rate": draw(RATES), "seed": seed}, (6, 5)
    if kind == "weight_noise":
        return L.WeightNoise, {"layer": draw(_dense()), "stddev": draw(st.floats(0.0, 1.0)), "seed": seed}, (6, 5)
    if kind == "instance_norm":
        return _instance_norm(draw)
    if kind.startswith("ws_conv"):
        return _ws_conv(draw, int(kind[-2]))
    kwargs = _batch_norm(draw)
    return L.BatchNormalization, kwargs, (6, 3, 2, 2) if kwargs["axis"] == 1 else (6, 3)


def _as_json(config):
    return json.loads(json.dumps(config))


def _fresh(cls, kwargs):
    """A new instance (wrapped Dense layers are re-created from their config)."""
    if "layer" in kwargs:
        kwargs = dict(kwargs, layer=keras.layers.Dense.from_config(kwargs["layer"].get_config()))
    return cls(**kwargs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=layer_cases())
def test_layer_configs_round_trip_with_the_same_behaviour(case):
    cls, kwargs, shape = case
    layer = _fresh(cls, kwargs)
    config = layer.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    # Every plain argument is in the config as given, or left out at its default.
    defaults = own_defaults(cls)
    for name, value in kwargs.items():
        if name == "layer" or name.endswith(("_initializer", "_regularizer", "_constraint")):
            continue  # objects, serialized: their round trip is the config equality above
        if name == "renorm_clipping" and value is None and kwargs.get("renorm"):
            value = {}  # as Keras stores it
        if name in config:
            assert _as_json(config[name]) == _as_json(value), name
        else:
            assert value == defaults[name], name
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    twin = _fresh(cls, kwargs)
    clone = cls.from_config(config)
    for layer in (twin, clone):
        if not layer.built:
            layer.build(shape)
    clone.set_weights(twin.get_weights())  # same draws of unseeded initializers
    np.testing.assert_allclose(np_(clone(x, training=True)), np_(twin(x, training=True)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np_(clone(x, training=False)), np_(twin(x, training=False)), rtol=1e-6, atol=1e-6)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(case=layer_cases())
def test_keras_files_keep_every_argument_and_the_outputs(case, tmp_path):
    cls, kwargs, shape = case
    inputs = keras.Input(shape[1:], batch_size=shape[0])
    model = keras.Model(inputs, _fresh(cls, kwargs)(inputs))
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    model(x, training=True)  # move running statistics off their initial values
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    os.remove(path)
    # Compared as stored in the file (JSON: tuples become lists).
    assert _as_json(loaded.layers[-1].get_config()) == _as_json(model.layers[-1].get_config())
    np.testing.assert_array_equal(np_(loaded(x, training=False)), np_(model(x, training=False)))


# ----------------------------------------------------------------------------- callbacks
RULES = st.sampled_from([None, "GL", "GL5", "PQ0.5", "UP", "UP2", ["GL3", "UP2"]])


@st.composite
def early_stopping_kwargs(draw):
    mode = draw(st.sampled_from(["auto", "min", "max"]))
    kwargs = {
        "monitor": draw(st.sampled_from(["val_loss", "loss", "val_accuracy"])),
        "min_delta": draw(st.floats(-1.0, 1.0)),
        "patience": draw(st.one_of(st.integers(0, 10), st.integers(0, 10).map(float))),
        "verbose": draw(st.sampled_from([0, 1, True, False])),
        "mode": mode,
        "baseline": draw(st.one_of(st.none(), st.floats(-5, 5))),
        "restore_best_weights": draw(st.booleans()),
        "start_from_epoch": draw(st.integers(0, 5)),
        "stopping_threshold": draw(st.one_of(st.none(), st.floats(-5, 5))),
        "divergence_threshold": draw(st.one_of(st.none(), st.floats(-5, 5))),
        "check_finite": draw(st.booleans()),
        "criterion": draw(RULES) if mode != "max" else None,
        "backup_path": draw(st.sampled_from([None, "ckpt/best.weights.h5"])),
        "strict": draw(st.booleans()),
    }
    return kwargs


def _public_state(callback) -> dict:
    return {k: v for k, v in vars(callback).items()
            if not k.startswith("_") and k not in ("rules", "model", "params")}


@settings(max_examples=80, deadline=None)
@given(kwargs=early_stopping_kwargs())
def test_early_stopping_config_round_trips(kwargs):
    try:
        callback = C.EarlyStopping(**kwargs)
    except ValueError:  # thresholds that contradict the mode or each other
        assume(False)
    config = callback.get_config()
    for restored in (C.EarlyStopping.from_config(config),
                     keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))):
        assert restored.get_config() == config
        assert _public_state(restored) == _public_state(callback)
        assert [repr(r) for r in restored.rules] == [repr(r) for r in callback.rules]


@settings(max_examples=40, deadline=None)
@given(
    kwargs=st.fixed_dictionaries({
        "start_rate": st.floats(0.0, 1.0),
        "end_rate": st.one_of(st.none(), st.floats(0.0, 1.0)),
        "ramp_epochs": st.integers(1, 50),
        "layers": st.one_of(st.none(), st.lists(st.text("abc_", min_size=1, max_size=5), max_size=3)),
        "verbose": st.sampled_from([0, 1]),
    })
)
def test_dropout_schedule_config_round_trips(kwargs):
    schedule = C.DropoutSchedule(**kwargs)
    restored = C.DropoutSchedule.from_config(schedule.get_config())
    assert restored.get_config() == schedule.get_config()
    assert [restored.rate_at(e, 0.4) for e in range(0, 60, 7)] == [schedule.rate_at(e, 0.4) for e in range(0, 60, 7)]


POSITIVE = st.floats(1e-3, 1e3)


@settings(max_examples=40, deadline=None)
@given(
    yao=st.fixed_dictionaries({"r": POSITIVE, "theta": st.floats(0.0, 0.99), "m": st.one_of(st.none(), st.integers(1, 10**6)),
                               "unit": st.sampled_from(["steps", "epochs"]), "exponent_offset": POSITIVE,
                               "constant": POSITIVE, "verbose": st.sampled_from([0, 1])}),
    discrepancy=st.fixed_dictionaries({"sigma": POSITIVE, "monitor": st.sampled_from(["loss", "mse"]),
                                       "tau": POSITIVE, "verbose": st.sampled_from([0, 1])}),
    schedule=st.fixed_dictionaries({"kappa": POSITIVE, "theta": st.floats(0.0, 0.99), "scale": POSITIVE}),
    rule=st.sampled_from([S.Patience(3), S.GeneralizationLoss(4.5), S.ProgressQuotient(0.7, strip=4),
                          S.UpStrips(2, strip=3), S.StoppingThreshold(0.1), S.DivergenceThreshold(9.0)]),
)
def test_theory_callbacks_schedules_and_rules_round_trip(yao, discrepancy, schedule, rule):
    for obj in (C.YaoStoppingTime(**yao), C.DiscrepancyStopping(**discrepancy), C.YaoStepSchedule(**schedule), rule):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
        assert type(restored) is type(obj) and restored.get_config() == obj.get_config()
    lr = C.YaoStepSchedule(**schedule)
    restored = C.YaoStepSchedule.from_config(lr.get_config())
    np.testing.assert_allclose(np_(restored(7)), np_(lr(7)), rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    kwargs=st.fixed_dictionaries({"sigma": POSITIVE, "power": st.one_of(st.just("auto"), st.floats(0.0, 1.0)),
                                  "tau": POSITIVE, "batch_size": st.one_of(st.none(), st.integers(1, 64)),
                                  "verbose": st.sampled_from([0, 1])}),
    m=st.integers(4, 12),
    separate_features=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_smoothed_discrepancy_stopping_round_trips(kwargs, m, separate_features, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(m, 3)), rng.normal(size=m)
    features = rng.normal(size=(m, 5)) if separate_features else None
    stop = C.SmoothedDiscrepancyStopping(x, y, features=features, **kwargs)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(stop))
    assert type(restored) is C.SmoothedDiscrepancyStopping
    assert restored.get_config() == stop.get_config()
    assert (restored.power_, restored.threshold) == (stop.power_, stop.threshold)
    prediction = rng.normal(size=m)
    assert restored.smoothed_residual(prediction) == stop.smoothed_residual(prediction)


@settings(max_examples=40, deadline=None)
@given(
    swa=st.fixed_dictionaries({
        "start_epoch": st.one_of(st.integers(0, 100), st.floats(0.01, 0.99)),
        "learning_rate": st.one_of(st.none(), POSITIVE),
        "bn_steps": st.one_of(st.none(), st.integers(1, 50)),
        "verbose": st.sampled_from([0, 1]),
    }),
    annealing=st.integers(0, 10),
    ema=st.fixed_dictionaries({
        "decay": st.floats(0.0, 0.99999),
        "warmup": st.booleans(),
        "bn_steps": st.one_of(st.none(), st.integers(1, 50)),
        "verbose": st.sampled_from([0, 1]),
    }),
)
def test_weight_averaging_callbacks_round_trip(swa, annealing, ema):
    if swa["learning_rate"] is not None:
        swa["annealing_epochs"] = annealing
    for obj in (C.StochasticWeightAveraging(**swa), C.ExponentialMovingAverage(**ema)):
        for restored in (type(obj).from_config(obj.get_config()),
                         keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))):
            assert type(restored) is type(obj) and restored.get_config() == obj.get_config()
    schedule = C.StochasticWeightAveraging(**swa)
    if swa["learning_rate"] is not None:
        schedule.start = 3
        restored = C.StochasticWeightAveraging.from_config(schedule.get_config())
        restored.start = 3
        assert [restored.learning_rate_at(e, 0.5) for e in range(3, 20)] == \
            [schedule.learning_rate_at(e, 0.5) for e in range(3, 20)]
