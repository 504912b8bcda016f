"""Population statistics (precise BN): Algorithm 2 against a NumPy reference."""

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit.callbacks import PopulationStatistics, recompute_batch_statistics
from keras_regkit.layers import BatchNormalization


def np_(x, dtype=None):
    """A tensor or variable as NumPy, on every backend (torch tensors may require grad)."""
    return np.asarray(keras.ops.convert_to_numpy(x), dtype)


def _model(bn_cls, **bn_kwargs):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(5, name="d1")(inputs)
    h = bn_cls(name="bn1", momentum=0.3, **bn_kwargs)(h)
    h = keras.layers.Dropout(0.5)(h)
    h = keras.layers.Dense(4, name="d2")(h)
    outputs = bn_cls(name="bn2", **bn_kwargs)(h)
    return keras.Model(inputs, outputs)


def _reference(model, batches, group=None):
    """NumPy Algorithm 2: batch-stat normalization, dropout off, equal weight per (ghost) batch."""
    d1, bn1, d2, bn2 = (model.get_layer(n) for n in ("d1", "bn1", "d2", "bn2"))
    stats = {"bn1": [], "bn2": []}

    def batch_norm(h, layer, name):
        chunks = [h] if group is None else [h[i:i + group] for i in range(0, len(h), group)]
        out = []
        for c in chunks:
            mean, var = c.mean(0), c.var(0)
            stats[name].append((mean, var * len(c) / (len(c) - 1)))
            out.append((c - mean) / np.sqrt(var + layer.epsilon) * np_(layer.gamma) + np_(layer.beta))
        return np.concatenate(out)

    for x in batches:
        h = x.astype("float64") @ np_(d1.kernel) + np_(d1.bias)
        h = batch_norm(h, bn1, "bn1")
        h = h @ np_(d2.kernel) + np_(d2.bias)
        batch_norm(h, bn2, "bn2")
    return {k: (np.mean([m for m, _ in v], 0), np.mean([s for _, s in v], 0)) for k, v in stats.items()}


@pytest.mark.parametrize("bn_cls", [BatchNormalization, keras.layers.BatchNormalization])
def test_matches_numpy_algorithm_2(bn_cls, rng):
    model = _model(bn_cls, gamma_initializer="random_normal", beta_initializer="random_normal")
    batches = [rng.normal(size=(n, 6)).astype("float32") * 2 + 1 for n in (16, 16, 9)]
    trainable_before = [np_(w).copy() for w in model.trainable_weights]
    expected = _reference(model, batches)
    assert recompute_batch_statistics(model, batches) == 3
    for name, (mean, variance) in expected.items():
        layer = model.get_layer(name)
        np.testing.assert_allclose(np_(layer.moving_mean), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np_(layer.moving_variance), variance, rtol=1e-4)
    for before, w in zip(trainable_before, model.trainable_weights):
        np.testing.assert_array_equal(before, np_(w))
    assert "call" not in vars(model.get_layer("bn1"))  # the layer's own call is back


def test_ghost_batches_count_as_mini_batches(rng):
    model = _model(BatchNormalization, virtual_batch_size=4)
    batches = [rng.normal(size=(8, 6)).astype("float32") for _ in range(2)]
    expected = _reference(model, batches, group=4)
    recompute_batch_statistics(model, batches)
    for name, (mean, variance) in expected.items():
        np.testing.assert_allclose(np_(model.get_layer(name).moving_variance), variance, rtol=1e-4)
        np.testing.assert_allclose(np_(model.get_layer(name).moving_mean), mean, rtol=1e-4, atol=1e-5)


def test_steps_limits_batches_and_tf_data_tuples_work(rng):
    import tensorflow as tf

    model = _model(BatchNormalization)
    x = rng.normal(size=(40, 6)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(40))).batch(10)
    expected = _reference(model, [x[:10], x[10:20]])
    assert recompute_batch_statistics(model, dataset, steps=2) == 2
    np.testing.assert_allclose(np_(model.get_layer("bn2").moving_variance), expected["bn2"][1], rtol=1e-4)


