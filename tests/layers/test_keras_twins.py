"""The drop-in contract, against Keras's own layers, on whichever backend the suite runs.

For the same arguments a twin has Keras's weights (names, order, shapes), parameter count,
config, seed generators and public attributes, so ``set_weights`` lists, ``.weights.h5``
files, the weights inside ``.keras`` files and configs move between a Keras model and the
same model built with keras_regkit layers, in both directions, with identical outputs.
"""

import os

import keras
import numpy as np
import pytest

from keras_regkit import layers as L
from keras_regkit.layers._twin import keras_arguments

KERAS_HAS_RENORM = "renorm" in keras_arguments(keras.layers.BatchNormalization)

# (name, keras class, our class, arguments, input shape)
TWINS = [
    ("dropout", keras.layers.Dropout, L.Dropout, {"rate": 0.35, "seed": 1}, (2, 3, 4)),
    ("dropout-noise-shape", keras.layers.Dropout, L.Dropout,
     {"rate": 0.5, "noise_shape": [None, 1, 4]}, (2, 3, 4)),
    ("dropout-zero", keras.layers.Dropout, L.Dropout, {"rate": 0}, (2, 3)),
    ("spatial1d", keras.layers.SpatialDropout1D, L.SpatialDropout1D, {"rate": 0.35, "seed": 2}, (2, 5, 3)),
    ("spatial2d", keras.layers.SpatialDropout2D, L.SpatialDropout2D, {"rate": 0.2}, (2, 4, 4, 3)),
    ("spatial2d-cf", keras.layers.SpatialDropout2D, L.SpatialDropout2D,
     {"rate": 0.2, "data_format": "channels_first"}, (2, 3, 4, 4)),
    ("spatial3d", keras.layers.SpatialDropout3D, L.SpatialDropout3D, {"rate": 0.2, "seed": 3}, (2, 3, 3, 3, 2)),
    ("gaussian-dropout", keras.layers.GaussianDropout, L.GaussianDropout, {"rate": 0.35, "seed": 4}, (2, 3)),
    ("gaussian-dropout-zero", keras.layers.GaussianDropout, L.GaussianDropout, {"rate": 0.0}, (2, 3)),
    ("gaussian-noise", keras.layers.GaussianNoise, L.GaussianNoise, {"stddev": 0.35}, (2, 3)),
    ("alpha-dropout", keras.layers.AlphaDropout, L.AlphaDropout, {"rate": 0.1, "noise_shape": [2, 1]}, (2, 3)),
    ("batch-norm", keras.layers.BatchNormalization, L.BatchNormalization, {}, (4, 3)),
    ("batch-norm-nchw", keras.layers.BatchNormalization, L.BatchNormalization,
     {"axis": 1, "momentum": 0.9, "epsilon": 1e-5, "center": False}, (4, 3, 2, 2)),
    ("batch-norm-regularized", keras.layers.BatchNormalization, L.BatchNormalization,
     {"gamma_regularizer": "l2", "beta_constraint": "non_neg", "moving_variance_initializer": "zeros"}, (4, 3)),
]
if KERAS_HAS_RENORM:
    TWINS.append(("batch-norm-renorm", keras.layers.BatchNormalization, L.BatchNormalization,
                  {"renorm": True, "renorm_clipping": {"rmax": 2.0, "rmin": 0.5, "dmax": 1.0}}, (4, 3)))
IDS = [t[0] for t in TWINS]


def np_(x):
    return keras.ops.convert_to_numpy(x)


def _normalized(config):
    """A config without the auto-generated name, with the dtype policy as its name and
    sequences as lists (Keras before 3.13 keeps a noise_shape list as given; later, a tuple;
    both are lists once in a .keras file)."""
    config = dict(config)
    config.pop("name", None)
    if "dtype" in config:
        config["dtype"] = keras.dtype_policies.get(config["dtype"]).name
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _plain(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, tuple, list))


def _seed_generators(layer):
    return [sg for sub in [layer] for sg in sub._seed_generators]


