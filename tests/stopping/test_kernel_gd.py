"""KernelGradientDescent against the plain NumPy recursion; kernels; stopping rules."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_regkit.stopping import (
    FeatureMapKernel,
    GaussianKernel,
    KernelGradientDescent,
    LaplacianKernel,
    SobolevTorusKernel,
    checkpoint_grid,
    eigenvalue_decay,
    estimate_noise_level,
    smoothing_power,
)


def numpy_recursion(gram, y, max_iter, theta, kappa_squared):
    """alpha_{t+1} = alpha_t - (gamma_t/m)(K alpha_t - y), all iterates."""
    m = len(y)
    alpha = np.zeros_like(y, dtype=np.float64)
    path = [alpha.copy()]
    for t in range(max_iter):
        gamma = 1.0 / (kappa_squared * (t + 1) ** theta)
        alpha = alpha - gamma / m * (gram @ alpha - y)
        path.append(alpha.copy())
    return np.array(path)


def data(rng, m=40, d=1):
    x = rng.uniform(size=(m, d))
    y = np.sin(2 * np.pi * x[:, 0]) + 0.2 * rng.normal(size=m)
    return x, y


@pytest.mark.parametrize("kernel", [GaussianKernel(0.2), LaplacianKernel(0.5),
                                    SobolevTorusKernel(1), SobolevTorusKernel(2)])
@pytest.mark.parametrize("theta", [0.0, 0.5])
def test_path_matches_numpy_recursion(rng, kernel, theta):
    x, y = data(rng)
    gram = kernel(x, x)
    reference = numpy_recursion(gram, y, 300, theta, gram.diagonal().max())
    model = KernelGradientDescent(kernel, theta=theta).fit(x, y, max_iter=300)
    times = np.arange(301)
    alpha = model.coefficients(times)
    scale = np.linalg.norm(reference, axis=1)
    scale[0] = 1.0
    assert np.max(np.linalg.norm(alpha - reference, axis=1) / scale) < 1e-6
    fitted = reference @ gram
    np.testing.assert_allclose(model.training_mse(), np.mean((fitted - y) ** 2, axis=1),
                               rtol=1e-6)
    x_new = rng.uniform(size=(7, 1))
    np.testing.assert_allclose(model.predict(x_new, t=123), kernel(x_new, x) @ reference[123],
                               rtol=1e-6, atol=1e-12)


def test_user_kappa_and_multi_output(rng):
    x, y = data(rng, m=30, d=2)
    y2 = np.stack([y, -2 * y + 1], axis=1)
    kernel = GaussianKernel(0.5)
    gram = kernel(x, x)
    model = KernelGradientDescent(kernel, theta=0.3, kappa=1.3).fit(x, y2, max_iter=50)
    reference = numpy_recursion(gram, y2, 50, 0.3, 1.3**2)
    np.testing.assert_allclose(model.coefficients(50), reference[50], rtol=1e-8)
    assert model.predict(x, t=np.array([0, 50])).shape == (2, 30, 2)


def test_predict_zero_at_t0_and_first_step_uses_gamma0(rng):
    x, y = data(rng)
    model = KernelGradientDescent(GaussianKernel(0.3), theta=0.5).fit(x, y, max_iter=5)
    np.testing.assert_array_equal(model.predict(x, t=0), np.zeros(len(y)))
    # alpha_1 = gamma_0 y / m with gamma_0 = 1 / kappa^2 = 1 for a Gaussian kernel
    np.testing.assert_allclose(model.coefficients(1), y / len(y), rtol=1e-12)
    assert model.stopping_time_ == 5  # no rule: the last iterate
    np.testing.assert_allclose(model.predict(x), model.predict(x, t=5))


def test_feature_map_kernel_is_the_gram_of_features(rng):
    x = rng.uniform(size=(6, 2))
    features = lambda a: np.concatenate([a, np.sin(a)], axis=1)  # noqa: E731
    np.testing.assert_allclose(FeatureMapKernel(features)(x, x),
                               features(x) @ features(x).T)


def test_sobolev_kernel_closed_form_and_eigenvalues():
    x = np.array([0.0, 0.13, 0.5, 0.71])
    k = np.arange(1, 100_001, dtype=np.float64)
    for order in (1, 2, 3):
        kernel = SobolevTorusKernel(order)
        difference = x[:, None] - x[None, :]
        series = 1 + 2 * np.sum(np.cos(2 * np.pi * k * difference[..., None]) / k ** (2 * order),
                                axis=-1)
        np.testing.assert_allclose(kernel(x, x), series, atol=2e-5)
        zeta = {1: math.pi**2 / 6, 2: math.pi**4 / 90, 3: math.pi**6 / 945}[order]
        assert kernel.kappa_squared_1d == pytest.approx(1 + 2 * zeta)
        assert kernel.eigenvalue(3) == pytest.approx(3.0 ** (-2 * order))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), m=st.integers(2, 25), theta=st.sampled_from([0.0, 0.3, 0.7]),
       bandwidth=st.floats(0.05, 2.0))
def test_path_properties(seed, m, theta, bandwidth):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(m, 1))
    y = rng.normal(size=m)
    model = KernelGradientDescent(GaussianKernel(bandwidth), theta=theta).fit(x, y, max_iter=200)
    mse = model.training_mse()
    assert mse[0] == pytest.approx(np.mean(y**2))
    assert np.all(np.diff(mse) <= 1e-12 * mse[0])  # the training error never increases
    reference = numpy_recursion(model.kernel(x, x), y, 200, theta, 1.0)
    scale = max(np.linalg.norm(reference[200]), 1e-12)
    assert np.linalg.norm(model.coefficients(200) - reference[200]) / scale < 1e-6


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), sigma=st.floats(0.05, 1.0))
def test_rules_stay_in_range_and_discrepancy_is_the_first_crossing(seed, sigma):
    rng = np.random.default_rng(seed)
    x, y = data(rng, m=30)
    model = KernelGradientDescent(GaussianKernel(0.2)).fit(x, y, max_iter=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rule warns when it never crosses
        t = model.select("discrepancy", sigma=sigma)
        raskutti = model.select("raskutti", sigma=sigma)
    mse = model.training_mse()
    crossed = np.flatnonzero(mse <= sigma**2)
    if crossed.size:
        assert t == crossed[0]
    else:
        assert t == 400
    assert 0 <= raskutti <= 400


def test_raskutti_rule_matches_its_definition(rng):
    x, y = data(rng, m=50)
    model = KernelGradientDescent(SobolevTorusKernel(1)).fit(x, y, max_iter=2000)
    sigma = 0.2
    t_hat = model.select("raskutti", sigma=sigma)
    eigenvalues = np.maximum(model.eigenvalues_, 0)
    eta = model.step_sums(np.arange(2001))

    def exceeded(t):
        return t > 0 and math.sqrt(np.mean(np.minimum(eigenvalues, 1 / eta[t]))) > 1 / (
            2 * math.e * sigma * eta[t])

    first = next(t for t in range(2001) if exceeded(t))
    assert t_hat == first - 1
    assert model.noise_level_ == sigma
    # A rule that needs no sigma leaves no stale one behind.
    model.select("yao", r=0.5)
    assert model.noise_level_ is None
    model.select("discrepancy")
    assert model.noise_level_ == pytest.approx(estimate_noise_level(x, y))


def test_yao_rule_and_clamp(rng):
    x, y = data(rng, m=64)
    model = KernelGradientDescent(GaussianKernel(0.3), theta=0.5).fit(x, y, max_iter=50,
                                                                      rule="yao", r=0.5)
    assert model.stopping_time_ == math.ceil(64 ** (1 / 1.5)) and model.rule_ == "yao"
    with pytest.warns(UserWarning, match="max_iter"):
        assert model.select("yao", r=0.5, constant=100.0) == 50


def test_holdout_and_oracle(rng):
    def target(a):
        return np.sin(2 * np.pi * a[:, 0])

    x = rng.uniform(size=(80, 1))
    y = target(x) + 0.3 * rng.normal(size=80)
    x_val = rng.uniform(size=(200, 1))
    y_val = target(x_val) + 0.3 * rng.normal(size=200)
    x_test = np.linspace(0, 1, 500)[:, None]
    model = KernelGradientDescent(GaussianKernel(0.1)).fit(x, y, max_iter=3000)
    oracle = model.select("oracle", X_test=x_test, f_test=target(x_test), checkpoints="all")
    errors = np.mean((model.predict(x_test, t=np.arange(3001)) - target(x_test)) ** 2, axis=1)
    assert oracle == int(np.argmin(errors))
    holdout = model.select("holdout", X_val=x_val, y_val=y_val, patience=50)
    assert 0 < holdout < 3000
    assert errors[holdout] < 3 * errors[oracle]
    # a risk callable on coefficient rows gives the same oracle
    cross = model.kernel(x_test, x)
    same = model.select("oracle", risk=lambda a: np.mean((a @ cross.T - target(x_test)) ** 2, 1),
                        checkpoints="all")
    assert same == oracle


def test_noise_level_estimate(rng):
    x = rng.uniform(size=(2000, 1))
    y = np.sin(2 * np.pi * x[:, 0]) + 0.3 * rng.normal(size=2000)
    assert estimate_noise_level(x, y) == pytest.approx(0.3, rel=0.08)


def test_checkpoint_grid():
    grid = checkpoint_grid(10_000)
    assert grid[0] == 0 and grid[-1] == 10_000
    assert np.all(np.diff(grid) > 0) and set(range(101)) <= set(grid.tolist())
    assert np.all(grid[1:][grid[1:] > 101] / grid[:-1][grid[1:] > 101] < 1.03)
    np.testing.assert_array_equal(checkpoint_grid(5), np.arange(6))


@pytest.mark.parametrize("gram, match", [
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive semi-definite"),
    (np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
])
def test_rejects_bad_kernel_matrices(gram, match):
    model = KernelGradientDescent(lambda a, b: gram)
    with pytest.raises(ValueError, match=f"the kernel matrix must be {match}"):
        model.fit(np.zeros((2, 1)), np.zeros(2))


@pytest.mark.parametrize("call, match", [
    (lambda: KernelGradientDescent(GaussianKernel(), theta=1.0), r"theta must be in \[0, 1\)"),
    (lambda: KernelGradientDescent(GaussianKernel(), kappa=0.0), "kappa must be"),
    (lambda: KernelGradientDescent(GaussianKernel()).fit(np.zeros((3, 1)), np.zeros(4)),
     "X and y must have the same number of rows"),
    (lambda: KernelGradientDescent(GaussianKernel()).fit(np.zeros((3, 1)), np.zeros(3),
                                                         max_iter=0), "max_iter must be"),
    (lambda: KernelGradientDescent(GaussianKernel(), kappa=0.1).fit(np.zeros((3, 1)),
                                                                    np.zeros(3)),
     "diverge|converge"),
    (lambda: GaussianKernel(bandwidth=-1.0), "bandwidth must be"),
    (lambda: SobolevTorusKernel(order=4), "order must be one of"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_rule_arguments(rng):
    x, y = data(rng)
    model = KernelGradientDescent(GaussianKernel(0.3)).fit(x, y, max_iter=20)
    with pytest.raises(ValueError, match=r"sigma must be in \(0, inf\), got 0.0"):
        model.select("discrepancy", sigma=0.0)
    with pytest.raises(ValueError, match="sigma must be"):
        model.select("raskutti", sigma=-1.0)
    with pytest.raises(ValueError, match="r must be"):
        model.select("yao", r=0.0)
    with pytest.raises(ValueError, match="bad arguments for rule 'yao'"):
        model.select("yao")
    with pytest.raises(ValueError, match="rule must be one of"):
        model.select("cross-validation")
    with pytest.raises(ValueError, match="needs X_test and f_test"):
        model.select("oracle")
    with pytest.raises(ValueError, match=r"t must be integers in \[0, max_iter=20\]"):
        model.predict(x, t=21)
    with pytest.raises(ValueError, match="call fit"):
        KernelGradientDescent(GaussianKernel()).predict(x, t=0)


def test_bad_smoothed_discrepancy_and_validation_arguments(rng):
    x, y = data(rng)
    model = KernelGradientDescent(GaussianKernel(0.3)).fit(x, y, max_iter=20)
    with pytest.raises(ValueError, match=r"sigma must be in \(0, inf\), got -1.0"):
        model.select("smoothed_discrepancy", sigma=-1.0)
    with pytest.raises(ValueError, match=r"power must be in \[0, 1\], got 1.5"):
        model.select("smoothed_discrepancy", power=1.5)
    with pytest.raises(ValueError, match="power must be one of 'auto', got 'kernel'"):
        model.select("smoothed_discrepancy", power="kernel")
    with pytest.raises(ValueError, match=r"tau must be in \(0, inf\), got 0.0"):
        model.select("smoothed_discrepancy", tau=0.0)
    with pytest.raises(ValueError, match="bad arguments for rule 'smoothed_discrepancy'"):
        model.select("smoothed_discrepancy", patience=3)
    with pytest.raises(ValueError, match="rule must be one of .*'smoothed_discrepancy'.*got 'smoothed'"):
        model.select("smoothed")
    with pytest.raises(ValueError, match=r"X_val must have 1 columns like the training inputs, "
                                         r"got shape \(5, 2\)"):
        model.select("holdout", X_val=np.zeros((5, 2)), y_val=np.zeros(5))
    with pytest.raises(ValueError, match=r"y_val must have shape \(5,\) .*got \(4,\)"):
        model.select("holdout", X_val=np.zeros((5, 1)), y_val=np.zeros(4))
    with pytest.raises(ValueError, match=r"y_val must have shape \(5,\) .*got \(5, 2\)"):
        model.select("holdout", X_val=np.zeros((5, 1)), y_val=np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"f_test must have shape \(3,\)"):
        model.select("oracle", X_test=np.zeros((3, 1)), f_test=np.zeros(2))
    with pytest.raises(ValueError, match="X must have 1 columns"):
        model.mse(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"power must be in \[0, 1\]"):
        model.smoothed_residuals(3, power=-0.5)


def smoothed_reference(gram, path, y, power):
    """(1/m) r^T (K/m)^p r along a coefficient path, with (K/m)^p from NumPy's eigh."""
    m = len(y)
    values, vectors = np.linalg.eigh(gram / m)
    weights = np.where(values > 0, np.maximum(values, 0.0), 0.0) ** power if power else 1.0
    residuals = y[None, :] - path @ gram
    projected = residuals @ vectors
    return np.sum(weights * projected**2, axis=1) / m, np.sum(weights * np.ones(m)) / m


