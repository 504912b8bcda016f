"""exclude_from_weight_decay and l2_penalty_to_weight_decay, on the current Keras backend.

The suite runs on TensorFlow; run it with ``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=torch`` too.
A zero loss (``0 * mean(output)``) gives exactly zero gradients, so in those tests only the
decoupled weight decay moves a weight: a decayed one is multiplied by ``1 - lr * wd`` per step,
an excluded one stays bit for bit.
"""

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import layers as L
from keras_regkit.weight_decay import normalization_layer_types

LR, WD, STEPS = 0.1, 0.4, 3
DECAYS = {"kernel"}  # variable names, the test's own classification (the code uses identity)
KEPT = {"bias", "gamma", "beta", "scale"}


def _zero_loss(y_true, y_pred):
    return 0.0 * keras.ops.mean(y_pred)


def _model():
    """Embeddings, kernels, biases (nested ones too) and every normalization layer, none 0."""
    tokens = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(20, 8, name="embed")(tokens)
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h)  # biases in inner EinsumDense
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.Conv1D(8, 3, padding="same", name="conv")(h)
    h = keras.layers.GroupNormalization(groups=2, name="gn")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = L.BatchNormalization(name="regkit_bn")(h)
    h = L.InstanceNormalization(name="inorm")(h)
    if hasattr(keras.layers, "RMSNormalization"):
        h = keras.layers.RMSNormalization(name="rms")(h)
    block = keras.Sequential(
        [keras.layers.Dense(8, name="inner_dense"), keras.layers.LayerNormalization(name="inner_ln")],
        name="block",
    )
    h = keras.layers.GlobalAveragePooling1D()(block(h))
    model = keras.Model(tokens, keras.layers.Dense(1, name="head")(h))
    rng = np.random.default_rng(1)
    for variable in model.trainable_variables:  # no zeros: a decayed weight always moves
        variable.assign(rng.uniform(0.5, 1.5, size=variable.shape).astype("float32"))
    return model


def _tokens(n=8):
    return np.random.default_rng(0).integers(0, 20, size=(n, 6)).astype("int32"), np.zeros((n, 1), "float32")


def _values(model):
    return {id(v): np.array(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables}


def _zero_loss_steps(model, optimizer, jit_compile=False, steps=STEPS):
    """Compiles with the zero loss, runs ``steps`` steps; (variable, before, after) triples."""
    model.compile(optimizer, _zero_loss, jit_compile=jit_compile)
    before = _values(model)
    x, y = _tokens()
    for _ in range(steps):
        model.train_on_batch(x, y)
    after = _values(model)
    return [(v, before[id(v)], after[id(v)]) for v in model.trainable_variables]


def _check_decay(triples, decays, steps=STEPS):
    """Every variable whose name is in ``decays`` shrank by (1 - lr*wd)^steps; the rest kept."""
    factor = (1.0 - LR * WD) ** steps
    for variable, before, after in triples:
        if variable.name in decays:
            np.testing.assert_allclose(after, before * factor, rtol=1e-5, atol=1e-7, err_msg=variable.path)
            assert not np.allclose(after, before), variable.path  # a non-zero weight moved
        else:
            np.testing.assert_array_equal(after, before, err_msg=variable.path)


OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(LR, weight_decay=WD),
    "adamw": lambda: keras.optimizers.AdamW(LR, weight_decay=WD),
}


# ------------------------------------------------------------- exclude_from_weight_decay


def test_the_model_has_every_kind_of_variable():
    names = {v.name for v in _model().trainable_variables}
    expected = DECAYS | KEPT | {"embeddings"}
    if not hasattr(keras.layers, "RMSNormalization"):
        expected -= {"scale"}
    assert names == expected


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_zero_gradients_decay_kernels_only(name, jit_compile):
    model, optimizer = _model(), OPTIMIZERS[name]()
    excluded = keras_regkit.exclude_from_weight_decay(optimizer, model)
    assert {v.name for v in excluded} <= KEPT
    assert {id(v) for v in excluded} == {id(v) for v in model.trainable_variables if v.name in KEPT}
    _check_decay(_zero_loss_steps(model, optimizer, jit_compile), DECAYS | {"embeddings"})


