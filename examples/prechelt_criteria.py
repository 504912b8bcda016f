"""Prechelt's stopping criteria compared on a real learning curve (scikit-learn digits).

An over-parameterised MLP is trained on a small part of scikit-learn's
``load_digits`` (8x8 handwritten digits, offline; 300 training and 400
validation images) long enough to overfit, and its training and validation losses are recorded once. The same logs are then
replayed through ``keras_regkit.callbacks.EarlyStopping`` with Keras's patience
rule and with Prechelt's criteria GL_alpha, PQ_alpha and UP_s (strips of 5
epochs). For each rule the script prints the stop epoch, the epoch whose
weights would be restored, the validation loss there, and how much worse it is
than the best validation loss of the whole run; it also notes the epochs
trained, which is the cost side of Prechelt's trade-off.

Expected output (quick mode, 50 epochs, best validation loss about 0.197 at
epoch 10): a table with one row per criterion. Patience 5/20, GL5 and UP1-3 stop
between epochs 11 and 30 and restore the best epoch (excess 0 %); GL1 and GL2
react to an early bump of the noisy validation curve, stop at epoch 6 and
restore epoch 5 (about 18 % worse); PQ never fires in 50 epochs because the
training loss is still falling fast (large P_5). Files written to ``--out``: ``prechelt_criteria.png`` (the curves with each stop
marked) and ``prechelt_criteria.csv`` (the table).

Run: ``python examples/prechelt_criteria.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_regkit.callbacks import EarlyStopping  # noqa: E402

CRITERIA = [
    ("patience 5 (Keras)", dict(patience=5)),
    ("patience 20", dict(patience=20)),
    ("GL1", dict(criterion="GL1")),
    ("GL2", dict(criterion="GL2")),
    ("GL5", dict(criterion="GL5")),
    ("PQ0.5", dict(criterion="PQ0.5")),
    ("PQ1", dict(criterion="PQ1")),
    ("PQ2", dict(criterion="PQ2")),
    ("UP1", dict(criterion="UP1")),
    ("UP2", dict(criterion="UP2")),
    ("UP3", dict(criterion="UP3")),
]


def record_curves(epochs: int, train_size: int, seed: int = 0) -> list[dict]:
    """Trains once and returns the per-epoch logs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    x = (digits.data[order] / 16.0).astype("float32")
    y = digits.target[order]
    x_train, y_train = x[:train_size], y[:train_size]
    x_val, y_val = x[train_size:train_size + 400], y[train_size:train_size + 400]
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, batch_size=50,
        verbose=0,
    )
    keys = list(history.history)
    return [{k: float(history.history[k][e]) for k in keys} for e in range(epochs)]


def replay(logs: list[dict], **kwargs) -> EarlyStopping:
    """Feeds recorded logs to an EarlyStopping as fit would and returns it."""
    holder = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback = EarlyStopping(monitor="val_loss", **kwargs)
    callback.set_model(holder)
    holder.stop_training = False
    callback.on_train_begin()
    for epoch, epoch_logs in enumerate(logs):
        callback.on_epoch_end(epoch, dict(epoch_logs))
        if holder.stop_training:
            break
    callback.on_train_end()
    return callback


def main(argv=None):
    parser = argparse.ArgumentParser(description="Prechelt's criteria on real learning curves.")
    parser.add_argument("--quick", action="store_true", help="fewer epochs (under 30 s)")
    parser.add_argument("--out", default="prechelt_criteria_out", help="output folder")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    epochs = 50 if args.quick else 200
    logs = record_curves(epochs, train_size=300)
    val = np.array([entry["val_loss"] for entry in logs])
    train = np.array([entry["loss"] for entry in logs])
    best_epoch = int(np.argmin(val))
    print(f"recorded {epochs} epochs; best val_loss {val[best_epoch]:.4f} at epoch "
          f"{best_epoch + 1}; final val_loss {val[-1]:.4f}")

    rows = []
    for name, kwargs in CRITERIA:
        callback = replay(logs, **kwargs)
        stopped = callback.stop_reason is not None
        stop = callback.stopped_epoch if stopped else epochs - 1
        restored = callback.best_epoch
        rows.append({
            "criterion": name,
            "stop_epoch": stop + 1,
            "stopped": stopped,
            "restored_epoch": restored + 1,
            "val_loss_restored": round(float(val[restored]), 5),
            "val_acc_restored": round(logs[restored].get("val_accuracy", float("nan")), 4),
            "excess_percent": round(100 * (val[restored] / val[best_epoch] - 1), 2),
        })

    header = (
        f"{'criterion':<20}{'stop':>6}{'restored':>10}{'val_loss':>10}{'val_acc':>9}{'excess':>9}"
    )
    print(header)
    for row in rows:
        stop = f"{row['stop_epoch']}" + ("" if row["stopped"] else "*")
        print(f"{row['criterion']:<20}{stop:>6}{row['restored_epoch']:>10}"
              f"{row['val_loss_restored']:>10.4f}{row['val_acc_restored']:>9.4f}"
              f"{row['excess_percent']:>8.2f}%")
    print("* = never stopped (ran to the last epoch)")

    csv_path = os.path.join(args.out, "prechelt_criteria.csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    x_axis = np.arange(1, epochs + 1)
    ax.plot(x_axis, train, label="training loss", color="0.5")
    ax.plot(x_axis, val, label="validation loss", color="black")
    colours = plt.cm.tab10(np.linspace(0, 1, len(rows)))
    for row, colour in zip(rows, colours):
        if row["stopped"]:
            ax.axvline(row["stop_epoch"], color=colour, linestyle="--", linewidth=1,
                       label=f"{row['criterion']} stops")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax.set_title("Prechelt's criteria on an overfitting MLP (digits, 300 training images)")
    ax.legend(fontsize=7, ncol=2)
    png_path = os.path.join(args.out, "prechelt_criteria.png")
    fig.savefig(png_path, dpi=100, bbox_inches="tight")
    print(f"wrote {png_path} and {csv_path}")


if __name__ == "__main__":
    main()
