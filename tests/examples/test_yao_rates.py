"""Runs examples/yao_rates.py in quick mode and checks its outputs and Yao's slope criterion."""

import csv
import re

import pytest


@pytest.mark.slow
def test_yao_rates_quick(run_example):
    result, out = run_example("yao_rates", timeout=300)
    assert (out / "yao_rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "yao_rates.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * 2 * 3 * 5  # m x seeds x r x rules (theta = 0 in quick mode)
    by_case = {}
    for row in rows:
        by_case.setdefault((row["m"], row["seed"], row["r"], row["theta"]), {})[row["rule"]] = row
    for rules in by_case.values():
        # the oracle beats the conservative a-priori time on every sample
        assert float(rules["oracle"]["risk"]) <= float(rules["yao"]["risk"])
        assert int(rules["yao"]["t"]) < int(rules["oracle"]["t"])
    # the acceptance criterion on the slope at Yao's t*(m), for each r
    verdicts = re.findall(r"yao slope within 0.1 of \S+ or steeper: (\w+)", result.stdout)
    assert verdicts == ["yes"] * 3, result.stdout
