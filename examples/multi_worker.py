"""Multi-worker training on one machine: synchronized BN, EarlyStopping and augmentation.

Starts two worker processes on 127.0.0.1 (``keras_regkit.local_cluster.run_workers``
gives each one its ``TF_CONFIG``), which train a small network on scikit-learn's
real 8x8 digits under ``tf.distribute.MultiWorkerMirroredStrategy``:

* ``BatchNormalization(synchronized=True)`` normalizes with the moments of the
  global batch (both workers' examples), not each worker's half;
* a ``Pipeline`` of random crops feeds each worker through
  ``strategy.distribute_datasets_from_function`` and ``pipeline.for_input_context``:
  distinct augmentations per worker, together exactly the single-process stream;
* ``EarlyStopping`` gets each worker's own validation loss (each evaluates its half
  of the validation set), averages it over the workers, so both stop at the same
  epoch and restore the same weights; only the chief writes ``best.weights.h5``;
* ``recompute_batch_statistics`` then sets population statistics from the global
  batches, the same on both workers.

Keras 3.15's ``model.fit`` fails under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so the workers train with a short custom loop that
drives the callbacks through ``keras.callbacks.CallbackList``.

Expected output: one line per worker, then a summary saying both workers stopped at
the same epoch with identical weights, and the test accuracy (about 85-90% in quick
mode, about 95% in full mode). Writes ``best.weights.h5`` to ``--out``.

Usage: python examples/multi_worker.py [--quick] [--out DIR]
"""

import argparse
import json
import os
import sys

import numpy as np

PER_REPLICA_BATCH = 32


def load_data(quick):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[..., None] * (255.0 / 16.0)).astype("float32")
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], digits.target[order].astype("int32")
    train = 768 if quick else 1280  # whole global batches: both workers run the same steps
    return (images[:train], labels[:train]), (images[1400:1600], labels[1400:1600]), (images[1600:], labels[1600:])


def build_model():
    import keras

    from keras_regkit.layers import BatchNormalization, Dropout

    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Rescaling(1.0 / 255.0),
        keras.layers.Flatten(),
        keras.layers.Dense(64, kernel_initializer=keras.initializers.GlorotUniform(1)),
        BatchNormalization(synchronized=True),
        keras.layers.ReLU(),
        Dropout(0.2, seed=2),
        keras.layers.Dense(10, kernel_initializer=keras.initializers.GlorotUniform(3)),
    ])


def worker(args):
    """One worker: trains under MultiWorkerMirroredStrategy and prints a JSON line."""
    import keras
    import tensorflow as tf

    from keras_regkit import augment, recompute_batch_statistics
    from keras_regkit.callbacks import EarlyStopping

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = strategy.cluster_resolver.task_id
    workers = strategy.num_replicas_in_sync
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_data(args.quick)
    pipeline = augment.Pipeline([augment.RandomCrop(8, 8, padding=1)], seed=0)

    def dataset_fn(context):
        examples = tf.data.Dataset.from_tensor_slices((x_train, y_train))
        batches = examples.batch(context.get_per_replica_batch_size(PER_REPLICA_BATCH * workers))
        return pipeline.for_input_context(context)(
            batches.shard(context.num_input_pipelines, context.input_pipeline_id))

    train = strategy.distribute_datasets_from_function(dataset_fn)
    with strategy.scope():
        model = build_model()
        optimizer = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    @tf.function
    def train_step(x, y):
        def replica(x, y):
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(loss_fn(y, model(x, training=True)),
                                                  global_batch_size=PER_REPLICA_BATCH * workers)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return strategy.reduce("SUM", strategy.run(replica, args=(x, y)), axis=None)

    half = len(x_val) // workers  # each worker validates its own half
    mine = slice(task * half, (task + 1) * half)
    stop = EarlyStopping(patience=3, restore_best_weights=True,
                         backup_path=os.path.join(args.out, "best.weights.h5"))
    callbacks = keras.callbacks.CallbackList([stop], model=model)
    model.stop_training = False
    callbacks.on_train_begin()
    for epoch in range(10 if args.quick else 60):
        callbacks.on_epoch_begin(epoch)
        losses = [float(train_step(x, y)) for x, y in train]
        val_loss = float(np.mean(loss_fn(y_val[mine], model(x_val[mine], training=False))))
        callbacks.on_epoch_end(epoch, {"loss": float(np.mean(losses)), "val_loss": val_loss})
        if model.stop_training:
            break
    callbacks.on_train_end()
    recompute_batch_statistics(
        model, tf.data.Dataset.from_tensor_slices(x_train).batch(PER_REPLICA_BATCH * workers))
    accuracy = float(np.mean(np.argmax(model(x_test, training=False), -1) == y_test))
    fingerprint = float(sum(np.abs(w).astype("float64").sum() for w in model.get_weights()))
    print(json.dumps({"worker": task, "epochs": epoch + 1, "stop_reason": stop.stop_reason,
                      "restored_epoch": stop.restored_epoch, "test_accuracy": accuracy,
                      "weights": fingerprint}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="less data, fewer epochs")
    parser.add_argument("--out", default="regkit_out/multi_worker", help="output folder")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # set by the launcher
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.worker:
        worker(args)
        return
    from keras_regkit.local_cluster import run_workers

    os.makedirs(args.out, exist_ok=True)
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--out", args.out]
    outputs = run_workers(command + (["--quick"] if args.quick else []), num_workers=2,
                          timeout=300 if args.quick else 1200)
    results = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    for result in results:
        print(json.dumps(result))
    same = all(r[k] == results[0][k] for r in results for k in ("epochs", "restored_epoch", "weights"))
    restored = results[0]["restored_epoch"]
    print(f"workers agree: {same}; trained {results[0]['epochs']} epochs "
          f"(stop reason: {results[0]['stop_reason']}), restored epoch "
          f"{'-' if restored is None else restored + 1}; "
          f"test accuracy {100 * results[0]['test_accuracy']:.1f}%; "
          f"best weights written by the chief to {os.path.join(args.out, 'best.weights.h5')}")


if __name__ == "__main__":
    main()
