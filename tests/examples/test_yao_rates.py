"""Runs examples/yao_rates.py in quick mode: outputs, Yao's slope criterion, the 3x criterion."""

import csv
import re

import pytest


@pytest.mark.slow
def test_yao_rates_quick(run_example):
    result, out = run_example("yao_rates", timeout=300)
    assert (out / "yao_rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "yao_rates.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * 2 * 3 * 8  # m x seeds x r x rules (theta = 0 in quick mode)
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
    # raskutti, smoothed_discrepancy (power "auto") and holdout, with sigma estimated, are
    # within 3x of the oracle at m = 400 and 800 wherever the rule's guarantee covers the setting
    assert "within 3x of the oracle wherever covered: yes" in result.stdout, result.stdout
    smoothed = re.search(r"^ +smoothed \|(.*)$", result.stdout, re.M).group(1)
    ratios = [float(cell.strip(" !*")) for cell in smoothed.split("|")]
    assert len(ratios) == 6 and max(ratios) <= 3.0 and "*" not in smoothed
    powers = {float(row["power"]) for row in rows if row["rule"] == "smoothed"}
    assert all(0.25 < power < 0.5 for power in powers)  # inside (1/(2b), 1/b) for b = 2
