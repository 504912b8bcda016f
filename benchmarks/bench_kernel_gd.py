"""The whole kernel gradient-descent path: KernelGradientDescent against a plain NumPy loop.

Both produce, for every iteration ``t = 0..T``, the training mean squared error and
the mean squared error on a validation set, plus the final coefficients
``alpha_T``, for the recursion ``alpha_{t+1} = alpha_t - (gamma_t/m)(K alpha_t - y)``
with Yao's decaying steps (``theta = 0.5``, the general code path) and with constant
steps (``theta = 0``, closed form).

* ``loop``: the recursion itself, one ``K @ alpha`` (and one ``K_val @ alpha``) per step;
* ``ours``: ``KernelGradientDescent.fit`` (kernel matrix, one eigendecomposition,
  step-size sums) + ``training_mse()`` + ``mse(X_val, y_val)`` + ``coefficients(T)``.

The kernel matrices are built once outside the timed loop for the baseline (its best
case); ours includes building them. Reported: medians over repeats, the ratio
loop/ours measured in the same process, the largest relative difference between
the two outputs, and the exponent ``a`` of a least-squares fit ``time ~ m^a``.

Run: ``python benchmarks/bench_kernel_gd.py [--quick] [--repeats 5] [--loop-repeats 1]``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from keras_regkit.stopping import KernelGradientDescent, SobolevTorusKernel  # noqa: E402


def problem(m: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x, x_val = rng.uniform(size=m), rng.uniform(size=500)
    f = lambda a: np.sin(2 * np.pi * a) + 0.5 * np.abs(np.cos(3 * np.pi * a))  # noqa: E731
    return x, f(x) + 0.3 * rng.normal(size=m), x_val, f(x_val) + 0.3 * rng.normal(size=500)


def numpy_loop(gram, gram_val, y, y_val, steps, theta, kappa_squared):
    m = len(y)
    alpha = np.zeros(m)
    train, val = np.empty(steps + 1), np.empty(steps + 1)
    for t in range(steps + 1):
        fitted = gram @ alpha
        train[t] = np.mean((fitted - y) ** 2)
        val[t] = np.mean((gram_val @ alpha - y_val) ** 2)
        if t < steps:
            alpha -= (1.0 / (kappa_squared * (t + 1) ** theta)) / m * (fitted - y)
    return train, val, alpha


def ours(kernel, x, y, x_val, y_val, steps, theta):
    model = KernelGradientDescent(kernel, theta=theta).fit(x, y, max_iter=steps)
    return model.training_mse(), model.mse(x_val, y_val), model.coefficients(steps)


def timed(function, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def relative_difference(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-repeats", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10_000)
    args = parser.parse_args()
    sizes = [250, 500] if args.quick else [500, 1000, 2000, 4000]
    steps = 500 if args.quick else args.steps
    kernel = SobolevTorusKernel(1)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; T = {steps}")
    print("| theta | m | ours (s) | loop (s) | loop / ours | max rel. diff (train, val, alpha) |")
    print("|---|---|---|---|---|---|")
    results = {}
    for theta in (0.5, 0.0):
        for m in sizes:
            x, y, x_val, y_val = problem(m)
            gram, gram_val = kernel(x, x), kernel(x_val, x)
            kappa_squared = float(np.max(np.diag(gram)))
            ours_time, (train, val, alpha) = timed(
                lambda: ours(kernel, x, y, x_val, y_val, steps, theta), args.repeats)
            loop_repeats = args.loop_repeats if m == max(sizes) else max(args.loop_repeats, 3)
            loop_time, (train_ref, val_ref, alpha_ref) = timed(
                lambda: numpy_loop(gram, gram_val, y, y_val, steps, theta, kappa_squared),
                loop_repeats)
            results[theta, m] = (ours_time, loop_time)
            differences = ", ".join(f"{relative_difference(a, b):.1e}" for a, b in
                                    ((train, train_ref), (val, val_ref), (alpha, alpha_ref)))
            print(f"| {theta} | {m} | {ours_time:.2f} | {loop_time:.2f} ({loop_repeats}x) | "
                  f"{loop_time / ours_time:.1f} | {differences} |", flush=True)
        logs = np.log(sizes)
        for name, index in (("ours", 0), ("loop", 1)):
            exponent = np.polyfit(logs, np.log([results[theta, m][index] for m in sizes]), 1)[0]
            print(f"theta={theta}: {name} time ~ m^{exponent:.2f}")

    long_paths(kernel, m=500 if args.quick else 4000, repeats=args.repeats)


def long_paths(kernel, m: int, repeats: int) -> None:
    """theta = 0.5 to 10^8 (series beyond the stored 2^20 iterations) against the 10^6 ceiling.

    Each variant fits the path and evaluates the training error and a validation error on a
    geometric checkpoint grid (ratio 1.05) up to its ``max_iter``, as the hold-out and oracle
    rules do.
    """
    from keras_regkit.stopping import checkpoint_grid

    x, y, x_val, y_val = problem(m)
    rows = {}
    for max_iter in (10**6, 10**8):
        grid = checkpoint_grid(max_iter, dense=30, ratio=1.05)

        def run():
            model = KernelGradientDescent(kernel, theta=0.5).fit(x, y, max_iter=max_iter)
            return model.training_mse(grid), model.mse(x_val, y_val, grid)

        rows[max_iter] = timed(run, repeats)[0], len(grid)
    base = rows[10**6][0]
    print(f"\ntheta = 0.5, m = {m}: fit + training and validation error on a 1.05 grid")
    print("| max_iter | checkpoints | time (s) | ratio to 10^6 |")
    print("|---|---|---|---|")
    for max_iter, (seconds, count) in rows.items():
        print(f"| 10^{int(round(math.log10(max_iter)))} | {count} | {seconds:.2f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
