"""``Pipeline``: applies a list of ops to a ``tf.data.Dataset`` of batches, reproducibly.

Randomness comes only from stateless random ops keyed by ``(seed, epoch, batch index, op index)``:
the epoch is a counter that advances each time the returned dataset is iterated, and the batch index
comes from ``Dataset.enumerate`` before the parallel ``map``. The augmented data therefore depend only
on the seed, never on ``num_parallel_calls`` or thread timing, and a fresh ``Pipeline`` with the same
seed replays the same sequence of epochs.

Image ops draw their parameters in graph mode and then run all their ``apply`` functions in one
``tf.function(jit_compile=True)``: XLA fuses the gathers, masks and casts of the whole pipeline.
"""

from __future__ import annotations

import random
from typing import Sequence

import keras
import tensorflow as tf

from keras_regkit._distribution import ReplicaSeedGenerator
from keras_regkit._validation import check_int
from keras_regkit.augment.base import IMAGE, TEXT, AugmentOp, fold, serializable, spec_error

OWNER = "Pipeline"


def _images_spec_check(spec, kind: str) -> None:
    if not isinstance(spec, tf.TensorSpec):
        spec_error(OWNER, "images", "a dense tensor", type(spec).__name__, TypeError)
    if kind == TEXT:
        if spec.dtype != tf.string:
            spec_error(OWNER, "texts", "a tf.string batch for text ops", spec.dtype.name, TypeError)
        if spec.shape.rank != 1:
            spec_error(OWNER, "texts", "of rank 1 (batch,)", f"shape {spec.shape}")
        return
    if spec.dtype != tf.uint8 and not spec.dtype.is_floating:
        spec_error(OWNER, "images", "uint8 or floating", spec.dtype.name, TypeError)
    if spec.shape.rank != 4:
        spec_error(OWNER, "images", "a batch of rank 4 (batch, height, width, channels); batch "
                   "the dataset before augmenting", f"shape {spec.shape}")


