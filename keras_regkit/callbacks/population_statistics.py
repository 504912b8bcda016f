"""Population statistics for BatchNormalization ("precise BN").

The moving averages that BatchNormalization keeps during training lag behind
the weights and depend on the momentum. Algorithm 2 of Ioffe & Szegedy (2015)
instead estimates the population statistics after training: run mini-batches
through the network and set, for every BatchNormalization layer,

    E[x]   = mean over batches of the batch means,
    Var[x] = m / (m - 1) * mean over batches of the batch variances,

where ``m`` is the number of values each batch moment is taken over. Wu &
Johnson (2021, "Rethinking 'Batch' in BatchNorm") call this precise BN and show
that it removes the error of badly tuned momenta.

While the batches run, every BatchNormalization layer normalizes with its batch
statistics (as in training) and every other layer runs in inference mode, so
dropout is off and no weight changes. Works for keras_regkit's and Keras's own
layers; for keras_regkit's layer with ``virtual_batch_size``, each ghost batch is
one mini-batch of Algorithm 2.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterable, Optional, Union

import keras
import numpy as np
from keras import ops

from keras_regkit import _compat
from keras_regkit import _validation as check
from keras_regkit._distribution import model_strategy, replica_sum
from keras_regkit.layers.batch_normalization import BatchNormalization
from keras_regkit.ops import normalization as bn

_BN_TYPES = (BatchNormalization, keras.layers.BatchNormalization)


def batch_normalization_layers(model: keras.Model) -> list:
    """Every BatchNormalization layer (keras_regkit's or Keras's) in ``model``, nested ones too."""
    return [layer for layer in _compat.flatten_layers(model) if isinstance(layer, _BN_TYPES)]


# The per-layer sums recorded by the layers' replacement calls during one forward pass,
# kept per thread: MirroredStrategy traces each replica's forward pass in its own thread.
_pending = threading.local()


def _record(index: int, sums) -> None:
    _pending.calls.setdefault(index, []).append(sums)


def _batch_statistics_call(layer, index: int):
    """A replacement for ``layer.call`` that records moments and uses batch statistics.

    Each call records, for layer ``index``, the sums over its (ghost) batches of the
    batch means and of the unbiased batch variances, and the number of batches
    (groups with at least one example). Under a ``tf.distribute`` strategy, a
    synchronized layer's moments are those of the global batch (all-reduced, the
    same on every replica); an unsynchronized layer's per-replica sums are added
    over the replicas, so each replica's batch is one mini-batch of Algorithm 2.
    """

    def call(inputs, training=None, mask=None):
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        rank = len(x.shape)
        axis = layer.axis % rank
        channels = x.shape[axis]
        virtual = getattr(layer, "virtual_batch_size", None)
        all_reduce = replica_sum()
        weights = ops.ones((), dtype) if mask is None else ops.expand_dims(ops.cast(mask, dtype), -1)
        if virtual is None:
            grouped, group_weights = ops.expand_dims(x, 0), ops.expand_dims(weights, 0)
        else:
            grouped, valid = bn.ghost_batches(x, virtual)
            group_weights = ops.reshape(valid, ops.shape(valid) + (1,) * (rank - 1))
            if mask is not None:
                grouped_mask, _ = bn.ghost_batches(ops.cast(mask, dtype), virtual)
                group_weights = group_weights * ops.expand_dims(grouped_mask, -1)
        channel_axis = axis + 1
        axes = [a for a in range(1, rank + 1) if a != channel_axis]
        mean, variance, count = bn.weighted_moments(
            grouped, group_weights, axes, all_reduce if layer.synchronized else None
        )
        unbiased = bn.bessel_correction(variance, count)
        present = ops.cast(ops.reshape(count, (-1, channels)) > 0, dtype)  # empty groups count for nothing
        sums = (
            ops.sum(present * ops.reshape(mean, (-1, channels)), axis=0),
            ops.sum(present * ops.reshape(unbiased, (-1, channels)), axis=0),
            ops.max(ops.sum(present, axis=0)),
        )
        if all_reduce is not None and not layer.synchronized:
            sums = tuple(all_reduce(value) for value in sums)
        _record(index, sums)
        shape = [1] * (rank + 1)
        shape[channel_axis] = channels
        gamma = None if layer.gamma is None else ops.reshape(ops.cast(layer.gamma, dtype), shape)
        beta = None if layer.beta is None else ops.reshape(ops.cast(layer.beta, dtype), shape)
        y = bn.normalize(grouped, mean, variance, beta, gamma, layer.epsilon)
        y = ops.reshape(y, (-1,) + tuple(ops.shape(x)[1:]))[: ops.shape(x)[0]]
        return ops.cast(y, layer.compute_dtype)

    return call


def _forward(model, layers, x):
    """Runs ``model`` on ``x``; returns each layer's ``(mean sum, variance sum, batches)``."""
    _pending.calls = {}
    try:
        model(x, training=False)
        calls = _pending.calls
    finally:
        del _pending.calls
    sums = []
    for index, layer in enumerate(layers):
        recorded = calls.get(index)
        if recorded is None:  # the layer is not on this input's path
            zeros = ops.zeros((layer.moving_mean.shape[0],), "float32")
            sums.append((zeros, zeros, ops.zeros((), "float32")))
        else:
            sums.append(tuple(sum(ops.cast(c[k], "float32") for c in recorded) for k in range(3)))
    return sums


