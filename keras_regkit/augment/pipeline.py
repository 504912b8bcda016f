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
from keras_regkit._validation import check_choice, check_int, check_range
from keras_regkit.augment import kernels as K
from keras_regkit.augment import targets as T
from keras_regkit.augment.base import IMAGE, TEXT, AugmentOp, fold, serializable, spec_error
from keras_regkit.augment.image import RandomFlip, RandomResizedCrop

OWNER = "Pipeline"
IMAGES, LABELS, MASKS, BOXES = "images", "labels", "segmentation_masks", "bounding_boxes"
DICT_KEYS = (IMAGES, LABELS, MASKS, BOXES)
KERNEL_CHOICES = ("auto",) + K.KERNELS


def _targets_specs(owner: str, images: tf.TensorSpec, masks, boxes) -> dict:
    """Checks the specs of a batch's masks and boxes; returns them in the internal form."""
    out = {}
    if masks is not None:
        if not isinstance(masks, tf.TensorSpec) or masks.shape.rank not in (3, 4):
            spec_error(owner, MASKS, "a dense tensor (batch, height, width) or (batch, height, "
                       "width, channels)", getattr(masks, "shape", masks))
        shape = masks.shape
        if shape[1:3] != images.shape[1:3]:
            spec_error(owner, MASKS, f"of the images' height and width {tuple(images.shape[1:3])}",
                       f"shape {tuple(shape)}")
        if shape.rank == 4 and shape[3] is None:
            spec_error(owner, MASKS, "of static channels", f"shape {tuple(shape)}")
        channels = 1 if shape.rank == 3 else shape[3]
        out["masks"] = tf.TensorSpec([shape[0], shape[1], shape[2], channels], masks.dtype)
    if boxes is not None:
        if not isinstance(boxes, dict) or set(boxes) != {"boxes", "labels"}:
            spec_error(owner, BOXES, 'a dict {"boxes": (batch, num_boxes, 4), "labels": (batch, '
                       'num_boxes)}', boxes)
        coords, labels = boxes["boxes"], boxes["labels"]
        if coords.shape.rank != 3 or coords.shape[-1] != 4:
            spec_error(owner, 'bounding_boxes["boxes"]', "of shape (batch, num_boxes, 4)",
                       f"shape {tuple(coords.shape)}")
        if labels.shape.rank != 2 or not labels.shape.is_compatible_with(coords.shape[:2]):
            spec_error(owner, 'bounding_boxes["labels"]', f"of shape (batch, num_boxes) = "
                       f"{tuple(coords.shape[:2])}", f"shape {tuple(labels.shape)}")
        out["boxes"] = tf.TensorSpec(coords.shape, tf.float32)
    return out


def _images_spec_check(spec, kind: str, decoding: bool = False) -> None:
    if not isinstance(spec, tf.TensorSpec):
        spec_error(OWNER, "images", "a dense tensor", type(spec).__name__, TypeError)
    if decoding:
        return  # the decode op checks its encoded images
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


def _parts(element):
    """``(images, labels, masks, boxes)`` of a batch (or its spec) given as ``images``,
    ``(images, labels)`` or a Keras-style dict."""
    if isinstance(element, dict):
        unknown = sorted(set(element) - set(DICT_KEYS))
        if unknown or IMAGES not in element:
            spec_error(OWNER, "dict batches", f"keyed by {DICT_KEYS} with 'images' present",
                       f"keys {sorted(element)}")
        return element[IMAGES], element.get(LABELS), element.get(MASKS), element.get(BOXES)
    if isinstance(element, tuple):
        if len(element) != 2:
            spec_error(OWNER, "dataset elements", "a batch `images`, a pair `(images, labels)` "
                       "or a dict", element, TypeError)
        return element[0], element[1], None, None
    return element, None, None, None


def _pack(like, images, labels=None, masks=None, boxes=None):
    """The inverse of :func:`_parts`, in the structure of ``like``."""
    if isinstance(like, dict):
        out = {IMAGES: images}
        for key, value in ((LABELS, labels), (MASKS, masks), (BOXES, boxes)):
            if key in like:
                out[key] = value
        return out
    return (images, labels) if isinstance(like, tuple) else images


