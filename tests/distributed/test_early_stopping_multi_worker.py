"""EarlyStopping under MultiWorkerMirroredStrategy: one decision for all workers, one writer.

Each worker hands the callback its own val_loss; alone, worker 0 would stop at epoch 3 and
worker 1 at epoch 2. The callback averages the values over the workers, so both stop at
epoch 2 and restore the weights of epoch 1; only the chief (worker 0) writes backup_path.
"""

import pytest

pytestmark = pytest.mark.distributed


def test_same_stop_same_weights_only_chief_writes(multi_worker_reports):
    reports, _ = multi_worker_reports
    chief, other = (r["early_stopping"] for r in reports)
    for report in (chief, other):
        assert report["stopped_epoch"] == 2 and report["restored_epoch"] == 1
        assert report["final"] == report["after_epoch"][1]
    assert chief["after_epoch"] == other["after_epoch"] and chief["final"] == other["final"]
    assert chief["backup_files"] == ["best.weights.h5"] and chief["backup"] == chief["final"]
    assert other["backup_files"] == []
