"""One test per private Keras/TensorFlow/CPython reliance in keras_regkit._compat.

Each test fails if a Keras or TensorFlow release changes the behaviour the package relies on,
on whichever backend and Keras version the suite runs with.
"""

import keras
import numpy as np
import pytest

from keras_regkit import _compat
from tests.conftest import requires_backend


class _Holder(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(2, name="inner")

    def call(self, x):
        return self.inner(x)


def _nested_model():
    block = keras.Sequential([keras.layers.Dense(3, name="a"), keras.layers.Dense(3, name="b")], name="block")
    inputs = keras.Input((4,))
    return keras.Model(inputs, _Holder(name="holder")(block(inputs)), name="outer")


def test_flatten_layers_finds_every_nested_layer_once_and_not_the_model():
    layers = _compat.flatten_layers(_nested_model())
    named = {layer.name for layer in layers if not isinstance(layer, keras.layers.InputLayer)}
    assert named == {"block", "a", "b", "holder", "inner"}  # nested ones too, not the model
    assert len(layers) == len({id(layer) for layer in layers})


def test_build_at_init_builds_weightless_layers_unless_build_is_overridden():
    class Weightless(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            _compat.build_at_init(self)

    class WithBuild(Weightless):
        def build(self, input_shape):
            pass

    assert Weightless().built
    assert not WithBuild().built


def test_overriding_call_shadows_the_method_and_is_undone():
    layer = keras.layers.Dense(2, kernel_initializer="ones")
    x = np.ones((1, 3), "float32")
    plain = keras.ops.convert_to_numpy(layer(x))
    assert not _compat.call_overridden(layer)
    with _compat.overriding_call(layer, lambda inputs, **kwargs: inputs[:, :2] * 0 + 7.0):
        assert _compat.call_overridden(layer)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), 7.0)
        with pytest.raises(RuntimeError, match="already has its call overridden"):
            with _compat.overriding_call(layer, lambda inputs: inputs):
                pass
    assert not _compat.call_overridden(layer)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), plain)


def test_auto_name_counts_per_prefix():
    first, second = _compat.auto_name("SeedGenerator"), _compat.auto_name("SeedGenerator")
    assert first.startswith("seed_generator") and second.startswith("seed_generator") and first != second


def test_print_msg_prints(capsys):
    _compat.print_msg("hello from keras_regkit")
    assert "hello from keras_regkit" in capsys.readouterr().out


def test_metric_direction_reads_compiled_metrics():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert _compat.metric_direction(model, "accuracy") is None  # not compiled
    model.compile("sgd", "mse", metrics=["accuracy", "mae"])
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=1, verbose=0)  # builds the metrics
    assert _compat.metric_direction(model, "accuracy") == "max"
    assert _compat.metric_direction(model, "mae") == "min"
    assert _compat.metric_direction(model, "unknown") is None


def _decay_step(optimizer, variables):
    """One zero-gradient step (only the decoupled weight decay moves anything); the values."""
    optimizer.apply([keras.ops.zeros((2,)) for _ in variables], variables)
    return [float(keras.ops.convert_to_numpy(v)[0]) for v in variables]


def test_has_weight_decay_exclusions_for_keras_optimizers_only():
    assert _compat.has_weight_decay_exclusions(keras.optimizers.SGD(weight_decay=0.1))
    assert _compat.has_weight_decay_exclusions(keras.optimizers.AdamW())
    assert not _compat.has_weight_decay_exclusions(object())


def test_add_weight_decay_exclusions_keeps_earlier_ones_and_the_step_reads_them():
    names = ("a", "b", "c", "skipme_d")
    variables = [keras.Variable(np.ones(2, "float32"), name=name) for name in names]
    a, b, _, _ = variables
    optimizer = keras.optimizers.SGD(0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_list=[a], var_names=["skipme"])  # the user's own
    _compat.add_weight_decay_exclusions(optimizer, [b])
    _compat.add_weight_decay_exclusions(optimizer, [])  # adds nothing, drops nothing
    np.testing.assert_allclose(_decay_step(optimizer, variables), [1.0, 1.0, 0.95, 1.0], rtol=1e-6)