@serializable
class Pipeline:
    """A reproducible, vectorized augmentation pipeline for batched ``tf.data`` datasets.

    Args:
        ops: the ops to apply in order; all image ops or all text ops.
        seed: integer seed >= 0; ``None`` draws one at construction.
        jit_compile: run the image ops' sampling and math in one XLA-compiled function (default
            True). XLA's random bits differ from TensorFlow's kernels, so the draws for a seed
            depend on this flag (each setting is reproducible on its own).

    Call arguments:
        data: a ``tf.data.Dataset`` of batches, each ``images`` or ``(images, labels)``; or, inside
            ``dataset.map(pipeline)``, the batch tensors themselves.
        labels: the labels when ``data`` is an images tensor.
        num_parallel_calls: parallelism of the internal ``map`` (dataset input only).

    Returns:
        A dataset (or tensors) of the same structure. Images come out float32 in [0, 255].
        Applied to a dataset, each iteration is a new epoch with new draws, reproducible from the
        seed whatever the parallelism. Applied to tensors via ``dataset.map(pipeline)``, draws come
        from a stateful generator seeded by ``seed``: random, but not reproducible under parallel
        ``map`` (use ``pipeline(dataset)`` for that).

    Raises:
        TypeError, ValueError: bad ops or seed at construction; a batch of the wrong rank or dtype,
        a crop larger than the image, or label ops without suitable labels when applied.
    """

    def __init__(self, ops: Sequence[AugmentOp], seed: int | None = None,
                 jit_compile: bool = True):
        ops = [keras.saving.deserialize_keras_object(o) if isinstance(o, dict) else o
               for o in ops] if isinstance(ops, (list, tuple)) else ops
        if not isinstance(ops, (list, tuple)):
            spec_error(OWNER, "ops", "a list of augmentation ops", type(ops).__name__, TypeError)
        for i, op in enumerate(ops):
            if not isinstance(op, AugmentOp):
                spec_error(OWNER, f"ops[{i}]", "an augmentation op", repr(op), TypeError)
        kinds = {op.kind for op in ops}
        if len(kinds) > 1:
            spec_error(OWNER, "ops", "all image ops or all text ops", [o.owner for o in ops])
        self.kind = kinds.pop() if kinds else IMAGE
        self.ops = list(ops)
        self.seed = None if seed is None else check_int(OWNER, "seed", seed, 0)
        if not isinstance(jit_compile, bool):
            spec_error(OWNER, "jit_compile", "a bool", jit_compile, TypeError)
        self.jit_compile = jit_compile
        actual = self.seed if self.seed is not None else random.randrange(2**62)
        self._key = tf.constant([actual >> 31, actual & (2**31 - 1)], tf.int64)
        self._input_pipeline = (0, 1)  # (input_pipeline_id, num_input_pipelines)
        self._generator = None
        self._apply_fn = tf.function(self._apply_ops, jit_compile=jit_compile,
                                     reduce_retracing=True)

    # --------------------------------------------------------------------------------- checks
    def output_spec(self, images: tf.TensorSpec, labels: tf.TensorSpec | None = None):
        """Checks a batch's specs against every op; returns the specs of the augmented batch."""
        _images_spec_check(images, self.kind)
        if labels is not None and not isinstance(labels, tf.TensorSpec):
            spec_error(OWNER, "labels", "a dense tensor", type(labels).__name__, TypeError)
        if self.kind == IMAGE:
            images = tf.TensorSpec(images.shape, tf.float32)
        for op in self.ops:
            images, labels = op.output_spec(images, labels)
        return images, labels

    # ------------------------------------------------------------------------------ one batch
    def _apply_ops(self, images, labels, key, params):
        """Samples (where not done outside) and applies every op; runs under XLA when enabled."""
        images = tf.cast(images, tf.float32)  # inside XLA: fused with the first op's reads
        batch = tf.shape(images)[0]
        for i, (op, p) in enumerate(zip(self.ops, params)):
            if p is None:
                p = op.sample(fold(key, i), batch, int(images.shape[1]), int(images.shape[2]))
            images, labels = op.apply(images, labels, p)
        return images, labels

    def augment_batch(self, images, labels=None, key=None):
        """Augments one batch with the stateless ``key`` (a length-2 integer tensor)."""
        if self.kind == TEXT:
            for i, op in enumerate(self.ops):
                images, labels = op.augment(images, labels, fold(key, i))
            return (images, labels)
        if not self.ops:
            return tf.cast(images, tf.float32), labels
        batch = tf.shape(images)[0]
        spec = tf.TensorSpec(images.shape, tf.float32)
        lspec = None if labels is None else tf.TensorSpec(labels.shape, labels.dtype)
        # Samplers without an XLA kernel (Beta draws) run here; the rest inside _apply_fn.
        params = []
        for i, op in enumerate(self.ops):
            outside = not (self.jit_compile and op.xla_sampling)
            params.append(op.sample(fold(key, i), batch, int(spec.shape[1]), int(spec.shape[2]))
                          if outside else None)
            spec, lspec = op.output_spec(spec, lspec)
        return self._apply_fn(images, labels, key, params)

    def batch_key(self, epoch, batch_index):
        """The stateless key of batch ``batch_index`` in epoch ``epoch``.

        For a pipeline made by :meth:`for_input_context`, ``batch_index`` counts this input
        pipeline's batches; the key is that of the global batch
        ``batch_index * num_input_pipelines + input_pipeline_id``.
        """
        pipeline_id, pipelines = self._input_pipeline
        global_index = tf.cast(batch_index, tf.int64) * pipelines + pipeline_id
        return fold(fold(self._key, tf.cast(epoch, tf.int64)), global_index)

    def for_input_context(self, input_context) -> "Pipeline":
        """This pipeline as one input pipeline of ``strategy.distribute_datasets_from_function``.

        Input pipeline ``p`` of ``n`` (``input_context.input_pipeline_id`` and
        ``input_context.num_input_pipelines``; one per worker) draws, for its local batch ``i``,
        the key of global batch ``i * n + p``: the seed is folded with the input-pipeline id
        through the batch index, so the workers' streams are distinct, and every worker's stream
        is reproducible from the seed alone. Give worker ``p`` the batches ``p, p + n, ...`` of the
        single-process batching, e.g. ``dataset.batch(b).shard(n, p)``; then the union over
        workers is exactly the single-process stream ``pipeline(dataset.batch(b))``: its batch
        ``k`` is local batch ``k // n`` of worker ``k % n``, epoch by epoch. Within a worker the
        replicas take consecutive batches of the worker's dataset, so they differ too.

        Example::

            def dataset_fn(context):
                batch = context.get_per_replica_batch_size(global_batch_size)
                shard = examples.batch(batch).shard(context.num_input_pipelines,
                                                    context.input_pipeline_id)
                return pipeline.for_input_context(context)(shard)

            dataset = strategy.distribute_datasets_from_function(dataset_fn)

        Args:
            input_context: a ``tf.distribute.InputContext`` (or any object with
                ``input_pipeline_id`` and ``num_input_pipelines``).

        Returns:
            A new ``Pipeline`` with the same ops and seed.

        Raises:
            TypeError: if ``input_context`` lacks those attributes or they are not integers.
            ValueError: if the pipeline has no seed (the workers would draw unrelated streams),
                or the id is not in ``[0, num_input_pipelines)``.
        """
        if not all(hasattr(input_context, a) for a in ("input_pipeline_id", "num_input_pipelines")):
            spec_error(OWNER, "input_context", "a tf.distribute.InputContext",
                       type(input_context).__name__, TypeError)
        pipelines = check_int(OWNER, "input_context.num_input_pipelines",
                              input_context.num_input_pipelines, 1)
        pipeline_id = check_int(OWNER, "input_context.input_pipeline_id",
                                input_context.input_pipeline_id, 0)
        if pipeline_id >= pipelines:
            spec_error(OWNER, "input_context.input_pipeline_id",
                       f"in [0, {pipelines}) (num_input_pipelines={pipelines})", pipeline_id)
        if self.seed is None:
            spec_error(OWNER, "seed", "an integer for for_input_context, so that every worker "
                       "draws from the same stream", None)
        shard = Pipeline(self.ops, self.seed, self.jit_compile)
        shard._input_pipeline = (pipeline_id, pipelines)
        return shard

    def augment(self, images, labels=None, epoch: int = 0, batch_index: int = 0):
        """Eagerly augments one batch exactly as the dataset path does for (epoch, batch_index)."""
        images = tf.convert_to_tensor(images)
        labels = None if labels is None else tf.convert_to_tensor(labels)
        self.output_spec(tf.TensorSpec.from_tensor(images),
                         None if labels is None else tf.TensorSpec.from_tensor(labels))
        out = self.augment_batch(images, labels, self.batch_key(epoch, batch_index))
        return out if labels is not None else out[0]

    # -------------------------------------------------------------------------------- datasets
    def __call__(self, data, labels=None, num_parallel_calls=tf.data.AUTOTUNE):
        if isinstance(data, tf.data.Dataset):
            if labels is not None:
                spec_error(OWNER, "labels", "None when a dataset is given", "a tensor", TypeError)
            return self.apply_dataset(data, num_parallel_calls)
        return self._map_call(data, labels)

    def _split(self, spec):
        if isinstance(spec, tf.TensorSpec):
            return spec, None
        if isinstance(spec, tuple) and len(spec) == 2:
            return spec
        spec_error(OWNER, "dataset elements", "a batch `images` or a pair `(images, labels)`",
                   spec, TypeError)

    def apply_dataset(self, dataset: tf.data.Dataset, num_parallel_calls=tf.data.AUTOTUNE):
        """Returns the augmented dataset (see the class docstring)."""
        images_spec, labels_spec = self._split(dataset.element_spec)
        self.output_spec(images_spec, labels_spec)
        bare = labels_spec is None

        counter = tf.Variable(-1, dtype=tf.int64, trainable=False)

        def number(index, element):
            # Sequential (stateful) map: the first batch of each iteration advances the epoch.
            epoch = tf.cond(tf.equal(index, 0), lambda: counter.assign_add(1),
                            lambda: tf.identity(counter))
            return epoch, index, element

        def one_batch(epoch, index, element):
            images, labels = (element, None) if bare else element
            images, labels = self.augment_batch(images, labels, self.batch_key(epoch, index))
            return images if bare else (images, labels)

        out = (dataset.enumerate().map(number)
               .map(one_batch, num_parallel_calls=num_parallel_calls, deterministic=True)
               .prefetch(tf.data.AUTOTUNE))
        out._regkit_epoch_counter = counter  # keeps the counter alive with the dataset
        return out

    def _map_call(self, images, labels):
        images = tf.convert_to_tensor(images)
        labels = None if labels is None else tf.convert_to_tensor(labels)
        self.output_spec(tf.TensorSpec.from_tensor(images),
                         None if labels is None else tf.TensorSpec.from_tensor(labels))
        if self._generator is None:
            with tf.init_scope():
                self._generator = tf.random.Generator.from_seed(
                    int(self._key[0]) * 2**31 + int(self._key[1]))
        key = self._generator.make_seeds(1)[:, 0]
        out = self.augment_batch(images, labels, key)
        return out if labels is not None else out[0]

    # --------------------------------------------------------------------------- serialization
    def get_config(self) -> dict:
        return {"ops": [keras.saving.serialize_keras_object(op) for op in self.ops],
                "seed": self.seed, "jit_compile": self.jit_compile}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        return f"Pipeline({self.ops!r}, seed={self.seed!r})"


