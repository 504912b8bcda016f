"""Yao et al.'s step size, stopping time and rates."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_regkit.stopping import (
    capacity_optimal_rate_exponent,
    capacity_optimal_stopping_time,
    yao_rate,
    yao_rate_exponent,
    yao_step_size,
    yao_stopping_time,
)


def test_step_size_values():
    assert yao_step_size(0, 2.0) == 0.25
    assert yao_step_size(3, 2.0, theta=0.5) == pytest.approx(0.125)
    np.testing.assert_allclose(yao_step_size(np.arange(4), 1.0, 0.5), 1 / np.sqrt([1, 2, 3, 4]))


def test_stopping_time_default_is_the_restated_rule():
    # ceil(m^(1/((2r+2)(1-theta))))
    assert yao_stopping_time(3200, 1.0) == math.ceil(3200**0.25)  # 8
    assert yao_stopping_time(3200, 0.5, theta=0.5) == math.ceil(3200 ** (1 / 1.5))
    assert yao_stopping_time(1000, 0.5) == 10  # 1000^(1/3) is 9.999... in floating point
    assert yao_stopping_time(1, 0.3) == 1
    assert yao_stopping_time(100, 1.0, exponent_offset=3.0, constant=2.0) == math.ceil(
        2 * 100 ** (1 / 5))


def test_rates():
    assert yao_rate_exponent(1.0) == pytest.approx(0.5)
    assert yao_rate_exponent(1.0, exponent_offset=3.0) == pytest.approx(0.4)
    assert yao_rate(100, 1.0) == pytest.approx(0.1)
    np.testing.assert_allclose(yao_rate([1, 10000], 1.0, constant=3.0), [3.0, 0.03])
    assert capacity_optimal_rate_exponent(1.0, 2.0) == pytest.approx(0.8)
    assert capacity_optimal_stopping_time(3200, 1.0, 2.0) == math.ceil(3200**0.4)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 10**6), r=st.floats(0.05, 5.0), theta=st.floats(0.0, 0.95),
       extra=st.integers(1, 10))
def test_stopping_time_monotone(m, r, theta, extra):
    t = yao_stopping_time(m, r, theta)
    assert t >= 1
    assert yao_stopping_time(m + extra, r, theta) >= t  # more data, later stop
    assert yao_stopping_time(m, r * 1.5, theta) <= t  # smoother target, earlier stop
    assert yao_stopping_time(m, r, min(theta + 0.04, 0.99)) >= t  # smaller steps, later stop
    # the sum of steps at t* grows like m^(1/(2r+2)): t*^(1-theta) ~ m^(1/(2r+2))
    assert t ** (1 - theta) >= m ** (1 / (2 * r + 2)) * (1 - 1e-9)


@settings(max_examples=40, deadline=None)
@given(t=st.integers(0, 10**7), kappa=st.floats(0.1, 10.0), theta=st.floats(0.0, 0.99))
def test_step_size_decreasing_and_bounded(t, kappa, theta):
    gamma = yao_step_size(t, kappa, theta)
    assert 0 < gamma <= 1 / kappa**2 * (1 + 1e-12)
    assert yao_step_size(t + 1, kappa, theta) <= gamma


@pytest.mark.parametrize("call, match", [
    (lambda: yao_stopping_time(100, 0.0), r"yao_stopping_time: r must be in \(0, inf\), got 0.0"),
    (lambda: yao_stopping_time(100, -1), "r must be"),
    (lambda: yao_stopping_time(100, 1.0, theta=1.0), r"theta must be in \[0, 1\), got 1.0"),
    (lambda: yao_stopping_time(100, 1.0, theta=-0.1), "theta must be"),
    (lambda: yao_stopping_time(0, 1.0), "m must be an integer >= 1, got 0"),
    (lambda: yao_stopping_time(100, 1.0, constant=0.0), "constant must be"),
    (lambda: yao_stopping_time(100, 1.0, exponent_offset=0.0), "exponent_offset must be"),
    (lambda: yao_step_size(-1, 1.0), "t must be >= 0"),
    (lambda: yao_step_size(0.5, 1.0), "t must be an integer"),
    (lambda: yao_step_size(0, 0.0), "kappa must be"),
    (lambda: yao_step_size(0, 1.0, theta=1.5), "theta must be"),
    (lambda: yao_rate(0, 1.0), "m must be >= 1"),
    (lambda: capacity_optimal_rate_exponent(1.0, 1.0), "b must be"),
])
def test_bad_values(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_types():
    with pytest.raises(TypeError, match="m must be an integer"):
        yao_stopping_time("100", 1.0)
    with pytest.raises(TypeError, match="r must be a real number"):
        yao_stopping_time(100, "1")
