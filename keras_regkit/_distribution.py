"""What the package needs to know about ``tf.distribute`` and ``keras.distribution``.

Small functions that answer "how many replicas, which one am I, am I the chief" and
combine values across replicas or workers, so that layers and callbacks stay
correct beyond one device without knowing strategy internals.

On the JAX backend, ``keras.distribution`` works with global arrays: a reduction
or a random draw already spans every device, so the functions here return
``None`` (nothing to combine) and the values pass through unchanged.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import keras

from keras_regkit import _compat

def _tensorflow_replica_context():
    """The ``tf.distribute`` replica context when more than one replica is in sync, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def replica_sum() -> Optional[Callable]:
    """A function that sums a tensor over the replicas in sync, or ``None``.

    Returns:
        Inside a ``tf.distribute`` replica context with more than one replica,
        the replica context's all-reduce (sum); otherwise ``None``. On JAX,
        arrays under ``keras.distribution`` are global, so plain reductions
        already span every device and no hook is needed.
    """
    context = _tensorflow_replica_context()
    if context is None:
        return None
    import tensorflow as tf

    return lambda tensor: context.all_reduce(tf.distribute.ReduceOp.SUM, tensor)


def replica_id():
    """The global index of the current replica (an int tensor), or ``None`` with one replica.

    Under ``MultiWorkerMirroredStrategy`` the index counts the replicas of every
    worker, so no two replicas anywhere share it.
    """
    context = _tensorflow_replica_context()
    return None if context is None else context.replica_id_in_sync_group


class ReplicaSeedGenerator(keras.random.SeedGenerator):
    """A ``keras.random.SeedGenerator`` whose seeds differ across ``tf.distribute`` replicas.

    Keras's generator keeps one state variable, mirrored on every replica, so
    under a ``tf.distribute`` strategy every replica draws the same seed and a
    dropout layer drops the same units of every replica's examples. This
    generator folds the global replica index into each drawn seed
    (``tf.random.experimental.stateless_fold_in``), so the replicas' streams are
    distinct, and each one is reproducible from the seed. Outside a replica
    context with more than one replica, and on the JAX backend (where a draw on a
    global array already differs across its shards), it draws exactly what
    ``keras.random.SeedGenerator`` draws.

    Args:
        seed: Integer seed, or ``None`` for a random one.
        name: Optional name of the generator.
    """

    def __init__(self, seed=None, name=None, **kwargs):
        if name is None:  # Keras's variable paths: ".../seed_generator/seed_generator_state"
            name = _compat.auto_name("SeedGenerator")
        super().__init__(seed, name=name, **kwargs)

    def _advance(self, ordered: bool):
        """The seed for this draw, advancing the state (Keras's ``SeedGenerator.next``)."""
        return super().next(ordered)

    def next(self, ordered=True):
        seed = self._advance(ordered)
        index = replica_id()
        if index is None:
            return seed
        import tensorflow as tf

        folded = tf.random.experimental.stateless_fold_in(seed, tf.cast(index, tf.int64))
        return tf.cast(folded, seed.dtype)


def model_strategy(model) -> Optional[object]:
    """The ``tf.distribute`` strategy ``model`` trains under, if it spans more than one replica.

    Args:
        model: A Keras model (or ``None``).

    Returns:
        The strategy (the one in scope, else the model's ``distribute_strategy``)
        when it has more than one replica in sync; ``None`` otherwise and on
        backends other than TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    if strategy is None:
        strategy = getattr(model, "distribute_strategy", None)
    if strategy is None or strategy.num_replicas_in_sync <= 1:
        return None
    return strategy


def worker_count(strategy) -> int:
    """The number of worker processes of ``strategy``'s cluster (1 without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec()
    return max(1, sum(spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker")))


def is_chief(strategy) -> bool:
    """Whether this process should write files for ``strategy`` (True without a strategy).

    Uses ``strategy.extended.should_checkpoint``: under
    ``MultiWorkerMirroredStrategy`` only the chief (task ``chief``, or
    ``worker`` 0 when the cluster has no chief) is true.
    """
    return strategy is None or bool(strategy.extended.should_checkpoint)


def mean_over_workers(strategy, values: Sequence[float]) -> list[float]:
    """The element-wise mean of ``values`` over the worker processes of ``strategy``.

    Every worker must call it, in the same order, with as many values: it runs one
    collective all-reduce. With one worker (or no strategy) the values come back
    unchanged, and identical values on every worker always come back unchanged.

    Args:
        strategy: A ``tf.distribute`` strategy, or ``None``.
        values: The numbers to average.

    Returns:
        A list of Python floats.
    """
    values = [float(v) for v in values]
    if strategy is None or worker_count(strategy) <= 1 or not values:
        return values
    import tensorflow as tf

    local = tf.constant(values, tf.float64)
    per_replica = strategy.experimental_distribute_values_from_function(lambda _: local)
    mean = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
    return [float(v) for v in mean.numpy()]
