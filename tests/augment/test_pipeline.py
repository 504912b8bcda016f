"""The Pipeline contract: structure, dtype, reproducibility, errors, serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_regkit import augment as A

ALL_IMAGE_OPS = [A.RandomFlip(), A.RandomCrop(8, 8, padding=2), A.RandomResizedCrop(8, 8),
                 A.RandomAffine(20, (0.1, 0.1), 0.1, 5), A.Cutout(3, 3), A.RandomErasing(),
                 A.RandomBrightness(), A.RandomContrast(), A.RandomSaturation(), A.RandomHue(),
                 A.GaussianBlur(), A.GaussianNoise(), A.RandomGrayscale(p=0.5),
                 A.RandAugment(2, 7)]


def source(n=48, batch=16, labels=True, dtype=np.uint8):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 10, 12, 3)).astype(dtype)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]
    ds = tf.data.Dataset.from_tensor_slices((x, y) if labels else x)
    return ds.batch(batch), x, y


def epoch(ds):
    return [tuple(t.numpy() for t in el) if isinstance(el, tuple) else el.numpy() for el in ds]


def same(a, b):
    return all(np.array_equal(u, v) for p, q in zip(a, b)
               for u, v in zip(p if isinstance(p, tuple) else (p,), q if isinstance(q, tuple) else (q,)))


def make(seed=5, jit=True):
    return A.Pipeline([A.RandomCrop(10, 12, padding=3), A.RandomFlip(), A.Cutout(4, 4),
                       A.RandomBrightness(0.3), A.MixUp(0.4)], seed=seed, jit_compile=jit)


def test_reproducible_across_runs_and_parallelism_epochs_differ():
    ds, _, _ = source()
    first = make()(ds, num_parallel_calls=1)
    e1, e2 = epoch(first), epoch(first)
    assert not same(e1, e2)  # a new epoch draws anew
    again = make()(ds, num_parallel_calls=tf.data.AUTOTUNE)
    assert same(epoch(again), e1) and same(epoch(again), e2)  # fresh pipeline replays epochs
    assert not same(epoch(make(seed=6)(ds)), e1)


def test_eager_augment_matches_dataset_path():
    ds, x, y = source()
    pl = make(jit=False)
    e = epoch(pl(ds))
    xo, yo = pl.augment(x[16:32], y[16:32], epoch=0, batch_index=1)
    np.testing.assert_array_equal(xo.numpy(), e[1][0])
    np.testing.assert_array_equal(yo.numpy(), e[1][1])


@pytest.mark.parametrize("op", ALL_IMAGE_OPS, ids=lambda o: o.owner)
def test_dtype_range_and_structure(op):
    for labels in (False, True):
        ds, _, y = source(labels=labels)
        out = A.Pipeline([op], seed=1, jit_compile=False)(ds)  # XLA: test_xla_apply_...
        el = next(iter(out))
        images = el[0] if labels else el
        assert isinstance(el, tuple) == labels
        assert images.dtype == tf.float32
        assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 255.0
        if labels:
            np.testing.assert_array_equal(el[1].numpy(), y[:16])  # labels untouched


def test_per_example_randomness_in_a_batch():
    x = np.tile(np.arange(100, dtype=np.uint8).reshape(1, 10, 10, 1), (32, 1, 1, 1))
    out = A.Pipeline([A.RandomCrop(6, 6)], seed=0).augment(x).numpy()
    assert len({o.tobytes() for o in out}) > 8


@pytest.mark.parametrize("op", [o for o in ALL_IMAGE_OPS if o.owner != "GaussianNoise"],
                         ids=lambda o: o.owner)
def test_xla_apply_equals_eager_apply(op):  # GaussianNoise draws its noise inside apply
    x = tf.constant(source(16, labels=False)[1][:16].astype(np.float32))
    params = op.sample(tf.constant([1, 2], tf.int64), 16, 10, 12)
    eager = op.apply(x, None, params)[0]
    xla = tf.function(lambda im, p: op.apply(im, None, p)[0], jit_compile=True)(x, params)
    np.testing.assert_allclose(xla.numpy(), eager.numpy(), atol=2e-3)


def test_graph_mode_reproducible():
    ds, _, _ = source(labels=False)
    ops = [A.RandomCrop(10, 12, padding=3), A.RandomFlip(), A.Cutout(4, 4)]
    first = A.Pipeline(ops, seed=3, jit_compile=False)(ds)
    e1, e2 = epoch(first), epoch(first)
    assert same(epoch(A.Pipeline(ops, seed=3, jit_compile=False)(ds, num_parallel_calls=1)), e1)
    assert not same(e1, e2)


def test_dataset_map_form_and_float_input():
    ds, _, _ = source(dtype=np.float32)
    pl = A.Pipeline([A.RandomFlip(), A.LabelSmoothing(0.2, 4)], seed=0)
    images, labels = next(iter(ds.map(pl)))
    assert images.dtype == tf.float32 and labels.shape == (16, 4)
    np.testing.assert_allclose(labels.numpy().max(axis=1), 0.8 + 0.05, rtol=1e-6)


def test_application_errors():
    ds, _, _ = source()
    with pytest.raises(ValueError, match=r"RandomCrop: \(height, width\) must be at most the "
                                         r"padded image size \(10, 12\), got \(11, 8\)"):
        A.Pipeline([A.RandomCrop(11, 8)])(ds)
    with pytest.raises(ValueError, match="Cutout: .* must be at most the image size"):
        A.Pipeline([A.Cutout(20, 2)])(ds)
    with pytest.raises(ValueError, match="Pipeline: images must be a batch of rank 4"):
        A.Pipeline([A.RandomFlip()])(ds.unbatch())
    with pytest.raises(TypeError, match="Pipeline: images must be uint8 or floating, got int32"):
        A.Pipeline([A.RandomFlip()])(tf.data.Dataset.from_tensors(tf.zeros([2, 4, 4, 3], tf.int32)))
    images_only = ds.map(lambda a, b: a)
    with pytest.raises(ValueError, match="MixUp: labels must be given"):
        A.Pipeline([A.MixUp()])(images_only)
    with pytest.raises(ValueError, match="RandomHue: images must be RGB"):
        A.Pipeline([A.RandomHue()])(images_only.map(lambda a: a[..., :1]))


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"RandomFlip: p must be in \[0, 1\], got -0.1"):
        A.RandomFlip(p=-0.1)
    with pytest.raises(ValueError, match="RandomFlip: mode must be one of"):
        A.RandomFlip(mode="diagonal")
    with pytest.raises(ValueError, match=r"RandomResizedCrop: scale must be a pair with min <= max"):
        A.RandomResizedCrop(8, 8, scale=(0.9, 0.1))
    with pytest.raises(ValueError, match="RandomResizedCrop: ratio must be a range of positive"):
        A.RandomResizedCrop(8, 8, ratio=(0.0, 1.0))
    with pytest.raises(TypeError, match="RandomCrop: height must be an integer, got 8.5"):
        A.RandomCrop(8.5, 8)
    with pytest.raises(ValueError, match="GaussianBlur: kernel_size must be an odd integer"):
        A.GaussianBlur(4)
    with pytest.raises(TypeError, match="Pipeline: ops\\[1\\] must be an augmentation op"):
        A.Pipeline([A.RandomFlip(), "flip"])
    with pytest.raises(ValueError, match="Pipeline: seed must be an integer >= 0"):
        A.Pipeline([], seed=-1)


@pytest.mark.parametrize("op", ALL_IMAGE_OPS + [A.MixUp(0.3), A.CutMix(0.7),
                                                A.LabelSmoothing(0.1, 4)], ids=lambda o: o.owner)
def test_serialization_round_trip(op):
    config = keras.saving.serialize_keras_object(op)
    clone = keras.saving.deserialize_keras_object(config)
    assert clone == op and clone.get_config() == op.get_config()


def test_pipeline_serialization_replays():
    ds, _, _ = source()
    pl = make(seed=9, jit=False)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pl))
    assert clone.get_config() == pl.get_config()
    assert same(epoch(clone(ds)), epoch(pl(ds)))


def test_preview_writes_png(tmp_path):
    from sklearn.datasets import load_sample_images

    photos = np.stack([im[:128, :128] for im in load_sample_images().images])
    path = A.preview(A.Pipeline([A.RandomResizedCrop(64, 64), A.RandomHue(0.2)], seed=0),
                     photos, str(tmp_path / "grid.png"), rounds=2)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="preview: images must be an array"):
        A.preview(A.Pipeline([]), photos[0], str(tmp_path / "x.png"))


def test_input_pipelines_split_the_single_process_stream():
    """Pipeline p of n augments its local batch i as global batch i * n + p, epoch by epoch."""
    ds, _, _ = source(n=80, batch=8)  # 10 batches
    single = make(seed=11)(ds)
    reference = [epoch(single), epoch(single)]
    pipelines = 2
    shards = []
    for pipeline_id in range(pipelines):
        context = tf.distribute.InputContext(pipelines, pipeline_id, num_replicas_in_sync=2)
        shard = make(seed=11).for_input_context(context)(ds.shard(pipelines, pipeline_id))
        shards.append([epoch(shard), epoch(shard)])
    for e in range(2):
        union = [shards[k % pipelines][e][k // pipelines] for k in range(len(reference[e]))]
        assert same(union, reference[e])
    assert not same(shards[0][0], shards[1][0])
    assert not same(reference[0], reference[1])


def test_for_input_context_errors():
    context = tf.distribute.InputContext(2, 1)
    with pytest.raises(ValueError, match="seed"):
        make(seed=None).for_input_context(context)
    with pytest.raises(TypeError, match="input_context"):
        make().for_input_context(1)
    with pytest.raises(ValueError, match="input_pipeline_id"):
        make().for_input_context(tf.distribute.InputContext(2, 2))
