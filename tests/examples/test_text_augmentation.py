"""Runs examples/text_augmentation.py in quick mode and checks its files."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_text_augmentation_quick(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "text_augmentation.py"),
                           "--quick", "--out", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sentences"] == 400 and summary["augmented"] == 400 * 5
    assert summary["identical_on_replay"] is True and summary["changed_fraction"] > 0.5
    lines = (tmp_path / "eda_lee.tsv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2000 and [int(l.split("\t")[0]) for l in lines[:6]] == [0] * 5 + [1]
