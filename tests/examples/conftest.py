"""Helpers to run the examples as a user would: as scripts, in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_example(tmp_path):
    """Runs ``examples/<name>.py --quick --out tmp`` and returns (completed process, out folder)."""

    def run(name, *extra, timeout=240):
        out = tmp_path / "out"
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--quick", "--out", str(out), *extra],
            capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        return result, out

    return run
