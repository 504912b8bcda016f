"""Checks shared by the distributed subprocesses (MirroredStrategy and MultiWorkerMirroredStrategy).

Each function runs one scenario under a ``tf.distribute`` strategy and returns a
JSON-able report about this process's replicas; the tests assert on the reports.
The same scenarios run with two local replicas (two logical CPUs) and with two
worker processes of one replica each.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

from keras_regkit import augment, layers, recompute_batch_statistics

GLOBAL_BATCH = 8
AUGMENT_GLOBAL_BATCH = 4


def local_replica_ids(strategy):
    """The global replica indices of this process's replicas, in local order."""
    ids = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(context.replica_id_in_sync_group)
    )
    return [int(t) for t in strategy.experimental_local_results(ids)]


def local_part(strategy, array):
    """Distributed value: replica ``r`` gets the ``r``-th of equal blocks of ``array``."""
    block = len(array) // strategy.num_replicas_in_sync

    def part(context):
        index = context.replica_id_in_sync_group
        return tf.constant(array[index * block:(index + 1) * block])

    return strategy.experimental_distribute_values_from_function(part)


def local_results(strategy, value):
    return np.concatenate([np.atleast_1d(t.numpy()) for t in strategy.experimental_local_results(value)])


def _single_device_bn(layer, x, upstream):
    """Output, [grad_x, grad_gamma, grad_beta] and moving statistics of a fresh BN on ``x``."""
    reference = layers.BatchNormalization(momentum=0.5, fused=False)
    reference.build(x.shape)
    reference.set_weights([w.numpy() for w in layer.weights[:2]] + [np.zeros(3, "float32"), np.ones(3, "float32")])
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = reference(xt, training=True)
        loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, [xt] + reference.trainable_variables)
    return y.numpy(), [g.numpy() for g in grads], [v.numpy() for v in reference.non_trainable_variables]


def batch_norm(strategy):
    """Largest differences from single-device BN: global batch (sync), own block (local)."""
    rng = np.random.default_rng(0)
    shape = (GLOBAL_BATCH, 4, 3)
    x = (rng.normal(size=shape) * 2 + 1).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    replicas = strategy.num_replicas_in_sync
    block = GLOBAL_BATCH // replicas
    rows = np.concatenate([np.arange(i * block, (i + 1) * block) for i in local_replica_ids(strategy)])
    report = {}
    for synchronized in (True, False):
        with strategy.scope():
            layer = layers.BatchNormalization(synchronized=synchronized, momentum=0.5,
                                              gamma_initializer="random_normal")
            layer.build(shape)

        def replica_step(x_local, up_local):
            with tf.GradientTape() as tape:
                tape.watch(x_local)
                y = layer(x_local, training=True)
                loss = tf.reduce_sum(y * up_local)
            grads = tape.gradient(loss, [x_local] + layer.trainable_variables)
            context = tf.distribute.get_replica_context()
            return y, grads[0], [context.all_reduce(tf.distribute.ReduceOp.SUM, g) for g in grads[1:]]

        step = tf.function(lambda a, b: strategy.run(replica_step, args=(a, b)))
        y, grad_x, grad_params = step(local_part(strategy, x), local_part(strategy, upstream))
        moving = [v.numpy() for v in layer.non_trainable_variables]
        if synchronized:
            y_ref, grads_ref, moving_ref = _single_device_bn(layer, x, upstream)
            gx_ref, gp_ref = grads_ref[0], grads_ref[1:]
        else:  # each replica normalizes its own block; parameter gradients add, statistics average
            parts = [_single_device_bn(layer, x[i * block:(i + 1) * block], upstream[i * block:(i + 1) * block])
                     for i in range(replicas)]
            y_ref = np.concatenate([p[0] for p in parts])
            gx_ref = np.concatenate([p[1][0] for p in parts])
            gp_ref = [sum(p[1][k] for p in parts) for k in (1, 2)]
            moving_ref = [sum(p[2][k] for p in parts) / replicas for k in (0, 1)]
        first = [strategy.experimental_local_results(g)[0].numpy() for g in grad_params]
        report["sync" if synchronized else "local"] = {
            "y": float(np.abs(local_results(strategy, y) - y_ref[rows]).max()),
            "grad_x": float(np.abs(local_results(strategy, grad_x) - gx_ref[rows]).max()),
            "grad_params": float(max(np.abs(g - r).max() for g, r in zip(first, gp_ref))),
            "moving": float(max(np.abs(a - b).max() for a, b in zip(moving, moving_ref))),
        }
    return report