_DEFAULT_BATCH_SIZE = 32
_OWNER = "recompute_batch_statistics"


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def is_array_input(x) -> bool:
    """Whether ``x`` is an array (NumPy or a backend tensor) or a dict of arrays."""
    return _is_array(x) or (isinstance(x, dict) and bool(x) and all(map(_is_array, x.values())))


def _array_batches(x, batch_size: int):
    """Consecutive batches of ``batch_size`` examples (the last may be smaller)."""
    arrays = x if isinstance(x, dict) else {None: x}
    sizes = {int(array.shape[0]) for array in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"{_OWNER}: the arrays of x must have the same number of examples, got "
            + ", ".join(f"{key!r}: {int(array.shape[0])}" for key, array in arrays.items())
        )
    (count,) = sizes
    if count == 0:
        raise ValueError(f"{_OWNER}: x must hold at least one example, got an empty array")
    for start in range(0, count, batch_size):
        batch = {key: array[start : start + batch_size] for key, array in arrays.items()}
        yield batch if isinstance(x, dict) else batch[None]


def check_batch_size(owner: str, x, batch_size: Optional[int]) -> Optional[int]:
    """``batch_size`` checked: an int >= 1 for array inputs, ``None`` for batched ones."""
    if batch_size is None:
        return None
    batch_size = check.check_int(owner, "batch_size", batch_size, 1)
    if not is_array_input(x):
        raise ValueError(
            f"{owner}: batch_size is for array inputs only (a dataset or iterable yields "
            f"batches already), got batch_size={batch_size} with a {type(x).__name__}"
        )
    return batch_size


def _batches(x, batch_size: Optional[int], steps: Optional[int]):
    """Batches of ``x``: arrays are cut into batches; datasets and iterables come batched."""
    if is_array_input(x):
        return _array_batches(x, _DEFAULT_BATCH_SIZE if batch_size is None else batch_size)
    cardinality = getattr(x, "cardinality", None)
    if steps is None and callable(cardinality) and int(cardinality()) == -1:  # tf.data.INFINITE_CARDINALITY
        raise ValueError(f"{_OWNER}: steps must be given for an infinite dataset, got None")
    return x


def _inputs(batches, steps: Optional[int]):
    for index, batch in enumerate(batches):
        if steps is not None and index >= steps:
            break
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def _local_sums(model, layers, x, batch_size, steps):
    """Per-batch sums on this process, one device (the single-device path)."""
    for batch in _inputs(_batches(x, batch_size, steps), steps):
        yield _forward(model, layers, batch)