@pytest.mark.parametrize("batch_size, sizes", [(None, (32, 8)), (16, (16, 16, 8)), (40, (40,))])
def test_arrays_are_cut_into_batches_like_keras_predict(rng, batch_size, sizes):
    model = _model(BatchNormalization)
    x = rng.normal(size=(40, 6)).astype("float32")
    starts = np.cumsum((0,) + sizes[:-1])
    expected = _reference(model, [x[s:s + n] for s, n in zip(starts, sizes)])
    assert recompute_batch_statistics(model, x, batch_size=batch_size) == len(sizes)
    for name, (mean, variance) in expected.items():
        np.testing.assert_allclose(np_(model.get_layer(name).moving_variance), variance, rtol=1e-4)
        np.testing.assert_allclose(np_(model.get_layer(name).moving_mean), mean, rtol=1e-4, atol=1e-5)


def test_dict_of_arrays_feeds_a_multi_input_model(rng):
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Dense(4)(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, BatchNormalization(name="bn")(h))
    x = {"a": rng.normal(size=(20, 3)).astype("float32"), "b": rng.normal(size=(20, 2)).astype("float32")}
    assert recompute_batch_statistics(model, x, batch_size=10, steps=1) == 1
    hidden = keras.Model(model.inputs, model.layers[-2].output)
    first = keras.ops.convert_to_numpy(hidden({k: v[:10] for k, v in x.items()})).astype("float64")
    np.testing.assert_allclose(np_(model.get_layer("bn").moving_mean), first.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np_(model.get_layer("bn").moving_variance), first.var(0, ddof=1), rtol=1e-4)
    with pytest.raises(ValueError, match=r"arrays of x must have the same number of examples"):
        recompute_batch_statistics(model, {"a": x["a"], "b": x["b"][:5]})


def test_renorm_layer_gets_consistent_stddev(rng):
    model = _model(BatchNormalization, renorm=True)
    recompute_batch_statistics(model, [rng.normal(size=(8, 6)).astype("float32")])
    layer = model.get_layer("bn1")
    np.testing.assert_allclose(np_(layer.moving_stddev) ** 2 - layer.epsilon, np_(layer.moving_variance),
                               rtol=1e-4, atol=1e-6)


def test_bad_input_raises(rng):
    import tensorflow as tf

    model = _model(BatchNormalization)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        recompute_batch_statistics(model, [], steps=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        recompute_batch_statistics(model, rng.normal(size=(8, 6)), batch_size=0)
    with pytest.raises(ValueError, match="batch_size is for array inputs only.*list"):
        recompute_batch_statistics(model, [np.zeros((2, 6), "float32")], batch_size=2)
    with pytest.raises(ValueError, match="at least one example"):
        recompute_batch_statistics(model, np.zeros((0, 6), "float32"))
    with pytest.raises(ValueError, match="PopulationStatistics: batch_size is for array inputs only"):
        PopulationStatistics(tf.data.Dataset.from_tensors(np.zeros((2, 6), "float32")), batch_size=4)
    with pytest.raises(ValueError, match="no batch"):
        recompute_batch_statistics(model, [])
    with pytest.raises(ValueError, match="infinite dataset"):
        recompute_batch_statistics(model, tf.data.Dataset.from_tensors(np.zeros((2, 6), "float32")).repeat())
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no BatchNormalization layer"):
        recompute_batch_statistics(plain, [np.zeros((2, 3), "float32")])
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        PopulationStatistics([], epochs=0)


def test_callback_recomputes_at_chosen_epochs_and_end(rng):
    model = _model(BatchNormalization)
    model.compile("sgd", "mse")
    x = rng.normal(size=(32, 6)).astype("float32")
    batches = [x[:16], x[16:]]
    callback = PopulationStatistics(batches, epochs=[0, 2])
    model.fit(x, np.zeros((32, 4)), epochs=3, batch_size=16, verbose=0, callbacks=[callback])
    assert callback.recomputed_at == ["epoch 1", "epoch 3", "end of training"]
    expected = _reference(model, batches)
    np.testing.assert_allclose(np_(model.get_layer("bn2").moving_variance), expected["bn2"][1], rtol=1e-4)
    # The same with the training array itself, cut into batches of 16.
    from_arrays = PopulationStatistics(x, batch_size=16, at_train_end=True)
    model.fit(x, np.zeros((32, 4)), epochs=1, batch_size=16, verbose=0, callbacks=[from_arrays])
    expected = _reference(model, batches)
    np.testing.assert_allclose(np_(model.get_layer("bn2").moving_variance), expected["bn2"][1], rtol=1e-4)
    assert keras_regkit.recompute_batch_statistics is recompute_batch_statistics
