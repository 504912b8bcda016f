"""Times keras_regkit's BatchNormalization against keras.layers.BatchNormalization.

Both layers run in the same process on the same inputs, interleaved, inside
``tf.function`` with and without ``jit_compile``: a training step (forward,
backward to the input, gamma and beta, and the moving-statistics update) and an
inference call. It prints medians over repeats, the ratio ours/keras, and the
ratio of our time to a memory-bandwidth bound (bytes a fused implementation must
move, divided by the copy bandwidth measured in the same run).

Usage:
    python benchmarks/bench_batch_normalization.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_regkit.layers import BatchNormalization  # noqa: E402

# Tensor passes a one-pass-per-need implementation makes: forward reads x for the
# moments, reads x and writes y; backward reads dy and x for the reductions, then
# reads dy and x and writes dx. Inference reads x and writes y.
TRAIN_PASSES = 8
INFER_PASSES = 2


def make_step(layer, training: bool, jit: bool):
    @tf.function(jit_compile=jit)
    def train_step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        return tape.gradient(loss, [x] + layer.trainable_variables)

    @tf.function(jit_compile=jit)
    def infer_step(x):
        return layer(x, training=False)

    return train_step if training else infer_step


def time_call(fn, args, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        out = fn(*args)
    tf.nest.map_structure(lambda t: t.numpy(), out)
    return (time.perf_counter() - start) / iters


def copy_bandwidth(x, iters: int) -> float:
    """Bytes per second of an elementwise read+write pass over ``x``."""
    add_one = tf.function(lambda t: t + 1.0)
    times = [time_call(add_one, (x,), iters) for _ in range(5)]
    return 2 * x.numpy().nbytes / statistics.median(times)


def bench(shape, jit: bool, repeats: int, iters: int, bandwidth: float):
    x = tf.constant(np.random.default_rng(0).normal(size=shape).astype("float32"))
    upstream = tf.constant(np.random.default_rng(1).normal(size=shape).astype("float32"))
    rows = []
    for training in (True, False):
        steps = {}
        for name, cls in (("keras", keras.layers.BatchNormalization), ("ours", BatchNormalization)):
            layer = cls()
            layer.build(shape)
            step = make_step(layer, training, jit)
            args = (x, upstream) if training else (x,)
            time_call(step, args, 3)  # trace and warm up
            steps[name] = (step, args)
        times = {"keras": [], "ours": []}
        for _ in range(repeats):  # interleave so drift hits both alike
            for name, (step, args) in steps.items():
                times[name].append(time_call(step, args, iters))
        keras_ms = statistics.median(times["keras"]) * 1e3
        ours_ms = statistics.median(times["ours"]) * 1e3
        passes = TRAIN_PASSES if training else INFER_PASSES
        bound_ms = passes * x.numpy().nbytes / bandwidth * 1e3
        rows.append((shape, "train" if training else "infer", jit, keras_ms, ours_ms, bound_ms))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 9)
    shapes = [(256, 512), (64, 32, 32, 64)]
    big = tf.constant(np.ones((64, 32, 32, 64), "float32"))
    bandwidth = copy_bandwidth(big, 10)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}; copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    print(f"medians of {repeats} repeats, ms per call")
    header = f"{'shape':>18} {'step':>5} {'jit':>5} {'keras':>8} {'ours':>8} {'ours/keras':>10} {'ours/bound':>10}"
    print(header)
    for shape in shapes:
        iters = 40 if len(shape) == 2 else 4
        for jit in (False, True):
            for shape_, step, jit_, keras_ms, ours_ms, bound_ms in bench(shape, jit, repeats, iters, bandwidth):
                print(
                    f"{str(shape_):>18} {step:>5} {str(jit_):>5} {keras_ms:8.3f} {ours_ms:8.3f} "
                    f"{ours_ms / keras_ms:10.2f} {ours_ms / bound_ms:10.2f}"
                )


if __name__ == "__main__":
    main()
