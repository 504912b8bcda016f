"""examples/multi_worker.py: two local workers train together and agree on everything."""

import json
import re

import pytest


@pytest.mark.distributed
def test_two_workers_agree_and_learn(run_example):
    result, out = run_example("multi_worker", timeout=300)
    lines = result.stdout.strip().splitlines()
    workers = [json.loads(line) for line in lines if line.startswith("{")]
    assert sorted(w["worker"] for w in workers) == [0, 1]
    assert workers[0]["weights"] == workers[1]["weights"] and workers[0]["epochs"] == workers[1]["epochs"]
    assert lines[-1].startswith("workers agree: True")
    accuracy = float(re.search(r"test accuracy ([0-9.]+)%", lines[-1]).group(1))
    assert accuracy > 75.0
    assert sorted(p.name for p in out.iterdir()) == ["best.weights.h5"]  # the chief's file only