def _distributed_sums(strategy, model, layers, dataset, batch_size, steps):
    """Per-global-batch sums under ``strategy``: each replica runs its part of each batch."""
    import tensorflow as tf

    if is_array_input(dataset):
        size = _DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        dataset = tf.data.Dataset.from_tensor_slices(dataset).batch(size)
        batch_size = None
    if isinstance(dataset, tf.data.Dataset):
        dataset = strategy.experimental_distribute_dataset(_batches(dataset, batch_size, steps))
    elif not isinstance(dataset, tf.distribute.DistributedDataset):
        raise TypeError(
            "recompute_batch_statistics: under a tf.distribute strategy with "
            f"{strategy.num_replicas_in_sync} replicas, x must be arrays, a tf.data.Dataset of "
            "global batches or a distributed dataset (strategy.experimental_distribute_dataset, "
            f"strategy.distribute_datasets_from_function), got {type(dataset).__name__}"
        )
    step = tf.function(lambda x: strategy.run(lambda part: _forward(model, layers, part), args=(x,)),
                       reduce_retracing=True)
    for x in _inputs(dataset, steps):
        # Every replica holds the same (all-reduced) sums: read this process's first one.
        yield tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], step(x))


def recompute_batch_statistics(
    model: keras.Model, x: Any, batch_size: Optional[int] = None, steps: Optional[int] = None
) -> int:
    """Sets every BatchNormalization's moving statistics to population estimates.

    Implements Algorithm 2 of Ioffe & Szegedy (2015): after running ``steps``
    batches of ``dataset`` through ``model``, each BatchNormalization layer
    (keras_regkit's or ``keras.layers.BatchNormalization``) gets
    ``moving_mean = mean of the batch means`` and
    ``moving_variance = mean of m/(m-1) * batch variance`` (each batch weighted
    equally; ``m`` is the number of values in that batch's moments, so a smaller
    last batch gets its own correction). Renorm layers also get a consistent
    ``moving_stddev = sqrt(moving_variance + epsilon)``. The model's weights and
    the dataset are left as they were; a layer that no batch reached keeps its
    statistics.

    Under a ``tf.distribute`` strategy (the one in scope, else
    ``model.distribute_strategy``) with more than one replica, every replica
    runs its part of each global batch and the moments are aggregated across
    replicas, so every replica and every worker gets the same statistics: a
    synchronized layer's batch is the global batch (the result equals a
    single-device recomputation on the global batches), an unsynchronized
    layer's batches are the per-replica batches (the result equals a
    single-device recomputation on those). On JAX, arrays under
    ``keras.distribution`` are global: the moments always span the global batch.

    Args:
        model: A built Keras model.
        x: The inputs, as ``model.predict`` takes them: a NumPy array (or backend
            tensor, or a dict of them for a multi-input model), cut into batches of
            ``batch_size``; or a ``tf.data.Dataset``, ``keras.utils.PyDataset`` or any
            iterable of batches, whose elements are ``x`` or tuples whose first item is
            ``x``. Under a strategy, arrays, a ``tf.data.Dataset`` of global batches
            (distributed with ``strategy.experimental_distribute_dataset``) or an already
            distributed dataset.
        batch_size: Examples per batch for array inputs (default 32, as Keras); must be
            ``None`` for datasets and iterables, which are batched already.
        steps: Number of (global) batches to use; None runs them all (a finite dataset).

    Returns:
        The number of (global) batches that were run.

    Raises:
        ValueError: If ``steps`` or ``batch_size`` < 1, ``batch_size`` is given with a
            dataset, the dataset is infinite and ``steps`` is None, arrays of a dict
            differ in length, the model has no BatchNormalization layer, or no batch
            came.
        TypeError: If ``steps`` or ``batch_size`` is not an int, or, under a strategy,
            ``x`` is neither arrays, a ``tf.data.Dataset`` nor a distributed dataset.

    Reference:
        Ioffe & Szegedy, "Batch Normalization", ICML 2015, Algorithm 2;
        Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021 (precise BN).
    """
    owner = _OWNER
    if steps is not None:
        steps = check.check_int(owner, "steps", steps, 1)
    batch_size = check_batch_size(owner, x, batch_size)
    layers = batch_normalization_layers(model)
    if not layers:
        raise ValueError(f"{owner}: model {model.name!r} has no BatchNormalization layer")
    strategy = model_strategy(model)
    totals = [np.zeros((3, layer.moving_mean.shape[0]), "float64") for layer in layers]
    count = 0
    with contextlib.ExitStack() as stack:
        for index, layer in enumerate(layers):
            stack.enter_context(_compat.overriding_call(layer, _batch_statistics_call(layer, index)))
        batches = (_local_sums(model, layers, x, batch_size, steps) if strategy is None
                   else _distributed_sums(strategy, model, layers, x, batch_size, steps))
        for sums in batches:
            for total, layer_sums in zip(totals, sums):
                for row, value in zip(total, layer_sums):
                    row += ops.convert_to_numpy(value)  # the batch count broadcasts over channels
            count += 1
    if count == 0:
        raise ValueError(f"{owner}: x yielded no batch")
    for layer, (mean_sum, variance_sum, groups) in zip(layers, totals):
        if groups[0] == 0:  # no batch reached this layer: its statistics stay as they are
            continue
        mean, variance = mean_sum / groups, variance_sum / groups
        layer.moving_mean.assign(mean.astype("float32"))
        layer.moving_variance.assign(variance.astype("float32"))
        if getattr(layer, "renorm", False):  # Keras < 3.14 has no renorm
            layer.moving_stddev.assign(np.sqrt(variance + layer.epsilon).astype("float32"))
    return count