def bn_model(synchronized):
    """A small model with two BatchNormalization layers (weights seeded)."""
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(6, kernel_initializer=keras.initializers.GlorotUniform(3))(inputs)
    hidden = layers.BatchNormalization(synchronized=synchronized)(hidden)
    dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(4))(hidden)
    return keras.Model(inputs, layers.BatchNormalization(synchronized=synchronized)(dense))


def population_statistics(strategy):
    """recompute_batch_statistics under ``strategy`` against a single-device recomputation."""
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(48, 5)) * 3 + 2).astype("float32")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    report = {}
    for synchronized in (True, False):
        with strategy.scope():
            model = bn_model(synchronized)
        reference = bn_model(synchronized)
        reference.set_weights(model.get_weights())
        batches = recompute_batch_statistics(model, tf.data.Dataset.from_tensor_slices(x).batch(16).with_options(options))
        # Single device: the global batches for synchronized layers, the replicas' blocks otherwise.
        reference_batch = 16 if synchronized else 16 // strategy.num_replicas_in_sync
        recompute_batch_statistics(reference, tf.data.Dataset.from_tensor_slices(x).batch(reference_batch))
        difference = max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), reference.get_weights()))
        report["sync" if synchronized else "local"] = {"batches": batches, "difference": difference}
    return report


def _dropout_family():
    return {
        "Dropout": (layers.Dropout(0.5, seed=7), (4, 8, 8, 3)),
        "SpatialDropout2D": (layers.SpatialDropout2D(0.5, seed=7), (4, 8, 8, 3)),
        "GaussianDropout": (layers.GaussianDropout(0.5, seed=7), (4, 8, 8, 3)),
        "GaussianNoise": (layers.GaussianNoise(0.5, seed=7), (4, 8, 8, 3)),
        "AlphaDropout": (layers.AlphaDropout(0.5, seed=7), (4, 8, 8, 3)),
        "DropBlock2D": (layers.DropBlock2D(0.3, block_size=3, seed=7), (4, 8, 8, 3)),
        "DropPath": (layers.DropPath(0.5, seed=7), (16, 8, 8, 3)),
        "DropConnect": (layers.DropConnect(keras.layers.Dense(8), 0.5, seed=7), (4, 16)),
        "WeightNoise": (layers.WeightNoise(keras.layers.Dense(8), 0.5, seed=7), (4, 16)),
    }


def dropout_masks(strategy):
    """Each dropout-family layer on identical inputs: this process's replicas' outputs (flattened)."""
    report = {}
    with strategy.scope():
        family = _dropout_family()
        for layer, shape in family.values():
            layer.build(shape)
    for name, (layer, shape) in family.items():
        ones = tf.ones(shape)

        def replica(layer=layer, ones=ones):
            return layer(ones, training=True)

        out = tf.function(functools.partial(strategy.run, replica))()
        report[name] = [np.round(t.numpy().ravel(), 5).tolist() for t in strategy.experimental_local_results(out)]
    return report


def augmentation_source():
    """The images and pipeline of the augmentation scenario (shared with the tests' reference)."""
    images = (np.arange(16 * 6 * 6, dtype="float32").reshape(16, 6, 6, 1) * 7) % 251
    pipeline = augment.Pipeline([augment.RandomCrop(6, 6, padding=2), augment.Cutout(2, 2)], seed=5)
    return images, pipeline


def augmented_batches(strategy):
    """Two epochs of ``Pipeline.for_input_context`` batches from distribute_datasets_from_function.

    Returns:
        ``{"pipeline": [input_pipeline_id, num_input_pipelines], "replicas": [[epoch][step] batch
        as nested lists] per local replica}``.
    """
    images, pipeline = augmentation_source()
    contexts = []

    def dataset_fn(context):
        contexts.append(context)
        batch = context.get_per_replica_batch_size(AUGMENT_GLOBAL_BATCH)
        shard = tf.data.Dataset.from_tensor_slices(images).batch(batch)
        shard = shard.shard(context.num_input_pipelines, context.input_pipeline_id)
        return pipeline.for_input_context(context)(shard)

    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    epochs = [[[t.numpy() for t in strategy.experimental_local_results(element)] for element in dataset]
              for _ in range(2)]
    local = len(epochs[0][0])
    return {
        "pipeline": [contexts[0].input_pipeline_id, contexts[0].num_input_pipelines],
        "replicas": [[[step[r].tolist() for step in epoch] for epoch in epochs] for r in range(local)],
    }
