"""Runs examples/mc_dropout_uncertainty.py in quick mode and checks what it claims."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quick_run_shows_uncertainty_rising_out_of_distribution(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    script = os.path.join(ROOT, "examples", "mc_dropout_uncertainty.py")
    result = subprocess.run(
        [sys.executable, script, "--quick", "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "uncertainty.png").stat().st_size > 1000
    sets = json.loads((tmp_path / "summary.json").read_text())["sets"]
    inside, unseen, noise = sets["digits 0-4"], sets["digits 5-9"], sets["noise"]
    assert inside["accuracy"] > 0.9
    for outside in (unseen, noise):
        assert outside["mean_std"] > 1.5 * inside["mean_std"]
        assert outside["mean_entropy"] > 1.5 * inside["mean_entropy"]
