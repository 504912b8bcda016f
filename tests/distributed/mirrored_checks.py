"""Run in a subprocess: the shared distributed checks under MirroredStrategy on two logical CPUs.

Logical devices must be configured before TensorFlow starts, hence a fresh process.
Prints one JSON line: the reports of ``tests/distributed/checks.py``.
"""

import json

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from tests.distributed import checks  # noqa: E402


def main():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    report = {
        "replicas": strategy.num_replicas_in_sync,
        "batch_norm": checks.batch_norm(strategy),
        "population": checks.population_statistics(strategy),
        "dropout": checks.dropout_masks(strategy),
        "augment": checks.augmented_batches(strategy),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
