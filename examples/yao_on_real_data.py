"""Theory-driven stopping on real data: Keras on random Fourier features of the diabetes set.

scikit-learn's diabetes data (442 patients, 10 standardized inputs, a disease-progression
score) is split at random into 309 training and 133 test patients, several times. On each
split a bias-free ``Dense(1)`` layer over ``D = 2000`` random Fourier features
``phi(x) = sqrt(2/D) cos(W x + b)`` (``W ~ N(0, 1/l^2)``, ``l`` the median distance between
training inputs; Rahimi & Recht 2007) is trained from zero by full-batch SGD on half the
mean squared error with :class:`~keras_regkit.callbacks.YaoStepSchedule` (constant steps
``1/kappa^2``, ``kappa^2 = max ||phi(x_i)||^2``). That is kernel gradient descent with the
kernel ``<phi(x), phi(x')>``, an approximation of the Gaussian kernel of bandwidth ``l``,
so :class:`~keras_regkit.stopping.KernelGradientDescent` with
:class:`~keras_regkit.stopping.FeatureMapKernel` computes the same path; the table's last
column is the largest difference between the two predictions (Keras runs in float32).

One table compares, with the median over splits of the epochs run and of the test mean
squared error (targets standardized on the training part, so 1.0 is the error of
predicting the mean):

* ``YaoStoppingTime(r=0.5)``: the a-priori time ``ceil(m^(1/3))`` for a target in the RKHS
  (``r = 0.5``; the regularity of real data is unknown, which is the point);
* ``DiscrepancyStopping``: the first epoch whose training loss is below ``sigma^2 / 2``,
  with ``sigma`` from :func:`~keras_regkit.stopping.estimate_noise_level` on the training
  inputs (nearest-neighbour differences);
* ``SmoothedDiscrepancyStopping`` with the same ``sigma``: the first epoch whose training
  residuals, smoothed by ``(K/m)^(p/2)`` with ``K`` the features' kernel matrix, fall to
  the expected smoothed noise ``sigma^2 tr((K/m)^p)/m``; ``p = "auto"`` (from the spectrum)
  and ``p = 1``. The example checks that it stops at
  ``KernelGradientDescent.select("smoothed_discrepancy")``'s time;
* ``EarlyStopping``: keras_regkit's, on a 20% validation split of the training part
  (``patience=50``, best weights restored), so it trains on 80% of the data;
* the best epoch in hindsight: the least test error along the path (up to ``--epochs``),
  which no rule can know.

What the full run shows (10 splits, about 4.5 minutes on 2 cores; the README has the table):

* The a-priori time stops after 7 steps, far too early (1.45x the best test error): it
  knows only ``m`` and an assumed ``r``, and it is a conservative upper-bound rule.
* The discrepancy principle needs no validation data. It stops after 30 steps (median),
  before the best epoch (89). The nearest-neighbour noise estimate, 0.71 of the targets'
  standard deviation, is inflated by the regression function's variation between
  neighbours in 10 dimensions. Its error is still within 4% of the best.
* Validation-based early stopping also ends within 4% of the best, while training on
  only 80% of the data. Its stopping epoch varies most: on one split the validation loss
  kept falling until the 2,000-epoch cap.
* The smoothed discrepancy rule with power ``"auto"`` (0.44 here) stops after 38 steps
  (33-43 across splits, against 17-80 for the plain rule) and is within 4% of the best;
  with power 1 it stops earlier (26 steps) and ends 9% above the best.
* Keras and ``KernelGradientDescent`` agree to 4e-7 at every stopping point, and the
  smoothed callback stopped at the kernel path's smoothed time in all 20 runs.

Run: ``python examples/yao_on_real_data.py [--quick] [--out DIR] [--splits N]``. Writes
``results.md`` to ``--out``. Quick mode: 2 splits, at most 300 epochs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

FEATURES = 2000
TEST = 133
PATIENCE = 50
R = 0.5  # the a-priori rule's assumed regularity: a target in the RKHS


def load_split(seed: int):
    """Standardized (train, test) inputs and targets of one random split of the diabetes data."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:TEST], order[TEST:]
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std
    y = (y - y[train].mean()) / y[train].std()
    return (x[train], y[train]), (x[test], y[test])