@pytest.mark.parametrize("_, keras_cls, our_cls, kwargs, shape", TWINS, ids=IDS)
def test_same_weights_parameters_config_state_and_attributes(_, keras_cls, our_cls, kwargs, shape):
    theirs, ours = keras_cls(**kwargs), our_cls(**kwargs)
    assert ours.built == theirs.built  # weightless layers are built at construction
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    theirs(x), ours(x)
    assert [(w.name, tuple(w.shape), w.trainable) for w in ours.weights] == [
        (w.name, tuple(w.shape), w.trainable) for w in theirs.weights
    ]
    assert ours.count_params() == theirs.count_params()
    assert len(ours.non_trainable_weights) == len(theirs.non_trainable_weights)
    assert len(_seed_generators(ours)) == len(_seed_generators(theirs))
    assert _normalized(ours.get_config()) == _normalized(theirs.get_config())
    assert type(ours.get_config().get("rate")) is type(theirs.get_config().get("rate"))
    for name, value in vars(theirs).items():
        if name.startswith("_") or not _plain(value) or name == "name":
            continue
        mine = getattr(ours, name)
        assert (list(mine) if isinstance(mine, tuple) else mine) == (
            list(value) if isinstance(value, tuple) else value), name


@pytest.mark.parametrize("_, keras_cls, our_cls, kwargs, shape", TWINS, ids=IDS)
def test_configs_build_the_other_class(_, keras_cls, our_cls, kwargs, shape):
    theirs, ours = keras_cls(**kwargs), our_cls(**kwargs)
    assert _normalized(our_cls.from_config(theirs.get_config()).get_config()) == _normalized(ours.get_config())
    assert _normalized(keras_cls.from_config(ours.get_config()).get_config()) == _normalized(theirs.get_config())


def _model(layer_cls, kwargs, shape):
    inputs = keras.Input(shape[1:])
    h = keras.layers.Dense(shape[-1], name="before")(inputs)
    h = layer_cls(name="twin", **kwargs)(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="after")(h))


def _perturbed(model, rng):
    """Random values in every weight, so a file that does not load is noticed."""
    model.set_weights([rng.uniform(0.5, 1.5, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.mark.parametrize("_, keras_cls, our_cls, kwargs, shape", TWINS, ids=IDS)
def test_weights_move_both_ways(_, keras_cls, our_cls, kwargs, shape, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype("float32")
    for source_cls, target_cls in ((keras_cls, our_cls), (our_cls, keras_cls)):
        source = _perturbed(_model(source_cls, kwargs, shape), rng)
        expected = np_(source(x, training=False))
        # set_weights lists
        target = _model(target_cls, kwargs, shape)
        target.set_weights(source.get_weights())
        np.testing.assert_allclose(np_(target(x, training=False)), expected, rtol=1e-6, atol=1e-6)
        # .weights.h5 files and the weights inside a .keras file
        for name in ("w.weights.h5", "m.keras"):
            path = os.path.join(tmp_path, name)
            source.save_weights(path) if name.endswith(".weights.h5") else source.save(path)
            target = _model(target_cls, kwargs, shape)
            target.load_weights(path)
            np.testing.assert_allclose(np_(target(x, training=False)), expected, rtol=1e-6, atol=1e-6)
            os.remove(path)


def test_test_time_scaling_survives_a_keras_file(tmp_path):
    """The issue's example: SpatialDropout2D(0.5, scaling="test_time") must predict 0.5x after
    a .keras round trip (the scaling used to be lost from the config)."""
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, L.SpatialDropout2D(0.5, scaling="test_time")(inputs))
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    x = np.ones((2, 4, 4, 3), "float32")
    np.testing.assert_allclose(np_(keras.models.load_model(path)(x, training=False)), 0.5 * x)


def test_spatial_dropout_keeps_the_mixed_precision_policy_keras_loses():
    """Keras's SpatialDropout* config holds the variable dtype ('float32') instead of the policy;
    ours keeps the policy, so a mixed_float16 layer still computes in float16 after from_config."""
    config = L.SpatialDropout2D(0.5, dtype="mixed_float16").get_config()
    assert keras.dtype_policies.get(config["dtype"]).name == "mixed_float16"
    clone = L.SpatialDropout2D.from_config(config)
    out = clone(np.ones((1, 2, 2, 3), "float16"), training=True)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
