"""Cost of ExponentialMovingAverage (per step) and StochasticWeightAveraging (per epoch).

One ~10.5M-parameter MLP (1024 -> 3 x [Dense(2048), BatchNormalization, ReLU] -> 10), Adam,
batch 256, in four variants trained interleaved in one process (the order rotates every
repeat), each with its own compiled model:

* ``none``: no averaging;
* ``keras use_ema``: ``keras.optimizers.Adam(use_ema=True, ema_momentum=0.999)``, Keras's EMA
  inside the compiled step (trainable variables only);
* ``ours EMA``: ``keras_regkit.callbacks.ExponentialMovingAverage(0.999)`` (trainable variables
  and BatchNormalization statistics, one compiled update per step);
* ``ours SWA``: ``keras_regkit.callbacks.StochasticWeightAveraging(0)`` (a float64 host sum of
  the trainable variables at every epoch end).

Every variant carries the same step clock (a callback timing ``on_train_batch_end`` to
``on_train_batch_end``), so all of them synchronise at every step alike. Each fit runs 3
epochs. Reported, as medians over the repeats: the time per step and its ratio to ``none``;
and the time spent inside our callbacks' hooks (timed directly, so not drowned by the noise
of a shared machine) per step for EMA (the first step, which compiles the update, left out)
and per epoch end for SWA (the first, which allocates the float64 sums, left out), as a
percentage of ``none``'s step and epoch.

Run: ``python benchmarks/bench_weight_averaging.py`` (``--quick`` for a smoke run);
``KERAS_BACKEND=jax`` or ``torch`` for the other backends.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_regkit.callbacks import ExponentialMovingAverage, StochasticWeightAveraging  # noqa: E402

VARIANTS = ("none", "keras use_ema", "ours EMA", "ours SWA")


class StepClock(keras.callbacks.Callback):
    """Times from one ``on_train_batch_end`` to the next; the first step (tracing) is dropped."""

    def __init__(self):
        super().__init__()
        self.stamps = []

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())

    def step_seconds(self) -> float:
        return statistics.median(np.diff(self.stamps[1:]))


class Timed(keras.callbacks.Callback):
    """Wraps a callback and accumulates the seconds spent in its per-step and per-epoch hooks."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.step_calls = []
        self.epoch_calls = []

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        start = time.perf_counter()
        self.inner.on_train_batch_end(batch, logs)
        self.step_calls.append(time.perf_counter() - start)

    @property
    def step_seconds(self) -> float:
        """Median seconds per step (the first call, which compiles the update, is dropped)."""
        return statistics.median(self.step_calls[1:]) if len(self.step_calls) > 1 else 0.0

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        self.inner.on_epoch_end(epoch, logs)
        self.epoch_calls.append(time.perf_counter() - start)

    @property
    def epoch_seconds(self) -> float:
        """Median seconds per epoch end after the first (which allocates SWA's sums)."""
        return statistics.median(self.epoch_calls[1:]) if len(self.epoch_calls) > 1 else 0.0

    def on_test_begin(self, logs=None):
        self.inner.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.inner.on_test_end(logs)

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)


def build(kind: str, width: int, inputs: int) -> keras.Model:
    layers = [keras.Input((inputs,))]
    for _ in range(3):
        layers += [keras.layers.Dense(width, use_bias=False), keras.layers.BatchNormalization(),
                   keras.layers.ReLU()]
    layers.append(keras.layers.Dense(10))
    model = keras.Sequential(layers)
    optimizer = (keras.optimizers.Adam(1e-4, use_ema=True, ema_momentum=0.999) if kind == "keras use_ema"
                 else keras.optimizers.Adam(1e-4))
    model.compile(optimizer, "mse")
    return model


def callback_for(kind: str):
    if kind == "ours EMA":
        return Timed(ExponentialMovingAverage(0.999))
    if kind == "ours SWA":
        return Timed(StochasticWeightAveraging(0))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model and few repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    # SWA runs without bn_data here (BN recomputation is not what is timed): silence its warning.
    warnings.filterwarnings("ignore", message="StochasticWeightAveraging: the model has BatchNormalization")
    width, inputs, steps = (256, 128, 6) if args.quick else (2048, 1024, 40)
    repeats = args.repeats or (2 if args.quick else 3)
    epochs, batch = 3, 256
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, inputs)).astype("float32")
    y = rng.normal(size=(batch * steps, 10)).astype("float32")
    models = {kind: build(kind, width, inputs) for kind in VARIANTS}
    for kind, model in models.items():  # compile and warm up once
        if not (kind == "keras use_ema" and keras.backend.backend() == "jax"):
            model.fit(x[:batch * 2], y[:batch * 2], batch_size=batch, epochs=1, verbose=0)
    params = models["none"].count_params()
    print(f"backend {keras.backend.backend()}, keras {keras.__version__}, {params / 1e6:.2f}M parameters, "
          f"batch {batch}, {epochs} epochs of {steps} steps per fit, {repeats} repeats, interleaved")

    step = {kind: [] for kind in VARIANTS}
    hook_step = {kind: [] for kind in VARIANTS}
    hook_epoch = {kind: [] for kind in VARIANTS}
    for repeat in range(repeats):
        order = VARIANTS[repeat % 4:] + VARIANTS[:repeat % 4]
        for kind in order:
            if kind == "keras use_ema" and keras.backend.backend() == "jax" and repeat > 0:
                # Keras 3.15.1's use_ema fails at the end of a second fit on JAX (a TypeError
                # from a purged variable); a fresh model each time (its first step is not timed).
                models[kind] = build(kind, width, inputs)
            clock, timed = StepClock(), callback_for(kind)
            callbacks = [c for c in (timed, clock) if c is not None]
            models[kind].fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks)
            step[kind].append(clock.step_seconds())
            if timed is not None:
                hook_step[kind].append(timed.step_seconds)
                hook_epoch[kind].append(timed.epoch_seconds)

    base = statistics.median(step["none"])
    print("\n| variant | step (ms, median) | ratio to none | callback per step (ms) | per step, % of none's step "
          "| callback per epoch (ms) | per epoch, % of none's epoch |")
    print("|---|---|---|---|---|---|---|")
    for kind in VARIANTS:
        med = statistics.median(step[kind])
        cells = [kind, f"{med * 1e3:.1f}", f"{med / base:.3f}"]
        if hook_step[kind]:
            per_step = statistics.median(hook_step[kind])
            per_epoch = statistics.median(hook_epoch[kind])
            cells += [f"{per_step * 1e3:.2f}", f"{100 * per_step / base:.1f}%",
                      f"{per_epoch * 1e3:.1f}", f"{100 * per_epoch / (base * steps):.2f}%"]
        else:
            cells += ["", "", "", ""]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
