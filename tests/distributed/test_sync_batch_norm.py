"""Synchronized BatchNormalization beyond one device equals single-device BN on the global batch.

With ``synchronized=False`` each TensorFlow replica normalizes its own part of the batch
(its moving statistics become the mean of the replicas' updates). On JAX,
``keras.distribution`` arrays are global, so both settings use the global batch.
"""

import pytest

pytestmark = pytest.mark.distributed

TOLERANCE = {"y": 1e-5, "grad_x": 1e-5, "grad_params": 1e-4, "moving": 1e-5}


def assert_close(report):
    for key, tolerance in TOLERANCE.items():
        assert report[key] < tolerance, (key, report)


def test_mirrored_strategy_two_logical_cpus(mirrored_report):
    assert mirrored_report["replicas"] == 2
    assert_close(mirrored_report["batch_norm"]["sync"])  # = single device on the global batch
    assert_close(mirrored_report["batch_norm"]["local"])  # = single device on each replica's half


def test_multi_worker_mirrored_strategy_two_processes(multi_worker_reports):
    reports, _ = multi_worker_reports
    for report in reports:
        assert report["replicas"] == 2
        assert_close(report["batch_norm"]["sync"])
        assert_close(report["batch_norm"]["local"])


def test_jax_data_parallel_two_host_devices(jax_report):
    assert jax_report["devices"] == 2 and jax_report["input_shards"] == 2
    # Training step (outputs, gradients, moving statistics), recomputed population
    # statistics and the weights after two fit steps all equal the single-device run.
    assert jax_report["sync"] < 1e-4
    assert jax_report["local"] < 1e-4  # synchronized=False: global moments too on JAX