@pytest.mark.parametrize("theta", [0.0, 0.5])
@pytest.mark.parametrize("power", [0.0, 0.4, 1.0])
def test_smoothed_residuals_and_rule_match_numpy(rng, theta, power):
    x, y = data(rng, m=50)
    kernel = SobolevTorusKernel(1)
    gram = kernel(x, x)
    path = numpy_recursion(gram, y, 400, theta, gram.diagonal().max())
    expected, trace = smoothed_reference(gram, path, y, power)
    model = KernelGradientDescent(kernel, theta=theta).fit(x, y, max_iter=400)
    np.testing.assert_allclose(model.smoothed_residuals(power=power), expected, rtol=1e-6)
    assert np.all(np.diff(expected) <= 1e-12 * expected[0])  # non-increasing
    # a sigma whose threshold lies half-way between the values at t = 24 and t = 25
    target = 25
    threshold = (expected[target - 1] + expected[target]) / 2
    sigma = math.sqrt(threshold / trace)
    assert model.select("smoothed_discrepancy", sigma=sigma, power=power) == target
    assert model.smoothing_power_ == power and model.noise_level_ == pytest.approx(sigma)
    crossed = expected <= 0.9 * threshold
    assert crossed[-1]
    assert model.select("smoothed_discrepancy", sigma=sigma, tau=0.9, power=power) == \
        int(np.argmax(crossed))
    if power == 0.0:
        assert model.select("discrepancy", sigma=sigma) == target


