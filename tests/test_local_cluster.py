"""keras_regkit.local_cluster: TF_CONFIG per worker, outputs, and hard stops."""

import json
import sys
import time

import pytest

from keras_regkit.local_cluster import free_ports, run_workers, tf_config

PRINT_TASK = "import json, os; print(json.loads(os.environ['TF_CONFIG'])['task']['index'])"
FAIL_ONE = ("import json, os, sys, time; i = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
            "sys.exit(3) if i == 1 else time.sleep(60)")


def test_tf_config_names_every_worker():
    ports = free_ports(3)
    assert len(set(ports)) == 3
    config = json.loads(tf_config(ports, 2))
    assert config == {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                      "task": {"type": "worker", "index": 2}}
    with pytest.raises(ValueError, match="index"):
        tf_config(ports, 3)


def test_each_worker_gets_its_index():
    outputs = run_workers([sys.executable, "-c", PRINT_TASK], num_workers=2, timeout=60)
    assert [o.strip() for o in outputs] == ["0", "1"]


def test_a_failing_worker_stops_the_cluster():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="worker 1 exited with status 3"):
        run_workers([sys.executable, "-c", FAIL_ONE], num_workers=2, timeout=60)
    assert time.monotonic() - start < 30


def test_timeout_kills_the_workers():
    with pytest.raises(TimeoutError, match="did not finish"):
        run_workers([sys.executable, "-c", "import time; time.sleep(60)"], num_workers=2, timeout=1)


def test_argument_errors():
    with pytest.raises(ValueError, match="num_workers"):
        run_workers(["true"], num_workers=0)
    with pytest.raises(ValueError, match="timeout"):
        run_workers(["true"], timeout=0)