def test_add_weight_decay_exclusions_before_any_keras_call():
    variables = [keras.Variable(np.ones(2, "float32"), name=name) for name in ("a", "b")]
    optimizer = keras.optimizers.SGD(0.1, weight_decay=0.5)
    _compat.add_weight_decay_exclusions(optimizer, variables[:1])
    np.testing.assert_allclose(_decay_step(optimizer, variables), [1.0, 0.95], rtol=1e-6)


def test_draw_seed_from_int_and_generator():
    seed = keras.ops.convert_to_numpy(_compat.draw_seed(5))
    assert seed.shape == (2,) and int(seed[0]) == 5
    generator = keras.random.SeedGenerator(3)
    first, second = (keras.ops.convert_to_numpy(_compat.draw_seed(generator)) for _ in range(2))
    assert not np.array_equal(first, second)


@requires_backend("jax")
def test_jax_draw_seed_gives_a_key():
    import jax

    key = _compat.jax_draw_seed(keras.random.SeedGenerator(1))
    assert jax.random.bits(key, (3,)).shape == (3,)


@requires_backend("tensorflow")
def test_tf_in_xla_context():
    import tensorflow as tf

    assert not _compat.tf_in_xla_context()
    assert not tf.function(_compat.tf_in_xla_context)()
    assert tf.function(lambda: tf.constant(_compat.tf_in_xla_context()), jit_compile=True)().numpy()


class _Probe(keras.callbacks.Callback):
    """Reads what the frame-walking helpers find during a real fit."""

    def on_train_begin(self, logs=None):
        self.callback_list = _compat.fit_callback_list(self)
        self.samples = _compat.fit_sample_count()


def test_fit_callback_list_and_sample_count_are_found_from_a_callback():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    probe = _Probe()
    model.fit(np.zeros((12, 2)), np.zeros((12, 1)), epochs=1, batch_size=4, verbose=0, callbacks=[probe])
    assert isinstance(probe.callback_list, keras.callbacks.CallbackList)
    assert any(c is probe for c in probe.callback_list.callbacks)
    assert probe.samples == 12
    assert _compat.fit_callback_list(probe) is None  # outside fit
    assert _compat.fit_sample_count() is None


def test_called_from_names_the_caller_of_the_caller():
    def wrapper():
        return _compat.called_from("fit")

    def fit():
        return wrapper()

    assert fit() is True
    assert wrapper() is False


def test_jax_state_sync_writes_fit_state_back_on_jax_and_is_a_no_op_elsewhere():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=1, verbose=0)
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    _compat.jax_state_sync(model)
    assert hasattr(model, "jax_state_sync") == (keras.backend.backend() == "jax")
    for a, w in zip(before, model.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(w))


def test_fit_looks_up_every_guarded_hook_at_each_use():
    """Instance attributes shadowing the hooks are what fit calls (the FitGuard's mechanism)."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    calls = {}

    def counted(owner, name):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        object.__setattr__(owner, name, wrapper)

    class Shadow(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            for name in _compat.FIT_CALLBACK_LIST_HOOKS:
                counted(_compat.fit_callback_list(self), name)
            for name in _compat.FIT_MODEL_HOOKS:
                counted(self.model, name)

    x, y = np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=4, verbose=0, callbacks=[Shadow()])
    assert set(calls) == set(_compat.FIT_CALLBACK_LIST_HOOKS) | set(_compat.FIT_MODEL_HOOKS), calls


def test_jax_fit_values_reads_the_training_state_between_steps_without_a_sync():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), keras.layers.BatchNormalization()])
    model.compile("sgd", "mse")
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            variables = list(model.trainable_variables) + list(model.non_trainable_variables)
            values = _compat.jax_fit_values(model, variables)
            if values is None:
                seen.append(None)
                return
            values = [np.array(v) for v in values]
            _compat.jax_state_sync(model)  # what the variables hold after a sync
            synced = [keras.ops.convert_to_numpy(v) for v in variables]
            seen.append(all(np.array_equal(a, b) for a, b in zip(values, synced)))

    model.fit(np.ones((8, 2)), np.ones((8, 1)), epochs=1, batch_size=2, verbose=0, callbacks=[Probe()])
    if keras.backend.backend() == "jax":
        assert seen[0] is True and len(seen) == 4
    else:
        assert seen == [None] * 4