@serializable
class AugmentationLayer(keras.layers.Layer):
    """Runs an image ``Pipeline`` inside a model, in training only.

    In inference the layer only casts its input to the compute dtype. In training it augments each
    batch with a key drawn from a ``keras.random.SeedGenerator`` (one that differs across
    ``tf.distribute`` replicas). On the TensorFlow backend the
    TensorFlow kernels run in the model's graph; on JAX they run on the host through
    ``jax.pure_callback``, and on torch on a NumPy copy of the batch (one host round trip per
    batch; the layer has no gradient, so put it first in the model). Ops that change
    labels (MixUp, CutMix, LabelSmoothing) cannot run inside a model; use them in ``tf.data``.

    Args:
        pipeline: an image ``Pipeline`` (or its serialized form).
        seed: seed of the layer's ``SeedGenerator``.
        **kwargs: base ``Layer`` arguments.

    Call arguments:
        inputs: a batch of images (batch, height, width, channels), values in [0, 255].
        training: augment when True.

    Returns:
        The augmented batch, in the compute dtype.
    """

    def __init__(self, pipeline: Pipeline, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(pipeline, dict):
            pipeline = keras.saving.deserialize_keras_object(pipeline)
        if not isinstance(pipeline, Pipeline):
            spec_error("AugmentationLayer", "pipeline", "a Pipeline", repr(pipeline), TypeError)
        if pipeline.kind != IMAGE or any(op.changes_labels for op in pipeline.ops):
            spec_error("AugmentationLayer", "pipeline", "image ops that leave labels unchanged",
                       [op.owner for op in pipeline.ops])
        self.pipeline = pipeline
        self.seed = seed
        self.seed_generator = ReplicaSeedGenerator(seed)
        self._eager_fn = None

    def compute_output_shape(self, input_shape):
        spec, _ = self.pipeline.output_spec(tf.TensorSpec(input_shape, tf.float32))
        return tuple(spec.shape)

    def _tf_augment(self, images, key):
        images, _ = self.pipeline.augment_batch(images, None, tf.cast(key, tf.int64))
        return images

    def call(self, inputs, training=None):
        if not training:
            return keras.ops.cast(inputs, self.compute_dtype)
        key = keras.random.randint((2,), 0, 2**31 - 1, seed=self.seed_generator, dtype="int32")
        backend = keras.backend.backend()
        if backend == "tensorflow":
            out = self._tf_augment(inputs, key)
        elif backend == "jax":
            out = self._jax_augment(inputs, key)
        else:  # torch: eager, one host round trip per batch
            out = keras.ops.convert_to_tensor(
                self._host_augment(keras.ops.convert_to_numpy(inputs), keras.ops.convert_to_numpy(key))
            )
        return keras.ops.cast(out, self.compute_dtype)

    def _host_augment(self, images, key):
        """The pipeline on NumPy arrays, through one traced TensorFlow function."""
        import numpy as np

        if self._eager_fn is None:
            self._eager_fn = tf.function(self._tf_augment)
        return np.asarray(self._eager_fn(tf.constant(np.asarray(images)), tf.constant(np.asarray(key))))

    def _jax_augment(self, inputs, key):
        import jax

        shape = self.compute_output_shape(tuple(inputs.shape))
        return jax.pure_callback(self._host_augment, jax.ShapeDtypeStruct(shape, "float32"), inputs, key)

    def get_config(self):
        config = super().get_config()
        config.update({"pipeline": keras.saving.serialize_keras_object(self.pipeline),
                       "seed": self.seed})
        return config
