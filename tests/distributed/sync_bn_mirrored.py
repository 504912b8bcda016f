"""Run in a subprocess: synchronized BN under MirroredStrategy on two logical CPUs.

Prints one JSON line with the largest differences between the two-replica run
and a single-device run on the global batch.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from keras_regkit.layers import BatchNormalization  # noqa: E402


def main(synchronized: bool):
    rng = np.random.default_rng(0)
    shape = (8, 4, 4, 3)
    x = (rng.normal(size=shape) * 2 + 1).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = BatchNormalization(synchronized=synchronized, momentum=0.5, gamma_initializer="random_normal")
        layer.build(shape)
    half = shape[0] // 2

    def replica_step(x_local, up_local):
        with tf.GradientTape() as tape:
            tape.watch(x_local)
            y = layer(x_local, training=True)
            loss = tf.reduce_sum(y * up_local)
        grads = tape.gradient(loss, [x_local] + layer.trainable_variables)
        return y, grads

    def local_part(array):
        def part(context):
            index = context.replica_id_in_sync_group
            return tf.constant(array[index * half:(index + 1) * half])

        return strategy.experimental_distribute_values_from_function(part)

    @tf.function
    def distributed_step():
        return strategy.run(replica_step, args=(local_part(x), local_part(upstream)))

    y_per, grads_per = distributed_step()
    y_dist = np.concatenate([t.numpy() for t in strategy.experimental_local_results(y_per)])
    gx_dist = np.concatenate([t.numpy() for t in strategy.experimental_local_results(grads_per[0])])
    g_params = [sum(t.numpy() for t in strategy.experimental_local_results(g)) for g in grads_per[1:]]
    moving = [v.numpy() for v in layer.non_trainable_variables]

    def single(x_part, up_part):
        ref = BatchNormalization(momentum=0.5, fused=False)
        ref.build(shape)
        ref.set_weights([w.numpy() for w in layer.weights[:2]] + [np.zeros(3, "float32"), np.ones(3, "float32")])
        xt = tf.constant(x_part)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = ref(xt, training=True)
            loss = tf.reduce_sum(y * up_part)
        grads = tape.gradient(loss, [xt] + ref.trainable_variables)
        return y.numpy(), [g.numpy() for g in grads], [v.numpy() for v in ref.non_trainable_variables]

    if synchronized:
        y_ref, g_ref, moving_ref = single(x, upstream)
        gx_ref, g_params_ref = g_ref[0], g_ref[1:]
    else:  # each replica normalizes its own half
        parts = [single(x[i * half:(i + 1) * half], upstream[i * half:(i + 1) * half]) for i in range(2)]
        y_ref = np.concatenate([p[0] for p in parts])
        gx_ref = np.concatenate([p[1][0] for p in parts])
        g_params_ref = [parts[0][1][k] + parts[1][1][k] for k in (1, 2)]
        moving_ref = [(parts[0][2][k] + parts[1][2][k]) / 2 for k in (0, 1)]  # mean-aggregated update
    report = {
        "y": float(np.abs(y_dist - y_ref).max()),
        "grad_x": float(np.abs(gx_dist - gx_ref).max()),
        "grad_params": float(max(np.abs(a - b).max() for a, b in zip(g_params, g_params_ref))),
        "moving": float(max(np.abs(a - b).max() for a, b in zip(moving, moving_ref))),
        "replicas": strategy.num_replicas_in_sync,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1] == "sync")
