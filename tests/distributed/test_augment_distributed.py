"""Pipeline.for_input_context with distribute_datasets_from_function: distinct, reproducible streams.

The documented single-process stream is ``pipeline(dataset.batch(per_replica_batch))``:
input pipeline ``p`` of ``n`` gets its batches ``p, p + n, ...`` and, within a worker,
replica ``j`` of ``R`` takes the worker's batches ``j, j + R, ...``; so replica ``j`` of
pipeline ``p`` at step ``t`` holds global batch ``(t * R + j) * n + p``.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.distributed.checks import AUGMENT_GLOBAL_BATCH, augmentation_source

pytestmark = pytest.mark.distributed


def single_process_stream(replicas):
    images, pipeline = augmentation_source()
    dataset = pipeline(tf.data.Dataset.from_tensor_slices(images).batch(AUGMENT_GLOBAL_BATCH // replicas))
    return [[batch.numpy() for batch in dataset] for _ in range(2)]


def union(reports):
    """{(epoch, global batch index): batch} over every replica of every process."""
    batches = {}
    for report in reports:
        pipeline_id, pipelines = report["pipeline"]
        local = len(report["replicas"])
        for j, epochs in enumerate(report["replicas"]):
            for e, steps in enumerate(epochs):
                for t, batch in enumerate(steps):
                    key = (e, (t * local + j) * pipelines + pipeline_id)
                    assert key not in batches
                    batches[key] = np.asarray(batch, "float32")
    return batches


def check(reports):
    reference = single_process_stream(replicas=2)
    batches = union(reports)
    assert len(batches) == sum(len(epoch) for epoch in reference)
    for (e, k), batch in batches.items():
        np.testing.assert_array_equal(batch, reference[e][k])
    first_steps = [batches[(0, k)] for k in range(2)]  # one per replica
    assert not np.array_equal(*first_steps)


def test_mirrored_replicas(mirrored_report):
    assert mirrored_report["augment"]["pipeline"] == [0, 1]
    check([mirrored_report["augment"]])


def test_multi_worker_union_is_the_single_process_stream(multi_worker_reports):
    reports, _ = multi_worker_reports
    assert sorted(r["augment"]["pipeline"][0] for r in reports) == [0, 1]
    check([r["augment"] for r in reports])
