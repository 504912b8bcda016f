"""recompute_batch_statistics under tf.distribute aggregates the moments across replicas."""

import pytest

pytestmark = pytest.mark.distributed


def check(report):
    # Synchronized layers: equal to a single-device recomputation on the global batches.
    assert report["sync"]["batches"] == 3 and report["sync"]["difference"] < 1e-5
    # Unsynchronized layers: each replica's block is one mini-batch of Algorithm 2.
    assert report["local"]["batches"] == 3 and report["local"]["difference"] < 1e-5


def test_mirrored_strategy(mirrored_report):
    check(mirrored_report["population"])


def test_multi_worker_every_worker_gets_the_single_device_statistics(multi_worker_reports):
    reports, _ = multi_worker_reports
    for report in reports:
        check(report["population"])