def test_smoothed_discrepancy_auto_power_unknown_sigma_and_extremes(rng):
    x, y = data(rng, m=120)
    model = KernelGradientDescent(SobolevTorusKernel(1)).fit(x, y, max_iter=2000)
    t = model.select("smoothed_discrepancy")
    assert model.smoothing_power_ == smoothing_power(model.eigenvalues_)
    assert model.noise_level_ == estimate_noise_level(x, y)
    assert t == model.select("smoothed_discrepancy", sigma=estimate_noise_level(x, y),
                             power=smoothing_power(model.eigenvalues_))
    assert model.select("smoothed_discrepancy", sigma=100.0) == 0  # y is all noise at that level
    with pytest.warns(UserWarning, match="'smoothed_discrepancy' asks for t=2001 > max_iter=2000"):
        assert model.select("smoothed_discrepancy", sigma=1e-9) == 2000
    assert model.rule_ == "smoothed_discrepancy"


@settings(max_examples=25, deadline=None)
@given(decay=st.floats(1.1, 5.0), m=st.integers(200, 3000), scale=st.floats(1e-3, 1e3))
def test_eigenvalue_decay_recovers_a_power_law(decay, m, scale):
    eigenvalues = scale * np.arange(1, m + 1, dtype=np.float64) ** -decay
    np.random.default_rng(0).shuffle(eigenvalues)  # any order
    fitted = math.floor(m ** (1.0 / decay) * (1 - 1e-12)) - 1  # j = 2.. with lambda_j >= lambda_1/m
    if fitted >= 4:
        assert eigenvalue_decay(eigenvalues) == pytest.approx(decay, rel=1e-9)
        assert smoothing_power(eigenvalues) == pytest.approx(min(1.0, max(0.05, 0.75 / decay)))
    elif fitted <= 1:  # too short a spectrum above lambda_1 / m: effectively of small rank
        assert eigenvalue_decay(eigenvalues) is None
        assert smoothing_power(eigenvalues) == 1.0


