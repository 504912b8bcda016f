"""Runs examples/prechelt_criteria.py in quick mode and checks its outputs."""

import csv
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_prechelt_criteria_quick(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "prechelt_criteria.py"), "--quick",
         "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    png = tmp_path / "prechelt_criteria.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "prechelt_criteria.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["criterion"] for r in rows][:3] == ["patience 5 (Keras)", "patience 20", "GL1"]
    for row in rows:
        assert int(row["restored_epoch"]) <= int(row["stop_epoch"])
        assert float(row["excess_percent"]) >= 0.0
    # a larger alpha never stops earlier (GL is monotone in alpha on the same curve)
    stops = {r["criterion"]: int(r["stop_epoch"]) for r in rows}
    assert stops["GL1"] <= stops["GL2"] <= stops["GL5"]
    assert stops["UP1"] <= stops["UP2"] <= stops["UP3"]
    assert "best val_loss" in result.stdout
