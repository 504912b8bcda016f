"""Session fixtures: each distributed scenario runs once, in fresh processes, and reports JSON.

Logical devices, XLA's host device count and TF_CONFIG must all be set before
TensorFlow or JAX start, so every scenario runs in its own subprocess(es); the
reports are shared by the tests that read them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_regkit.local_cluster import run_workers

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", **extra)


def _run_script(name, timeout=240, **env):
    result = subprocess.run([sys.executable, str(HERE / name)], capture_output=True, text=True,
                            env=_env(**env), timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def mirrored_report():
    """checks.py's reports under MirroredStrategy with two logical CPUs."""
    return _run_script("mirrored_checks.py", KERAS_BACKEND="tensorflow")


@pytest.fixture(scope="session")
def jax_report():
    """jax_checks.py's report under keras.distribution.DataParallel over two host devices."""
    return _run_script("jax_checks.py", KERAS_BACKEND="jax",
                       XLA_FLAGS="--xla_force_host_platform_device_count=2")


@pytest.fixture(scope="session")
def multi_worker_reports(tmp_path_factory):
    """The two workers' reports (and their folder) under MultiWorkerMirroredStrategy."""
    out = tmp_path_factory.mktemp("multi_worker")
    run_workers([sys.executable, str(HERE / "multi_worker_checks.py"), str(out)], num_workers=2,
                timeout=240, env=_env(KERAS_BACKEND="tensorflow"))
    return [json.loads((out / f"worker{i}.json").read_text()) for i in range(2)], out