def test_smoothing_power_on_short_or_flat_spectra():
    assert eigenvalue_decay(np.array([1.0, 0.5, 0.0, 0.0, 0.0])) is None
    assert smoothing_power(np.array([1.0, 0.5, 0.0, 0.0, 0.0])) == 1.0  # rank 2: K^(1/2)
    assert smoothing_power(np.zeros(10)) == 1.0
    assert smoothing_power(np.ones(50)) == 1.0  # no decay: clipped at 1
    assert smoothing_power(np.exp(-np.arange(200.0))) == pytest.approx(0.75 / eigenvalue_decay(
        np.exp(-np.arange(200.0))))


def test_smoothed_rule_ignores_the_null_space_of_a_low_rank_kernel(rng):
    """With p > 0 the part of y outside the range of K has weight 0: the rule still fires."""
    x, y = data(rng, m=60)
    y = y + 0.5 * np.cos(6 * np.pi * x[:, 0])  # outside the range of the kernel
    kernel = FeatureMapKernel(lambda z: np.concatenate([np.cos(2 * np.pi * z), np.sin(2 * np.pi * z),
                                                        np.ones_like(z)], axis=1))
    model = KernelGradientDescent(kernel).fit(x, y, max_iter=5000)
    sigma = 0.2
    floor = model.training_mse(5000)  # the residual outside the 3-dimensional range
    assert floor > sigma**2  # the plain principle never fires
    with pytest.warns(UserWarning, match="'discrepancy' asks for t=5001"):
        model.select("discrepancy", sigma=sigma)
    assert model.select("smoothed_discrepancy", sigma=sigma, power=1.0) < 5000