class PopulationStatistics(keras.callbacks.Callback):
    """Recomputes BatchNormalization population statistics during or after ``fit``.

    Calls :func:`recompute_batch_statistics` on the model being trained at the
    end of training and/or after chosen epochs, so that validation and the final
    model use population statistics instead of momentum-dependent moving averages.

    Args:
        x: training inputs, as :func:`recompute_batch_statistics` takes them (arrays,
            a ``tf.data.Dataset`` or an iterable of batches).
        batch_size: examples per batch for array inputs (default 32).
        steps: Batches per recomputation; None runs them all (a finite dataset).
        epochs: When to recompute during training: None (never), an int ``n``
            (after every ``n``-th epoch), or an iterable of 0-based epoch indices.
            It runs in ``on_epoch_end``, after that epoch's validation, so it
            shows in the validation of the following epochs and in the final model.
        at_train_end: Also recompute when training ends.
        verbose: 1 prints a line per recomputation.

    Raises:
        ValueError: If ``steps`` or ``batch_size`` < 1, ``batch_size`` is given with a
            dataset, or ``epochs`` is an int < 1 or has negative items.

    Reference:
        Ioffe & Szegedy 2015, Algorithm 2; Wu & Johnson 2021.
    """

    def __init__(
        self,
        x: Any,
        batch_size: Optional[int] = None,
        steps: Optional[int] = None,
        epochs: Union[None, int, Iterable[int]] = None,
        at_train_end: bool = True,
        verbose: int = 0,
    ):
        super().__init__()
        owner = "PopulationStatistics"
        if steps is not None:
            steps = check.check_int(owner, "steps", steps, 1)
        batch_size = check_batch_size(owner, x, batch_size)
        if epochs is not None and not isinstance(epochs, int):
            epochs = frozenset(check.check_int(owner, "epochs[i]", e, 0) for e in epochs)
        elif epochs is not None:
            epochs = check.check_int(owner, "epochs", epochs, 1)
        self.x = x
        self.batch_size = batch_size
        self.steps = steps
        self.epochs = epochs
        self.at_train_end = bool(at_train_end)
        self.verbose = verbose
        self.recomputed_at: list = []

    def _due(self, epoch: int) -> bool:
        if self.epochs is None:
            return False
        if isinstance(self.epochs, int):
            return (epoch + 1) % self.epochs == 0
        return epoch in self.epochs

    def _recompute(self, when):
        batches = recompute_batch_statistics(self.model, self.x, self.batch_size, self.steps)
        self.recomputed_at.append(when)
        if self.verbose:
            print(f"PopulationStatistics: recomputed from {batches} batches ({when})")

    def on_epoch_end(self, epoch, logs=None):
        if self._due(epoch):
            self._recompute(f"epoch {epoch + 1}")

    def on_train_end(self, logs=None):
        if self.at_train_end:
            self._recompute("end of training")
