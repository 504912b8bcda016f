"""Run in a subprocess with KERAS_BACKEND=jax and two host devices: keras.distribution checks.

The parent sets ``XLA_FLAGS=--xla_force_host_platform_device_count=2``. Under
``keras.distribution.DataParallel`` arrays are global (sharded over the devices), so
BatchNormalization's moments span the global batch whatever ``synchronized`` says.
Prints one JSON line with the largest differences from single-device runs.
"""

import json

import jax
import keras
import numpy as np

from keras_regkit import layers, recompute_batch_statistics
from tests.backend_utils import training_step


def bn_layer(synchronized, shape):
    layer = layers.BatchNormalization(synchronized=synchronized, momentum=0.5,
                                      gamma_initializer=keras.initializers.RandomNormal(seed=3))
    layer.build(shape)
    return layer


def model(synchronized):
    inputs = keras.Input((5,))
    hidden = layers.BatchNormalization(synchronized=synchronized)(
        keras.layers.Dense(6, kernel_initializer=keras.initializers.GlorotUniform(3))(inputs))
    outputs = keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(4))(hidden)
    net = keras.Model(inputs, layers.BatchNormalization(synchronized=synchronized)(outputs))
    net.compile(keras.optimizers.SGD(0.1), "mse")
    return net


def runs(x, upstream, features, labels, distribution):
    """BN training steps, population statistics and two fit steps, for each ``synchronized``."""
    data = x if distribution is None else keras.distribution.distribute_tensor(
        x, distribution.get_data_layout(x.shape))
    results = {}
    for synchronized in (True, False):
        y, grads, state = training_step(bn_layer(synchronized, x.shape), data, upstream)
        recomputed = model(synchronized)
        recompute_batch_statistics(recomputed, [features[i:i + 16] for i in range(0, 48, 16)])
        trained = model(synchronized)
        trained.fit(features, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)
        results[synchronized] = [y] + grads + state + recomputed.get_weights() + trained.get_weights()
    return results, data


def main():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(8, 4, 3)) * 2 + 1).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    features = (rng.normal(size=(48, 5)) * 3 + 2).astype("float32")
    labels = features[:, :2] * 2.0
    single, _ = runs(x, upstream, features, labels, None)
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    keras.distribution.set_distribution(distribution)
    distributed, data = runs(x, upstream, features, labels, distribution)
    dropout = layers.Dropout(0.5, seed=7)
    mask = np.asarray(dropout(keras.distribution.distribute_tensor(
        np.ones((4, 64), "float32"), distribution.get_data_layout((4, 64))), training=True)) > 0
    report = {
        "devices": len(jax.devices()),
        "input_shards": len(data.sharding.device_set),
        "sync": max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                    for a, b in zip(single[True], distributed[True])),
        "local": max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                     for a, b in zip(single[False], distributed[False])),
        "dropout_halves_differ": bool((mask[:2] != mask[2:]).any()),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
