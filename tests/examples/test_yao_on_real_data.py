"""Runs examples/yao_on_real_data.py in quick mode and checks its table."""

import math
import re

import pytest


@pytest.mark.slow
def test_yao_on_real_data_quick(run_example):
    result, out = run_example("yao_on_real_data")
    text = (out / "results.md").read_text()
    assert text.strip() in result.stdout
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| (.+?) \| (\d+) \((\d+)-(\d+)\) \| ([\d.]+) \| ([\d.]+)x \| (.+?) \|$", line)
        if match:
            rows[match.group(1)] = match.groups()[1:]
    assert list(rows) == ["best epoch in hindsight", "YaoStoppingTime (r = 0.5)",
                          "DiscrepancyStopping (sigma estimated)",
                          "SmoothedDiscrepancyStopping (power auto, sigma estimated)",
                          "SmoothedDiscrepancyStopping (power 1, sigma estimated)",
                          "EarlyStopping (20% validation, patience 50)"]
    # the Keras callback stops where KernelGradientDescent's rule does, on every split
    agreed = re.search(r"smoothed_discrepancy time in (\d+) of (\d+) runs", text)
    assert agreed and agreed.group(1) == agreed.group(2) == "4"
    # Yao's a-priori time for m = 309 training points and r = 0.5: ceil(m^(1/3)) steps.
    assert rows["YaoStoppingTime (r = 0.5)"][:3] == (str(math.ceil(309 ** (1 / 3))),) * 3
    for rule, (_, low, high, mse, ratio, difference) in rows.items():
        assert 0 <= int(low) <= int(high) <= 300
        assert 0.0 < float(mse) < 2.0
        if rule != "best epoch in hindsight":
            # Keras's float32 run follows KernelGradientDescent's float64 path.
            assert float(difference) < 1e-4
        if rule.startswith(("Yao", "Discrepancy", "Smoothed")):
            # Same training data and path as the hindsight row: never below its best.
            assert float(ratio) >= 0.99