def fourier_features(x_train: np.ndarray, seed: int):
    """The random Fourier feature map for a Gaussian kernel of median-heuristic bandwidth."""
    distances = np.sqrt(((x_train[:, None] - x_train[None]) ** 2).sum(-1))
    bandwidth = float(np.median(distances[distances > 0]))
    rng = np.random.default_rng(10_000 + seed)
    weights = rng.normal(size=(x_train.shape[1], FEATURES)) / bandwidth
    offsets = rng.uniform(0.0, 2.0 * np.pi, FEATURES)

    def phi(x):
        return np.sqrt(2.0 / FEATURES) * np.cos(np.asarray(x, dtype=np.float64) @ weights + offsets)

    return phi


def half_mse(y_true, y_pred):
    import keras

    return 0.5 * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


def linear_model(kappa: float):
    import keras

    from keras_regkit.callbacks import YaoStepSchedule

    model = keras.Sequential([keras.Input((FEATURES,)),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(YaoStepSchedule(kappa, theta=0.0)), loss=half_mse)
    return model


def run_split(seed: int, epochs: int) -> list[dict]:
    """Every rule on one split: epochs run, test MSE, and the Keras-against-path difference."""
    import keras

    from keras_regkit.callbacks import (
        DiscrepancyStopping,
        EarlyStopping,
        SmoothedDiscrepancyStopping,
        YaoStoppingTime,
    )
    from keras_regkit.stopping import FeatureMapKernel, KernelGradientDescent, estimate_noise_level

    (x, y), (x_test, y_test) = load_split(seed)
    phi = fourier_features(x, seed)
    features, features_test = phi(x).astype("float32"), phi(x_test).astype("float32")
    path = KernelGradientDescent(FeatureMapKernel(phi)).fit(x, y, max_iter=epochs)
    kappa = path.kappa_
    sigma = estimate_noise_level(x, y)
    test_errors = path.mse(x_test, y_test)  # every t in 0..epochs
    best_t = int(np.argmin(test_errors))
    rows = [dict(seed=seed, rule="best epoch in hindsight", epochs=best_t,
                 test_mse=float(test_errors[best_t]), difference=0.0, sigma=sigma)]

    def keras_run(rule, callback, reference, **fit_kwargs):
        model = linear_model(kappa)
        fit_x = fit_kwargs.pop("fit_x", features)
        fit_y = fit_kwargs.pop("fit_y", y)
        model.fit(fit_x, fit_y, batch_size=len(fit_x), epochs=epochs, verbose=0, shuffle=False,
                  callbacks=[callback], **fit_kwargs)
        steps = (int(callback.best_epoch) + 1 if isinstance(callback, EarlyStopping)
                 and callback.best_epoch is not None
                 else int(keras.ops.convert_to_numpy(model.optimizer.iterations)))
        prediction = model.predict(features_test, verbose=0, batch_size=len(features_test))[:, 0]
        difference = float(np.max(np.abs(prediction - reference.predict(x_test, t=steps))))
        rows.append(dict(seed=seed, rule=rule, epochs=steps, test_mse=float(np.mean((prediction - y_test) ** 2)),
                         difference=difference, sigma=sigma))
        if isinstance(callback, SmoothedDiscrepancyStopping):  # the same time as the kernel path's rule
            rows[-1]["path_time"] = path.select("smoothed_discrepancy", sigma=sigma, power=callback.power_)
            rows[-1]["power"] = callback.power_

    keras_run(f"YaoStoppingTime (r = {R})", YaoStoppingTime(r=R, theta=0.0, unit="steps"), path)
    keras_run("DiscrepancyStopping (sigma estimated)", DiscrepancyStopping(sigma=sigma, tau=0.5), path)
    for power, label in (("auto", "power auto"), (1.0, "power 1")):
        keras_run(f"SmoothedDiscrepancyStopping ({label}, sigma estimated)",
                  SmoothedDiscrepancyStopping(features, y, sigma=sigma, power=power), path)
    # EarlyStopping trains on the first 80% of the training part (Keras's validation_split
    # takes the last 20%); its reference path is fitted on the same 80%.
    cut = int(round(0.8 * len(x)))
    held_path = KernelGradientDescent(FeatureMapKernel(phi), kappa=kappa).fit(x[:cut], y[:cut], max_iter=epochs)
    stopper = EarlyStopping(monitor="val_loss", patience=PATIENCE, restore_best_weights=True)
    keras_run(f"EarlyStopping (20% validation, patience {PATIENCE})", stopper, held_path,
              validation_split=0.2)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    order = []
    for row in rows:
        if row["rule"] not in order:
            order.append(row["rule"])
    best = {row["seed"]: row["test_mse"] for row in rows if row["rule"] == "best epoch in hindsight"}
    table = []
    for rule in order:
        picked = [row for row in rows if row["rule"] == rule]
        table.append(dict(
            rule=rule,
            epochs=float(np.median([r["epochs"] for r in picked])),
            epochs_range=(min(r["epochs"] for r in picked), max(r["epochs"] for r in picked)),
            test_mse=float(np.median([r["test_mse"] for r in picked])),
            ratio=float(np.median([r["test_mse"] / best[r["seed"]] for r in picked])),
            difference=float(max(r["difference"] for r in picked)),
        ))
    return table


def format_table(table: list[dict], splits: int, sigma: float) -> str:
    lines = [
        f"Diabetes (309 train / 133 test patients), {FEATURES} random Fourier features, full-batch SGD "
        f"with YaoStepSchedule; medians over {splits} splits; sigma estimated {sigma:.3f} (median).",
        "",
        "| rule | epochs (median, range) | test MSE | test MSE / best | max abs(Keras - KernelGradientDescent) |",
        "|---|---|---|---|---|",
    ]
    for row in table:
        low, high = row["epochs_range"]
        difference = "path itself" if row["rule"] == "best epoch in hindsight" else f"{row['difference']:.1e}"
        lines.append(f"| {row['rule']} | {row['epochs']:.0f} ({low}-{high}) | {row['test_mse']:.3f} "
                     f"| {row['ratio']:.2f}x | {difference} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 splits, at most 300 epochs")
    parser.add_argument("--out", default="yao_on_real_data_out", help="output folder")
    parser.add_argument("--splits", type=int, default=None, help="random splits (default 10; quick 2)")
    parser.add_argument("--epochs", type=int, default=None, help="epoch cap (default 2000; quick 300)")
    args = parser.parse_args(argv)
    splits = args.splits or (2 if args.quick else 10)
    epochs = args.epochs or (300 if args.quick else 2000)
    if splits < 1 or epochs < 1:
        parser.error(f"--splits and --epochs must be >= 1, got {splits} and {epochs}")
    start = time.perf_counter()
    rows = [row for seed in range(splits) for row in run_split(seed, epochs)]
    table = summarize(rows)
    sigma = float(np.median([r["sigma"] for r in rows]))
    text = format_table(table, splits, sigma)
    smoothed = [r for r in rows if "path_time" in r]
    powers = [r["power"] for r in smoothed if r["rule"].startswith("SmoothedDiscrepancyStopping (power auto")]
    text += (f"\n\nSmoothedDiscrepancyStopping stopped at KernelGradientDescent's smoothed_discrepancy time "
             f"in {sum(r['epochs'] == r['path_time'] for r in smoothed)} of {len(smoothed)} runs; "
             f"power 'auto' {min(powers):.3f}-{max(powers):.3f}.")
    print(text)
    print(f"\n{time.perf_counter() - start:.0f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    return table


if __name__ == "__main__":
    main()
