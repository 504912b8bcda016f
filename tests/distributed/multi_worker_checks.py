"""One worker of a two-worker MultiWorkerMirroredStrategy cluster (TF_CONFIG from the parent).

Run by tests/distributed/test_multi_worker.py through keras_regkit.local_cluster.run_workers.
Each worker checks several things in one go and writes ``worker<i>.json`` (and
``worker<i>.npz`` with its augmented batches) into the folder given as argv[1]:

* synchronized BN: outputs, gradients and moving statistics against single-device BN
  on the global batch (unsynchronized BN: against single-device BN on its own half);
* recompute_batch_statistics under the strategy against a single-device recomputation;
* a Dropout mask (the parent checks the workers' masks differ);
* Pipeline.for_input_context batches from distribute_datasets_from_function;
* EarlyStopping in a custom training loop where each worker sees its own val_loss.
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from keras_regkit.callbacks import EarlyStopping
from tests.distributed import checks

# Each worker's own validation losses: alone, worker 0 would stop at epoch 3 and worker 1 at
# epoch 2; their mean (1.0, 0.8, 0.9, ...) stops both at epoch 2 (patience 1), restoring epoch 1.
VAL_LOSS = ([1.0, 0.8, 0.7, 0.9, 0.6, 0.5], [1.0, 0.8, 1.1, 0.6, 0.9, 0.5])


def fingerprint(model):
    return float(sum(np.abs(w).sum() for w in model.get_weights()))


def check_early_stopping(strategy, worker, out_dir):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = x[:, :2] * 2.0
    with strategy.scope():
        model = checks.bn_model(True)
        optimizer = keras.optimizers.SGD(0.1)
    backup_dir = os.path.join(out_dir, f"backup{worker}")
    os.makedirs(backup_dir)
    callback = EarlyStopping(patience=1, restore_best_weights=True,
                             backup_path=os.path.join(backup_dir, "best.weights.h5"))
    callbacks = keras.callbacks.CallbackList([callback], model=model)

    @tf.function
    def train_step(x_part, y_part):
        def replica(xr, yr):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(xr, training=True) - yr)) / strategy.num_replicas_in_sync
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica, args=(x_part, y_part)), axis=None)

    weights_after = []
    model.stop_training = False
    callbacks.on_train_begin()
    for epoch in range(len(VAL_LOSS[0])):
        callbacks.on_epoch_begin(epoch)
        loss = train_step(checks.local_part(strategy, x), checks.local_part(strategy, y))
        weights_after.append(fingerprint(model))
        callbacks.on_epoch_end(epoch, {"loss": float(loss), "val_loss": VAL_LOSS[worker][epoch]})
        if model.stop_training:
            break
    callbacks.on_train_end()
    report = {
        "stopped_epoch": callback.stopped_epoch,
        "restored_epoch": callback.restored_epoch,
        "final": fingerprint(model),
        "after_epoch": weights_after,
        "backup_files": sorted(os.listdir(backup_dir)),
    }
    if report["backup_files"]:
        fresh = checks.bn_model(True)
        fresh.load_weights(os.path.join(backup_dir, "best.weights.h5"))
        report["backup"] = fingerprint(fresh)
    return report


def main(out_dir):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    worker = strategy.cluster_resolver.task_id
    report = {
        "replicas": strategy.num_replicas_in_sync,
        "batch_norm": checks.batch_norm(strategy),
        "population": checks.population_statistics(strategy),
        "dropout": checks.dropout_masks(strategy),
        "early_stopping": check_early_stopping(strategy, worker, out_dir),
        "augment": checks.augmented_batches(strategy),
    }
    with open(os.path.join(out_dir, f"worker{worker}.json"), "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(sys.argv[1])
