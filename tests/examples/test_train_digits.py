"""examples/train_digits.py: the minimal end-to-end script trains, saves and reloads."""

import re

import pytest


@pytest.mark.slow
def test_train_digits_quick(run_example):
    result, out = run_example("train_digits")
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", result.stdout).group(1))
    assert accuracy > 0.6
    assert (out / "model.keras").stat().st_size > 0