def test_without_exclusions_keras_decays_everything():
    """The baseline the function fixes (and proof that the zero loss leaves the decay on)."""
    _check_decay(_zero_loss_steps(_model(), OPTIMIZERS["sgd"]()), DECAYS | KEPT | {"embeddings"})


def test_embeddings_are_excluded_only_when_asked():
    model, optimizer = _model(), OPTIMIZERS["adamw"]()
    excluded = keras_regkit.exclude_from_weight_decay(optimizer, model, embeddings=True)
    assert "embeddings" in {v.name for v in excluded}
    _check_decay(_zero_loss_steps(model, optimizer), DECAYS)


@pytest.mark.parametrize(
    "flags, decays",
    [
        ({"biases": False}, DECAYS | {"bias", "embeddings"}),
        ({"normalization": False}, DECAYS | {"gamma", "beta", "scale", "embeddings"}),
        ({"biases": False, "normalization": False, "embeddings": True}, DECAYS | KEPT),
    ],
    ids=["no-biases", "no-normalization", "embeddings-only"],
)
def test_flags_choose_what_is_excluded(flags, decays):
    model, optimizer = _model(), OPTIMIZERS["sgd"]()
    excluded = keras_regkit.exclude_from_weight_decay(optimizer, model, **flags)
    assert excluded and {v.name for v in excluded}.isdisjoint(decays)
    _check_decay(_zero_loss_steps(model, optimizer, steps=1), decays, steps=1)


def test_normalization_layers_are_found_by_class_not_name():
    types = normalization_layer_types()
    for cls in (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                keras.layers.GroupNormalization, L.BatchNormalization, L.InstanceNormalization):
        assert cls in types
    assert keras.layers.SpectralNormalization not in types and keras.layers.UnitNormalization not in types
    # A wrapper named like a normalization layer keeps its kernel decaying.
    model = keras.Sequential([keras.Input((4,)), keras.layers.SpectralNormalization(keras.layers.Dense(3))])
    excluded = keras_regkit.exclude_from_weight_decay(OPTIMIZERS["sgd"](), model)
    assert {v.name for v in excluded} == {"bias"}


def test_user_exclusions_are_kept():
    model, optimizer = _model(), OPTIMIZERS["sgd"]()
    head = model.get_layer("head")
    optimizer.exclude_from_weight_decay(var_list=[head.kernel], var_names=["embeddings"])
    keras_regkit.exclude_from_weight_decay(optimizer, model)
    triples = _zero_loss_steps(model, optimizer)
    kept = [(v, b, a) for v, b, a in triples if v is head.kernel or v.name == "embeddings"]
    assert len(kept) == 2
    for variable, before, after in kept:
        np.testing.assert_array_equal(after, before, err_msg=variable.path)
    _check_decay([t for t in triples if t[0] is not head.kernel], DECAYS)


def test_calling_twice_keeps_both_selections():
    model, optimizer = _model(), OPTIMIZERS["sgd"]()
    keras_regkit.exclude_from_weight_decay(optimizer, model, biases=False, normalization=False, embeddings=True)
    keras_regkit.exclude_from_weight_decay(optimizer, model)
    _check_decay(_zero_loss_steps(model, optimizer, steps=1), DECAYS, steps=1)


def test_frozen_layers_are_not_listed():
    model = _model()
    model.get_layer("block").trainable = False
    excluded = keras_regkit.exclude_from_weight_decay(OPTIMIZERS["sgd"](), model)
    paths = [v.path for v in excluded]
    assert not any("inner" in path for path in paths) and len(paths) == len(set(paths))