def test_reuse_shares_the_decomposition(rng):
    x, y = data(rng, m=30)
    kernel = GaussianKernel(0.3)
    first = KernelGradientDescent(kernel, theta=0.5).fit(x, y, max_iter=200)
    second = KernelGradientDescent(kernel, theta=0.5).fit(x, 2 * y, max_iter=200, reuse=first)
    assert second._vectors is first._vectors and second._path is first._path
    np.testing.assert_allclose(second.coefficients(150), 2 * first.coefficients(150), rtol=1e-12)
    constant = KernelGradientDescent(kernel).fit(x, y, max_iter=10**9, reuse=first)
    reference = numpy_recursion(kernel(x, x), y, 100, 0.0, 1.0)
    np.testing.assert_allclose(constant.coefficients(100), reference[100], rtol=1e-8)
    assert constant.training_mse(10**9) < constant.training_mse(100)  # any t, no storage
    with pytest.raises(ValueError, match="reuse must be a model fitted on the same X"):
        KernelGradientDescent(kernel).fit(x[:-1], y[:-1], reuse=first)


def test_mse_along_the_path(rng):
    x, y = data(rng, m=40)
    x_val, y_val = data(rng, m=15)
    kernel = LaplacianKernel(0.3)
    model = KernelGradientDescent(kernel, theta=0.5).fit(x, y, max_iter=120)
    reference = numpy_recursion(kernel(x, x), y, 120, 0.5, 1.0) @ kernel(x_val, x).T
    np.testing.assert_allclose(model.mse(x_val, y_val), np.mean((reference - y_val) ** 2, axis=1),
                               rtol=1e-9)
    np.testing.assert_allclose(model.mse(x, y, t=[0, 7]), model.training_mse(np.array([0, 7])),
                               rtol=1e-9)


