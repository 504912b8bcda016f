"""examples/precise_bn.py: recomputed statistics beat lagging moving averages."""

import re

import pytest


@pytest.mark.slow
def test_precise_bn_recovers_accuracy(run_example):
    result, out = run_example("precise_bn")
    rows = re.findall(r"\| ([0-9.]+) \| ([0-9.]+)% \| ([0-9.]+)% \| ([0-9.]+) \|", (out / "precise_bn.md").read_text())
    table = {float(m): (float(a), float(b)) for m, a, b, _ in rows}
    assert set(table) == {0.999, 0.99, 0.9}
    moving, recomputed = table[0.999]
    assert recomputed > 70.0 and recomputed > moving + 20.0
    assert abs(table[0.9][1] - recomputed) < 2.0  # training does not depend on the momentum
