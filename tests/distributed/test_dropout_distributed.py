"""The dropout family draws different masks on different replicas and workers."""

import numpy as np
import pytest

pytestmark = pytest.mark.distributed

FAMILY = ["Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise", "AlphaDropout",
          "DropBlock2D", "DropPath", "DropConnect", "WeightNoise"]


def test_replicas_of_mirrored_strategy_draw_distinct_masks(mirrored_report):
    assert sorted(mirrored_report["dropout"]) == sorted(FAMILY)
    for name, (first, second) in mirrored_report["dropout"].items():
        assert not np.array_equal(first, second), name


def test_workers_draw_distinct_masks(multi_worker_reports):
    reports, _ = multi_worker_reports
    for name in FAMILY:
        (first,), (second,) = reports[0]["dropout"][name], reports[1]["dropout"][name]
        assert not np.array_equal(first, second), name
