"""Benchmark: keras_regkit Dropout / DropBlock2D against keras.layers.Dropout, one training step.

A step is forward + gradient of ``sum(layer(x, training=True))`` with respect to ``x``, on
(256, 4096) and (64, 32, 32, 64) float32. TensorFlow: ``tf.function`` with and without
``jit_compile``; then the script re-runs itself in a subprocess with ``KERAS_BACKEND=jax``
(``jax.jit`` of a ``stateless_call``). Each figure is the median of >= 5 repeats, ours and
Keras's interleaved, and every ratio is against Keras measured in the same process.

It also times the 0.1.0 design of our layer (the schedulable rate read from a float32
non-trainable weight, now replaced by a rate carried in the seed generator's state) and prints
``now / 0.1.0``, so the cost of the redesign is measured in the same run.

Usage: python benchmarks/bench_dropout.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = [(256, 4096), (64, 32, 32, 64)]


BASELINE = "keras.Dropout(0.5)"
OURS = "regkit.Dropout(0.5)"
PREVIOUS = "regkit 0.1.0 (rate weight)"


def _variable_rate_dropout(rate, seed):
    """The 0.1.0 layer's hot path: the same mask op, with the rate read from a float32 weight."""
    import keras

    from keras_regkit._distribution import ReplicaSeedGenerator
    from keras_regkit.ops import dropout as dropout_ops

    class VariableRateDropout(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.seed_generator = ReplicaSeedGenerator(seed)
            self.rate_variable = self.add_weight(
                name="rate", shape=(), dtype="float32", trainable=False, autocast=False,
                initializer=keras.initializers.Constant(rate))

        def call(self, inputs, training=False):
            if not training:
                return inputs
            return dropout_ops.dropout(inputs, self.rate_variable, seed=self.seed_generator)

    return VariableRateDropout()


def _candidates(shape):
    import keras

    import keras_regkit

    layers = {
        BASELINE: keras.layers.Dropout(0.5, seed=1),
        OURS: keras_regkit.layers.Dropout(0.5, seed=1),
        PREVIOUS: _variable_rate_dropout(0.5, 1),
    }
    if len(shape) == 4:
        layers["regkit.DropBlock2D(0.1,7)"] = keras_regkit.layers.DropBlock2D(0.1, 7, seed=1)
    for layer in layers.values():
        layer.build(shape)
    return layers


def _tf_steps(shape, jit):
    import tensorflow as tf

    steps = {}
    for name, layer in _candidates(shape).items():

        def step(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True))
            return tape.gradient(loss, x)

        steps[name] = tf.function(step, jit_compile=jit)
    return steps


def _jax_steps(shape):
    import jax

    steps = {}
    for name, layer in _candidates(shape).items():
        state = [v.value for v in layer.non_trainable_variables]

        def loss(x, state, layer=layer):
            y, new_state = layer.stateless_call([], state, x, training=True)
            return y.sum(), new_state

        grad = jax.jit(jax.grad(loss, has_aux=True))
        holder = {"state": state}

        def step(x, grad=grad, holder=holder):
            g, holder["state"] = grad(x, holder["state"])
            return g

        steps[name] = step
    return steps


def _time(fn, x, min_seconds):
    fn(x)  # compile / warm up
    n, start = 0, time.perf_counter()
    while True:
        out = fn(x)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
    _block(out)
    return (time.perf_counter() - start) / n


def _block(out):
    if hasattr(out, "block_until_ready"):
        out.block_until_ready()
    elif hasattr(out, "numpy"):
        out.numpy()


def measure(mode, repeats, min_seconds):
    import numpy as np

    import keras

    rows = []
    for shape in SHAPES:
        x = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=shape).astype("float32"))
        if mode == "jax":
            steps = _jax_steps(shape)
        else:
            steps = _tf_steps(shape, jit=(mode == "tf-xla"))

        def synced(fn):
            def run(x):
                out = fn(x)
                _block(out)
                return out

            return run

        steps = {k: synced(v) for k, v in steps.items()}
        for fn in steps.values():
            fn(x)
        times = {name: [] for name in steps}
        for _ in range(repeats):  # interleave ours and the baseline
            for name, fn in steps.items():
                times[name].append(_time(fn, x, min_seconds))
        base = float(np.median(times[BASELINE]))
        previous = np.asarray(times[PREVIOUS])
        for name, values in times.items():
            med = float(np.median(values))
            # now / 0.1.0 per repeat (the two ran back to back), then the median of those ratios
            versus = float(np.median(np.asarray(values) / previous))
            rows.append({"mode": mode, "shape": str(shape), "layer": name, "ms": med * 1e3,
                         "ratio": med / base, "vs_0.1.0": versus})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats, short timing windows")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = args.repeats or 5 if args.quick else (args.repeats or 7)
    min_seconds = 0.05 if args.quick else 0.2

    import keras

    if args.child:
        print(json.dumps(measure("jax", repeats, min_seconds)))
        return
    rows = []
    for mode in ("tf-graph", "tf-xla"):
        rows += measure(mode, repeats, min_seconds)
    child = [sys.executable, os.path.abspath(__file__), "--child", "--repeats", str(repeats)]
    if args.quick:
        child.append("--quick")
    env = dict(os.environ, KERAS_BACKEND="jax")
    out = subprocess.run(child, env=env, capture_output=True, text=True, check=True).stdout
    rows += json.loads(out.strip().splitlines()[-1])
    print(f"keras {keras.__version__}; median of {repeats} interleaved repeats; ratio = time / keras.Dropout;")
    print("vs 0.1.0 = median over repeats of time / the 0.1.0 design's time (rate weight)")
    print(f"{'mode':<9} {'shape':<18} {'layer':<28} {'ms/step':>9} {'ratio':>7} {'vs 0.1.0':>9}")
    for r in rows:
        print(f"{r['mode']:<9} {r['shape']:<18} {r['layer']:<28} {r['ms']:>9.2f} {r['ratio']:>7.3f} "
              f"{r['vs_0.1.0']:>9.3f}")


if __name__ == "__main__":
    main()