def test_loss_scale_optimizer_is_looked_through():
    model, inner = _model(), OPTIMIZERS["sgd"]()
    optimizer = keras.optimizers.LossScaleOptimizer(inner)
    keras_regkit.exclude_from_weight_decay(optimizer, model)
    _check_decay(_zero_loss_steps(model, optimizer, steps=1), DECAYS | {"embeddings"}, steps=1)


def test_subclassed_model_and_a_bare_layer():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)
            self.norm = keras.layers.LayerNormalization()
            self.offset = self.add_weight(shape=(3,), name="bias", initializer="zeros")  # its own

        def call(self, x):
            return self.norm(self.dense(x)) + self.offset

    net = Net()
    with pytest.raises(ValueError, match="exclude_from_weight_decay: model must be built"):
        keras_regkit.exclude_from_weight_decay(OPTIMIZERS["sgd"](), net)
    net(np.zeros((1, 4), "float32"))
    excluded = keras_regkit.exclude_from_weight_decay(OPTIMIZERS["sgd"](), net)
    assert {id(v) for v in excluded} == {id(net.dense.bias), id(net.norm.gamma), id(net.norm.beta)}
    # ``offset`` is not a layer's ``bias`` attribute: exclusion is by identity, not by name.
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    assert keras_regkit.exclude_from_weight_decay(OPTIMIZERS["sgd"](), layer) == [layer.bias]


class _FakeOptimizer:
    weight_decay = 0.1
    built = False

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        pass


@pytest.mark.parametrize(
    "make",
    [lambda: "adamw", lambda: None, _FakeOptimizer, lambda: keras.optimizers.Adam(0.1),
     lambda: keras.optimizers.SGD(0.1)],
    ids=["string", "none", "duck-typed", "adam-without-decay", "sgd-without-decay"],
)
def test_an_optimizer_without_weight_decay_is_refused(make):
    with pytest.raises(ValueError, match="exclude_from_weight_decay: optimizer must be a Keras optimizer"):
        keras_regkit.exclude_from_weight_decay(make(), _model())


def test_a_built_optimizer_is_refused():
    """Keras reads the exclusions when it traces the step: later ones would be ignored."""
    model, optimizer = _model(), OPTIMIZERS["adamw"]()
    _zero_loss_steps(model, optimizer, steps=1)
    with pytest.raises(ValueError, match="optimizer must not be built yet.*got built AdamW"):
        keras_regkit.exclude_from_weight_decay(optimizer, model)
    fresh = OPTIMIZERS["sgd"]()
    fresh.build(model.trainable_variables)
    with pytest.raises(ValueError, match="must not be built"):
        keras_regkit.exclude_from_weight_decay(fresh, model)


@pytest.mark.parametrize("flag", ["biases", "normalization", "embeddings"])
@pytest.mark.parametrize("value", [1, "yes", None])
def test_flags_must_be_bools(flag, value):
    with pytest.raises(TypeError, match=f"exclude_from_weight_decay: {flag} must be a bool, got"):
        keras_regkit.exclude_from_weight_decay(OPTIMIZERS["sgd"](), _model(), **{flag: value})


def test_model_must_be_a_keras_layer():
    with pytest.raises(TypeError, match="exclude_from_weight_decay: model must be a Keras model or layer"):
        keras_regkit.exclude_from_weight_decay(OPTIMIZERS["sgd"](), [np.zeros(3)])


# ------------------------------------------------------------- l2_penalty_to_weight_decay


def test_l2_penalty_to_weight_decay_is_twice_l2_whatever_the_learning_rate():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.3, decay_steps=1, decay_rate=0.5)
    for lr in (1e-4, 0.1, 3.0, schedule):
        assert keras_regkit.l2_penalty_to_weight_decay(0.025, lr) == 0.05
    assert keras_regkit.l2_penalty_to_weight_decay(0, 0.1) == 0.0


