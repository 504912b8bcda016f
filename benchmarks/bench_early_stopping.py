"""Overhead of EarlyStopping(restore_best_weights=True) on a ~10M-parameter model.

Three fits run interleaved in one process on the same compiled model:
``none`` (a do-nothing callback in the same place), ``keras`` (keras.callbacks.EarlyStopping) and
``ours`` (keras_regkit.callbacks.EarlyStopping), both with
``restore_best_weights=True`` and a monitored value that improves at every
epoch (the worst case: one snapshot per epoch). Reported, as medians over the
repeats:

* the epoch time of each fit and its ratio to ``none``;
* the time spent inside the early-stopping callback's hooks per epoch (timed
  directly, so not drowned by CPU noise) as a percentage of the ``none`` epoch;
* resident memory (psutil RSS) over 100 improvements (1-step epochs).

Run: ``python benchmarks/bench_early_stopping.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from keras_regkit.callbacks import EarlyStopping  # noqa: E402


class Improving(keras.callbacks.Callback):
    """Writes a monitored value that improves at every epoch."""

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = 1.0 / (epoch + 1)


class Timed(keras.callbacks.Callback):
    """Wraps a callback and accumulates the time spent in its epoch/train-end hooks."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.seconds = 0.0

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def _timed(self, name, *args):
        start = time.perf_counter()
        getattr(self.inner, name)(*args)
        self.seconds += time.perf_counter() - start

    def on_train_begin(self, logs=None):
        self._timed("on_train_begin", logs)

    def on_epoch_end(self, epoch, logs=None):
        self._timed("on_epoch_end", epoch, logs)

    def on_train_end(self, logs=None):
        self._timed("on_train_end", logs)


class EpochClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def build(width: int, inputs: int):
    model = keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def make(kind):
    kwargs = dict(monitor="score", mode="min", patience=1000, restore_best_weights=True)
    if kind == "keras":
        return keras.callbacks.EarlyStopping(**kwargs)
    if kind == "ours":
        return EarlyStopping(**kwargs)
    # Same callback-list structure as the others, but a callback that does nothing.
    return keras.callbacks.Callback()


def timing(model, x, y, epochs, batch, repeats):
    epoch_times = {k: [] for k in ("none", "keras", "ours")}
    hook_times = {k: [] for k in ("none", "keras", "ours")}
    kinds = ("none", "keras", "ours")
    for repeat in range(repeats):
        # Rotate the order every repeat so that no variant always runs first.
        for kind in kinds[repeat % 3:] + kinds[:repeat % 3]:
            clock = EpochClock()
            callbacks = [Improving()]
            # The clock runs last, so epoch times include the hook; also time it alone.
            timed = Timed(make(kind))
            callbacks += [timed, clock]
            model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, shuffle=False,
                      callbacks=callbacks)
            epoch_times[kind].append(statistics.median(clock.times[1:]))
            hook_times[kind].append(timed.seconds / epochs)
    return epoch_times, hook_times


def snapshot_cost(model, repeats):
    """Median ms of one snapshot, including any copy it defers to the next weight update.

    TensorFlow shares a snapshot's buffer with the weight and copies it on the
    next write, so each sample times ``snapshot + one in-place write of every
    weight`` minus the same write alone (interleaved).
    """
    ours = EarlyStopping(restore_best_weights=True)
    ours.set_model(model)
    zeros = [keras.ops.zeros(v.shape, v.dtype) for v in model.weights]

    def write():
        for variable, zero in zip(model.weights, zeros):
            variable.assign_add(zero)
        float(keras.ops.convert_to_numpy(model.weights[0].value).flat[0])

    variants = {
        "write only": lambda: None,
        "keras": model.get_weights,
        "ours": lambda: ours._snapshot(0),
    }
    samples = {name: [] for name in variants}
    write()
    ours._snapshot(0)  # allocate once, as the first improvement does
    for _ in range(repeats):
        for name, snap in variants.items():
            start = time.perf_counter()
            snap()
            write()
            samples[name].append(time.perf_counter() - start)
    base = statistics.median(samples["write only"])
    return {name: (statistics.median(v) - base) * 1e3 for name, v in samples.items()
            if name != "write only"}


def memory(model, x, y, improvements):
    process = psutil.Process()
    rows = {}
    for kind in ("keras", "ours"):
        rss = []

        class Rss(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                rss.append(process.memory_info().rss / 2**20)

        model.fit(x, y, epochs=improvements, steps_per_epoch=1, batch_size=8, verbose=0,
                  callbacks=[Improving(), make(kind), Rss()])
        rows[kind] = rss
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, few repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    width, inputs, samples, epochs = (
        (512, 256, 256, 3) if args.quick else (2500, 1500, 640, 6)
    )
    repeats = args.repeats or (2 if args.quick else 5)
    improvements = 20 if args.quick else 100

    model = build(width, inputs)
    params = model.count_params()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, inputs)).astype("float32")
    y = rng.normal(size=(samples, 10)).astype("float32")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)  # trace once

    print(f"backend {keras.backend.backend()}, keras {keras.__version__}, "
          f"{params / 1e6:.2f}M parameters, {epochs} epochs x {repeats} repeats, interleaved")
    epoch_times, hook_times = timing(model, x, y, epochs, 64, repeats)
    base = statistics.median(epoch_times["none"])
    print("\n| fit | epoch (ms, median) | ratio to none | ES hooks per epoch (ms) "
          "| hooks / epoch |")
    print("|---|---|---|---|---|")
    for kind in ("none", "keras", "ours"):
        med = statistics.median(epoch_times[kind])
        if kind == "none":
            print(f"| {kind} | {med * 1e3:.0f} | 1.000 | - | - |")
        else:
            hook = statistics.median(hook_times[kind])
            print(f"| {kind} | {med * 1e3:.0f} | {med / base:.3f} | {hook * 1e3:.2f} | "
                  f"{100 * hook / base:.2f}% |")

    costs = snapshot_cost(model, 5 if args.quick else 15)
    print("\nsnapshot incl. deferred copy (ms, median): "
          + ", ".join(f"{k} {v:.2f} ({100 * v / 1e3 / base:.2f}% of an epoch)"
                      for k, v in costs.items()))

    rows = memory(model, x, y, improvements)
    print(f"\nRSS over {improvements} improvements (MiB; snapshot size "
          f"{params * 4 / 2**20:.0f} MiB)")
    half = len(next(iter(rows.values()))) // 2
    print(f"| callback | after 1 | after 10 | after {half} | after last | last - after 10 |")
    print("|---|---|---|---|---|---|")
    for kind, rss in rows.items():
        print(f"| {kind} | {rss[0]:.0f} | {rss[9]:.0f} | {rss[half - 1]:.0f} | {rss[-1]:.0f} "
              f"| {rss[-1] - rss[9]:+.1f} |")


if __name__ == "__main__":
    main()
