"""Synchronized BatchNormalization under tf.distribute.MirroredStrategy (two logical CPUs).

Logical devices must be configured before TensorFlow starts, so each case runs
in a fresh subprocess.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("sync_bn_mirrored.py")


def _run(mode):
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_BACKEND="tensorflow")
    result = subprocess.run([sys.executable, str(SCRIPT), mode], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.distributed
def test_synchronized_equals_single_device_on_global_batch():
    report = _run("sync")
    assert report["replicas"] == 2
    assert report["y"] < 1e-5 and report["grad_x"] < 1e-5
    assert report["grad_params"] < 1e-4 and report["moving"] < 1e-5


@pytest.mark.distributed
def test_unsynchronized_replicas_use_their_own_batch():
    report = _run("local")
    assert report["replicas"] == 2
    assert report["y"] < 1e-5 and report["grad_x"] < 1e-5
    assert report["grad_params"] < 1e-4 and report["moving"] < 1e-5