@pytest.mark.parametrize("theta", [0.5, 0.25, 0.9])
def test_path_beyond_the_stored_iterations_matches_the_recursion(rng, monkeypatch, theta):
    """Past the stored step-size sums, the series with Euler-Maclaurin power sums is the path."""
    from keras_regkit.stopping import kernel_gd

    x, y = data(rng, m=30)
    kernel = GaussianKernel(0.3)
    gram = kernel(x, x)
    monkeypatch.setattr(kernel_gd, "STORED_ITERATIONS", 1000)
    model = KernelGradientDescent(kernel, theta=theta).fit(x, y, max_iter=3000)
    assert model._path.stored == 1000 and hasattr(model._path, "beyond")
    reference = numpy_recursion(gram, y, 3000, theta, model.kappa_**2)
    times = np.array([0, 1, 999, 1000, 1001, 1002, 1777, 2999, 3000])
    np.testing.assert_allclose(model.coefficients(times), reference[times], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.training_mse(times),
                               [np.mean((gram @ reference[t] - y) ** 2) for t in times], rtol=1e-10)
    gammas = 1.0 / (model.kappa_**2 * np.arange(1, 3001) ** theta)
    np.testing.assert_allclose(model.step_sums(times), np.concatenate([[0.0], np.cumsum(gammas)])[times],
                               rtol=1e-12)


def test_path_to_ten_billion_iterations_without_storing_them(rng):
    from keras_regkit.stopping import kernel_gd

    x, y = data(rng, m=50)
    model = KernelGradientDescent(GaussianKernel(0.3), theta=0.5).fit(x, y, max_iter=10**10)
    assert model._path.power_sums.shape[0] == kernel_gd.STORED_ITERATIONS + 1
    times = np.array([10**6, 10**7, 10**8, 10**9, 10**10])
    errors = model.training_mse(times)
    assert np.all(np.diff(errors) <= 0) and np.all(errors >= 0)
    # sum_{k<t} 1/(kappa^2 sqrt(k+1)) = (2 sqrt(t) + zeta(1/2) + 1/(2 sqrt(t)) + ...) / kappa^2
    expected = (2 * np.sqrt(times) - 1.4603545088095868 + 0.5 / np.sqrt(times)) / model.kappa_**2
    np.testing.assert_allclose(model.step_sums(times), expected, rtol=1e-12)
    assert model.select("discrepancy", sigma=0.2) <= 10**10


def test_max_iter_beyond_what_a_slow_decay_can_represent(rng):
    x, y = data(rng)
    wide = GaussianKernel(100.0)  # nearly constant: gamma_0 * lambda_max(K/m) close to 1
    with pytest.raises(ValueError, match=r"max_iter must be <= 1048576 for theta=0.001.*got max_iter=2097152"):
        KernelGradientDescent(wide, theta=0.001).fit(x, y, max_iter=2**21)
    KernelGradientDescent(wide, theta=0.001).fit(x, y, max_iter=2**20)  # stored: fine
    KernelGradientDescent(wide, theta=0.1).fit(x, y, max_iter=2**21)  # steps shrink enough
