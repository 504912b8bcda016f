"""The main job, run as the README runs it: ``python -m keras_regkit.demo --quick``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_regkit import demo

ROOT = Path(__file__).resolve().parents[1]


def _run(args, tmp_path, extra_path=None, timeout=300):
    path = [str(ROOT)] + ([str(extra_path)] if extra_path else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(reversed(path)) if extra_path else str(ROOT),
               TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "keras_regkit.demo", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_quick_demo_prints_table_and_writes_plots(tmp_path, backend):
    out = tmp_path / "out"
    result = _run(["--quick", "--out", str(out), "--backend", backend], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"backend {backend}," in result.stdout
    for name, _ in demo.VARIANTS:
        assert f"| {name} |" in result.stdout
    for file in ("learning_curves.png", "augmentation_preview.png", "results.md", "results.json"):
        assert (out / file).stat().st_size > 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == [name for name, _ in demo.VARIANTS]
    assert all(0.5 < r["test_accuracy_mean"] <= 1.0 for r in rows)
    early = next(r for r in rows if r["variant"] == "early stopping")
    assert early["best_epoch"] <= early["epochs_run"]


def test_missing_dependency_gives_clear_message_and_status_2(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "mlxtend.py").write_text("raise ImportError('mlxtend is not installed')\n")
    result = _run(["--quick", "--out", str(tmp_path / "o")], tmp_path, extra_path=blocker, timeout=120)
    assert result.returncode == 2
    assert "missing dependency mlxtend" in result.stderr


def test_bad_seeds_flag_is_rejected():
    with pytest.raises(SystemExit):
        demo.parse_args(["--seeds", "0"])


def test_summary_and_table_from_known_runs():
    runs = [demo.RunResult(name, seed, 0.8 + 0.1 * seed, 10, 4, 1.0) for name, _ in demo.VARIANTS for seed in (0, 1)]
    rows = demo.summarize(runs)
    assert rows[0]["test_accuracy_mean"] == pytest.approx(0.85)
    assert rows[0]["test_accuracy_std"] == pytest.approx(0.0707106, rel=1e-5)
    table = demo.format_table(rows)
    assert "| baseline | 85.0% ± 7.1 | 10.0 | 4.0 | 1.0 |" in table