@serializable
class Pipeline:
    """A reproducible, vectorized augmentation pipeline for batched ``tf.data`` datasets.

    Args:
        ops: the ops to apply in order; all image ops or all text ops.
        seed: integer seed >= 0; ``None`` draws one at construction.
        jit_compile: run the image ops' sampling and math in one XLA-compiled function (default
            True). XLA's random bits differ from TensorFlow's kernels, so the draws for a seed
            depend on this flag (each setting is reproducible on its own).

    Masks and boxes: a batch may be a Keras 3 dict ``{"images", "labels", "segmentation_masks",
    "bounding_boxes": {"boxes", "labels"}}`` (every key but ``"images"`` optional). Geometric ops
    move the masks with the pixels (nearest neighbour, never blended; ``CutMix`` pastes the
    partner's mask) and map each box to the box enclosing its moved corners, clipped to the image.
    A box keeps its label while at least ``min_visibility`` of its area remains (and some area
    does); otherwise its label becomes -1, the Keras padding value. Colour, blur, noise and
    erasing ops leave masks and boxes as they are; ``MixUp`` refuses them.

    Encoded images: when the first op is a decode op (``DecodeRandomResizedCrop``,
    ``DecodeCenterCrop``), ``images`` is a (batch,) ``tf.string`` batch of encoded files (e.g.
    ``image_files(directory).batch(b)``), ``segmentation_masks`` are encoded single-channel PNG
    masks, and boxes are in each full image's coordinates.

    Call arguments:
        data: a ``tf.data.Dataset`` of batches, each ``images``, ``(images, labels)`` or a dict;
            or, inside ``dataset.map(pipeline)``, the batch tensors themselves.
        labels: the labels when ``data`` is an images tensor.
        num_parallel_calls: parallelism of the internal ``map`` (dataset input only).

    Returns:
        A dataset (or tensors) of the same structure. Images come out float32 in [0, 255].
        Applied to a dataset, each iteration is a new epoch with new draws, reproducible from the
        seed whatever the parallelism. Applied to tensors via ``dataset.map(pipeline)``, draws come
        from a stateful generator seeded by ``seed``: random, but not reproducible under parallel
        ``map`` (use ``pipeline(dataset)`` for that).

    Raises:
        TypeError, ValueError: bad ops, seed, ``bounding_box_format`` or ``min_visibility`` at
        construction; when applied, a batch of the wrong rank or dtype, a crop larger than the
        image, label ops without suitable labels, masks whose height and width differ from the
        images', boxes not of shape (batch, num_boxes, 4), or boxes without a format.
    """

    def __init__(self, ops: Sequence[AugmentOp], seed: int | None = None,
                 jit_compile: bool = True, bounding_box_format: str | None = None,
                 min_visibility: float = 0.0, kernel: str = "auto"):
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
        self.bounding_box_format = (None if bounding_box_format is None else
                                    check_choice(OWNER, "bounding_box_format",
                                                 bounding_box_format, T.BOX_FORMATS))
        self.min_visibility = check_range(OWNER, "min_visibility", min_visibility, 0.0, 1.0)
        self.kernel = check_choice(OWNER, "kernel", kernel, KERNEL_CHOICES)
        if self.kernel == "opencv":
            K.require_opencv(OWNER)
        for i, op in enumerate(self.ops[1:], 1):
            if getattr(op, "decodes", False):
                spec_error(OWNER, f"ops[{i}]", "not a decode op: decode ops take encoded images "
                           "and must come first", op.owner)
        self._decoding = bool(self.ops) and getattr(self.ops[0], "decodes", False)
        actual = self.seed if self.seed is not None else random.randrange(2**62)
        self._key = tf.constant([actual >> 31, actual & (2**31 - 1)], tf.int64)
        self._input_pipeline = (0, 1)  # (input_pipeline_id, num_input_pipelines)
        self._generator = None
        self._apply_fn = tf.function(self._apply_ops, jit_compile=jit_compile,
                                     reduce_retracing=True)

    # --------------------------------------------------------------------------------- checks
    def output_spec(self, images: tf.TensorSpec, labels: tf.TensorSpec | None = None,
                    masks: tf.TensorSpec | None = None, boxes: dict | None = None):
        """Checks a batch's specs against every op; returns the specs of the augmented batch.

        Returns ``(images, labels)``, or ``(images, labels, targets)`` when ``masks`` or ``boxes``
        are given (``targets`` in the internal form of ``keras_regkit.augment.targets``).
        """
        _images_spec_check(images, self.kind, self._decoding)
        if labels is not None and not isinstance(labels, tf.TensorSpec):
            spec_error(OWNER, "labels", "a dense tensor", type(labels).__name__, TypeError)
        with_targets = masks is not None or boxes is not None
        if with_targets and self.kind == TEXT:
            spec_error(OWNER, "inputs", "texts without masks or boxes for text ops", "a dict")
        if self._decoding:  # encoded masks are decoded at the first op's output size
            if masks is not None:
                masks = self.ops[0].masks_spec(masks)
            decoded, _ = self.ops[0].output_spec(images, None)
            targets = _targets_specs(OWNER, decoded, masks, boxes)
        else:
            targets = _targets_specs(OWNER, images, masks, boxes)
        if "boxes" in targets and self.bounding_box_format is None:
            spec_error(OWNER, "bounding_box_format", f"one of {T.BOX_FORMATS} when the batch has "
                       "bounding_boxes", None)
        if self.kind == IMAGE and not self._decoding:
            images = tf.TensorSpec(images.shape, tf.float32)
        for op in self.ops:
            before = images
            images, labels = op.output_spec(images, labels)
            if self.kind == IMAGE and not getattr(op, "decodes", False):
                targets = op.targets_spec(targets, before, images, labels)
        return (images, labels, targets) if with_targets else (images, labels)

    def element_spec(self, spec):
        """The element spec of the augmented dataset for input elements of ``spec``."""
        images, labels, masks, boxes = _parts(spec)
        out = self.output_spec(images, labels, masks, boxes)
        targets = out[2] if len(out) == 3 else {}
        masks_out = targets.get("masks")
        if masks_out is not None and masks.shape.rank in (1, 3):
            masks_out = tf.TensorSpec(masks_out.shape[:3], masks_out.dtype)
        boxes_out = None
        if "boxes" in targets:
            boxes_out = {"boxes": targets["boxes"],
                         "labels": tf.TensorSpec(targets["boxes"].shape[:2], boxes["labels"].dtype)}
        return _pack(spec, out[0], out[1], masks_out, boxes_out)

    # ------------------------------------------------------------------------- pixel kernels
    @property
    def pixel_kernel(self) -> str:
        """The kernel of the resized crops: ``kernel``, with ``"auto"`` resolved to ``"opencv"``
        when OpenCV is installed, else ``"tensorflow"``."""
        if self.kernel != "auto":
            return self.kernel
        return "opencv" if K.opencv_available() else "tensorflow"

    def _fuses_flip(self) -> bool:
        """True when ops[0] is a resized crop (or a decode op) that folds in the flip ops[1]."""
        if len(self.ops) < 2 or not isinstance(self.ops[1], RandomFlip):
            return False
        if self._decoding:
            return self.ops[1].mode == "horizontal"
        return isinstance(self.ops[0], RandomResizedCrop)

    def _resize_ops(self) -> int:
        """How many leading ops one resize kernel covers: a decode op or ``RandomResizedCrop``,
        and the flip it folds in (their parameters are always drawn outside XLA, so that the
        draws for a seed do not depend on the kernel)."""
        if self._decoding or (self.ops and isinstance(self.ops[0], RandomResizedCrop)):
            return 1 + self._fuses_flip()
        return 0

    def _host_ops(self, kernel: str) -> int:
        """How many leading ops get their pixels before (outside) the XLA function: the decode
        op, or a resized crop with the OpenCV kernel, and the flip they fold in."""
        return self._resize_ops() if self._decoding or kernel == "opencv" else 0

    def _first_resize(self, images, params, kernel):
        """ops[0]'s pixels, with the flip of ops[1] folded in when it fuses."""
        flips = params[1] if self._fuses_flip() else {}
        horizontal, vertical = flips.get("horizontal"), flips.get("vertical")
        if self._decoding:
            return self.ops[0].decode(images, params[0], horizontal, kernel)
        return self.ops[0].resize(images, params[0], horizontal, vertical, kernel)

    # ------------------------------------------------------------------------------ one batch
    def _apply_ops(self, images, labels, targets, key, params, sizes, host_ops):
        """Samples (where not done outside) and applies every op; runs under XLA when enabled.

        ``sizes[i]`` is the static (height, width) of op ``i``'s input, ``sizes[-1]`` the output
        size. The pixels of the first ``host_ops`` ops were computed outside; their masks and
        boxes are moved here.
        """
        batch = tf.shape(images)[0]
        params = [op.sample(fold(key, i), batch, *sizes[i]) if p is None else p
                  for i, (op, p) in enumerate(zip(self.ops, params))]
        fused_here = host_ops == 0 and self._fuses_flip()
        if not (host_ops or isinstance(self.ops[0], RandomResizedCrop)):
            images = tf.cast(images, tf.float32)  # inside XLA: fused with the first op's reads
        if "boxes" in targets and "visible" not in targets:  # not yet in the internal form
            targets = T.start_boxes(targets, self.bounding_box_format, *sizes[0])
        for i, (op, p) in enumerate(zip(self.ops, params)):
            height, width = sizes[i]
            if fused_here and i == 0:
                images = self._first_resize(images, params, "tensorflow")
            elif i >= host_ops and not (fused_here and i == 1):
                images, labels = op.apply(images, labels, p)
            lazy = None
            if "masks" in targets or "lazy_masks" in targets:
                lazy = op.mask_map(p, height, width)
            if lazy is None:  # the op moves materialized masks itself (or there are none)
                targets = op.apply_targets(T.realize_masks(targets, height, width), p, height,
                                           width)
            else:  # masks are resampled once, at the end of the run of geometric ops
                if "masks" in targets:
                    targets = T.start_lazy_masks(targets)
                targets = T.defer_masks(op.apply_targets(targets, p, height, width), *lazy)
        height, width = sizes[-1]
        targets = T.realize_masks(targets, height, width)
        if "boxes" in targets:
            targets = dict(targets)
            boxes, targets["box_labels"] = T.finish_boxes(
                targets["boxes"], targets["box_labels"], targets.pop("visible"),
                self.min_visibility)
            targets["boxes"] = T.boxes_from_xyxy(boxes, self.bounding_box_format, height, width)
        return images, labels, targets

    def augment_batch(self, element, key, kernel: str | None = None):
        """Augments one batch (images, ``(images, labels)`` or a dict) with the stateless ``key``.

        ``key`` is a length-2 integer tensor; the result has the structure of ``element``.
        ``kernel`` overrides the pipeline's pixel kernel (``AugmentationLayer`` passes
        ``"tensorflow"``, which stays inside the model's graph).
        """
        kernel = self.pixel_kernel if kernel is None else kernel
        images, labels, masks, boxes = _parts(element)
        if self.kind == TEXT:
            for i, op in enumerate(self.ops):
                images, labels = op.augment(images, labels, fold(key, i))
            return _pack(element, images, labels)
        if not self.ops:
            return _pack(element, tf.cast(images, tf.float32), labels, masks, boxes)
        batch = tf.shape(images)[0]
        # Static input size of every op (None for the per-example sizes of encoded images).
        spec = tf.TensorSpec(images.shape, images.dtype if self._decoding else tf.float32)
        lspec = None if labels is None else tf.TensorSpec(labels.shape, labels.dtype)
        sizes = []
        for op in self.ops:
            sizes.append((None, None) if spec.dtype == tf.string else
                         (int(spec.shape[1]), int(spec.shape[2])))
            spec, lspec = op.output_spec(spec, lspec)
        sizes = tuple(sizes) + ((int(spec.shape[1]), int(spec.shape[2])),)
        host_ops = self._host_ops(kernel)
        # Samplers without an XLA kernel (Beta draws, file headers) and the parameters of the
        # host ops are drawn here; the rest inside _apply_fn.
        params = []
        for i, op in enumerate(self.ops):
            if self._decoding and i == 0:
                params.append(op.sample_encoded(fold(key, 0), images))
            elif i < self._resize_ops() or not (self.jit_compile and op.xla_sampling):
                params.append(op.sample(fold(key, i), batch, *sizes[i]))
            else:
                params.append(None)
        targets = {}
        if masks is not None and self._decoding:
            targets["masks"] = self.ops[0].decode(masks, params[0], None, kernel,
                                                  method="nearest", channels=1)
        elif masks is not None:
            targets["masks"] = masks if masks.shape.rank == 4 else masks[..., None]
        if boxes is not None:
            targets["boxes"], targets["box_labels"] = boxes["boxes"], boxes["labels"]
            if self._decoding:  # in each full image's coordinates
                targets = T.start_boxes(targets, self.bounding_box_format,
                                        params[0]["image_height"][:, None],
                                        params[0]["image_width"][:, None])
        if host_ops:
            images = self._first_resize(images, params, kernel)
        if host_ops < len(self.ops) or targets:
            images, labels, targets = self._apply_fn(images, labels, targets, key, params, sizes,
                                                     host_ops)
        if masks is not None and masks.shape.rank in (1, 3):
            targets["masks"] = targets["masks"][..., 0]
        boxes_out = None
        if boxes is not None:
            boxes_out = {"boxes": targets["boxes"], "labels": targets["box_labels"]}
        return _pack(element, images, labels, targets.get("masks"), boxes_out)

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
        shard = Pipeline.from_config(self.get_config())
        shard._input_pipeline = (pipeline_id, pipelines)
        return shard

    def augment(self, images, labels=None, epoch: int = 0, batch_index: int = 0):
        """Eagerly augments one batch exactly as the dataset path does for (epoch, batch_index).

        ``images`` may be a batch of images (then ``labels`` may be given) or a Keras-style dict
        ``{"images", "labels", "segmentation_masks", "bounding_boxes"}``; the result has the same
        structure (images only when ``labels`` is None).
        """
        return self.augment_batch(self._checked_element(images, labels),
                                  self.batch_key(epoch, batch_index))

    # -------------------------------------------------------------------------------- datasets
    def __call__(self, data, labels=None, num_parallel_calls=tf.data.AUTOTUNE):
        if isinstance(data, tf.data.Dataset):
            if labels is not None:
                spec_error(OWNER, "labels", "None when a dataset is given", "a tensor", TypeError)
            return self.apply_dataset(data, num_parallel_calls)
        return self._map_call(data, labels)

    def apply_dataset(self, dataset: tf.data.Dataset, num_parallel_calls=tf.data.AUTOTUNE):
        """Returns the augmented dataset (see the class docstring)."""
        self.element_spec(dataset.element_spec)
        counter = tf.Variable(-1, dtype=tf.int64, trainable=False)

        def number(index, *element):
            # Sequential (stateful) map: the first batch of each iteration advances the epoch.
            epoch = tf.cond(tf.equal(index, 0), lambda: counter.assign_add(1),
                            lambda: tf.identity(counter))
            return epoch, index, element

        def one_batch(epoch, index, element):
            element = element[0] if len(element) == 1 else element
            return self.augment_batch(element, self.batch_key(epoch, index))

        out = (dataset.enumerate().map(number)
               .map(one_batch, num_parallel_calls=num_parallel_calls, deterministic=True)
               .prefetch(tf.data.AUTOTUNE))
        out._regkit_epoch_counter = counter  # keeps the counter alive with the dataset
        return out

    def _checked_element(self, images, labels):
        """A batch given as tensors (a dict, or images and optional labels), checked."""
        element = images if isinstance(images, dict) else (
            images if labels is None else (images, labels))
        element = tf.nest.map_structure(tf.convert_to_tensor, element)
        self.element_spec(tf.nest.map_structure(tf.TensorSpec.from_tensor, element))
        return element

    def _map_call(self, images, labels):
        element = self._checked_element(images, labels)
        if self._generator is None:
            with tf.init_scope():
                self._generator = tf.random.Generator.from_seed(
                    int(self._key[0]) * 2**31 + int(self._key[1]))
        key = self._generator.make_seeds(1)[:, 0]
        return self.augment_batch(element, key)

    # --------------------------------------------------------------------------- serialization
    def get_config(self) -> dict:
        return {"ops": [keras.saving.serialize_keras_object(op) for op in self.ops],
                "seed": self.seed, "jit_compile": self.jit_compile,
                "bounding_box_format": self.bounding_box_format,
                "min_visibility": self.min_visibility, "kernel": self.kernel}

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
        inputs: a batch of images (batch, height, width, channels), values in [0, 255]; or a
            Keras-style dict ``{"images", "labels", "segmentation_masks", "bounding_boxes":
            {"boxes", "labels"}}`` (boxes in the pipeline's ``bounding_box_format``).
        training: augment when True.

    Returns:
        The augmented batch (or dict, with masks and boxes moved with the pixels); images in the
        compute dtype.
    """

    def __init__(self, pipeline: Pipeline, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(pipeline, dict):
            pipeline = keras.saving.deserialize_keras_object(pipeline)
        if not isinstance(pipeline, Pipeline):
            spec_error("AugmentationLayer", "pipeline", "a Pipeline", repr(pipeline), TypeError)
        if pipeline.kind != IMAGE or pipeline._decoding or any(op.changes_labels
                                                               for op in pipeline.ops):
            spec_error("AugmentationLayer", "pipeline", "image ops that leave labels unchanged "
                       "and take decoded images", [op.owner for op in pipeline.ops])
        self.pipeline = pipeline
        self.seed = seed
        self.seed_generator = ReplicaSeedGenerator(seed)
        self._eager_fn = None

    def _specs(self, inputs):
        return tf.nest.map_structure(
            lambda x: tf.TensorSpec(tuple(x.shape), keras.backend.standardize_dtype(x.dtype)),
            inputs)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, dict):
            def specs(shapes):
                if isinstance(shapes, dict):
                    return {k: specs(v) for k, v in shapes.items()}
                return tf.TensorSpec(shapes, tf.float32)

            out = self.pipeline.element_spec(specs(input_shape))
            return tf.nest.map_structure(lambda s: tuple(s.shape), out)
        spec = self.pipeline.element_spec(tf.TensorSpec(input_shape, tf.float32))
        return tuple(spec.shape)

    def _cast_images(self, data):
        if isinstance(data, dict):
            data = dict(data)
            data[IMAGES] = keras.ops.cast(data[IMAGES], self.compute_dtype)
            return data
        return keras.ops.cast(data, self.compute_dtype)

    def _tf_augment(self, inputs, key):
        return self.pipeline.augment_batch(inputs, tf.cast(key, tf.int64), kernel="tensorflow")

    def call(self, inputs, training=None):
        if not training:
            return self._cast_images(inputs)
        key = keras.random.randint((2,), 0, 2**31 - 1, seed=self.seed_generator, dtype="int32")
        backend = keras.backend.backend()
        if backend == "tensorflow":
            out = self._tf_augment(inputs, key)
        elif backend == "jax":
            out = self._jax_augment(inputs, key)
        else:  # torch: eager, one host round trip per batch
            host = self._host_augment(keras.ops.convert_to_numpy(key),
                                      *[keras.ops.convert_to_numpy(x)
                                        for x in tf.nest.flatten(inputs)],
                                      structure=inputs)
            out = tf.nest.pack_sequence_as(self._out_structure(inputs),
                                           [keras.ops.convert_to_tensor(x) for x in host])
        return self._cast_images(out)

    def _out_structure(self, inputs):
        return self.pipeline.element_spec(self._specs(inputs))

    def _host_augment(self, key, *flat, structure):
        """The pipeline on NumPy arrays, through one traced TensorFlow function; flat outputs."""
        import numpy as np

        if self._eager_fn is None:
            self._eager_fn = tf.function(self._tf_augment)
        element = tf.nest.pack_sequence_as(structure, [tf.constant(np.asarray(x)) for x in flat])
        out = self._eager_fn(element, tf.constant(np.asarray(key)))
        return [np.asarray(x) for x in tf.nest.flatten(out)]

    def _jax_augment(self, inputs, key):
        import functools

        import jax

        specs = tf.nest.flatten(self._out_structure(inputs))
        shapes = [jax.ShapeDtypeStruct(tuple(s.shape), s.dtype.as_numpy_dtype) for s in specs]
        flat = jax.pure_callback(functools.partial(self._host_augment, structure=inputs), shapes,
                                 key, *tf.nest.flatten(inputs))
        return tf.nest.pack_sequence_as(self._out_structure(inputs), list(flat))

    def get_config(self):
        config = super().get_config()
        config.update({"pipeline": keras.saving.serialize_keras_object(self.pipeline),
                       "seed": self.seed})
        return config