@pytest.mark.parametrize(
    "l2, lr, error, message",
    [
        (-0.1, 0.1, ValueError, r"l2 must be in \[0, inf\), got -0.1"),
        (float("nan"), 0.1, ValueError, "l2 must be in"),
        (float("inf"), 0.1, ValueError, "l2 must be in"),
        (1.7e308, 0.1, ValueError, "l2 must be at most"),
        ("0.1", 0.1, TypeError, "l2 must be a real number"),
        (True, 0.1, TypeError, "l2 must be a real number"),
        (0.1, 0.0, ValueError, r"learning_rate must be in \(0, inf\), got 0.0"),
        (0.1, -1, ValueError, "learning_rate must be in"),
        (0.1, float("inf"), ValueError, "learning_rate must be in"),
        (0.1, float("nan"), ValueError, "learning_rate must be in"),
        (0.1, "fast", TypeError, "learning_rate must be a real number or a keras.optimizers.schedules"),
        (0.1, None, TypeError, "learning_rate must be a real number"),
    ],
)
def test_l2_penalty_to_weight_decay_checks_its_arguments(l2, lr, error, message):
    with pytest.raises(error, match="l2_penalty_to_weight_decay: " + message):
        keras_regkit.l2_penalty_to_weight_decay(l2, lr)


L2 = 0.05


def _regression_pair(l2_penalty):
    """The same two-layer regression model with and without ``L2(l2_penalty)`` on the kernels."""

    def make(regularizer):
        return keras.Sequential([
            keras.Input((5,)),
            keras.layers.Dense(4, activation="tanh", kernel_regularizer=regularizer),
            keras.layers.Dense(1, kernel_regularizer=regularizer),
        ])

    penalized, plain = make(keras.regularizers.L2(l2_penalty)), make(None)
    plain.set_weights(penalized.get_weights())
    return penalized, plain


def _train(model, optimizer, jit_compile=False, steps=STEPS):
    model.compile(optimizer, "mse", jit_compile=jit_compile)
    rng = np.random.default_rng(3)
    for _ in range(steps):
        model.train_on_batch(rng.normal(size=(16, 5)).astype("float32"), rng.normal(size=(16, 1)).astype("float32"))
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def _learning_rate(kind):
    if kind == "constant":
        return 0.1
    return keras.optimizers.schedules.ExponentialDecay(0.3, decay_steps=1, decay_rate=0.5)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("kind", ["constant", "schedule"])
def test_sgd_l2_penalty_equals_decoupled_decay(kind, jit_compile):
    """Loshchilov & Hutter, Proposition 1, in Keras's convention (weight_decay = 2 * l2)."""
    penalized, decayed = _regression_pair(L2)
    _, untouched = _regression_pair(L2)
    untouched.set_weights(penalized.get_weights())
    with_penalty = _train(penalized, keras.optimizers.SGD(_learning_rate(kind)), jit_compile)
    optimizer = keras.optimizers.SGD(
        _learning_rate(kind), weight_decay=keras_regkit.l2_penalty_to_weight_decay(L2, _learning_rate(kind))
    )
    keras_regkit.exclude_from_weight_decay(optimizer, decayed)  # L2 sits on the kernels only
    with_decay = _train(decayed, optimizer, jit_compile)
    neither = _train(untouched, keras.optimizers.SGD(_learning_rate(kind)), jit_compile)
    for a, b in zip(with_penalty, with_decay):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # ...and the regularization did something: the test could tell the two apart.
    assert max(np.abs(a - c).max() for a, c in zip(with_penalty, neither)) > 1e-3


def test_adam_l2_penalty_differs_from_decoupled_decay():
    """With Adam the penalty's gradient is rescaled per weight; AdamW's decay is not."""
    l2 = 0.5
    penalized, decayed = _regression_pair(l2)
    with_penalty = _train(penalized, keras.optimizers.Adam(0.01))
    optimizer = keras.optimizers.Adam(0.01, weight_decay=keras_regkit.l2_penalty_to_weight_decay(l2, 0.01))
    keras_regkit.exclude_from_weight_decay(optimizer, decayed)
    with_decay = _train(decayed, optimizer)
    assert max(np.abs(a - b).max() for a, b in zip(with_penalty, with_decay)) > 1e-3
