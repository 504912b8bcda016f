"""Throughput of keras_regkit.augment against Keras's layers, tf.image, albumentations and nlpaug.

Three scenarios, each timed in this one process with the baselines interleaved with ours, median
of the repeats, as items per second:

* CIFAR-like: 32x32x3 uint8, batch 128, pad-4 random crop + horizontal flip + 16x16 cutout
  (and a second row with MixUp added). Baselines: the same ops as Keras 3 layers mapped over
  batches and mapped per example, and albumentations in a NumPy loop.
* ImageNet-like: 256x256x3 uint8 to 224x224 float32, random resized crop + flip, batch 32.
  Baselines: tf.image per example (sample_distorted_bounding_box + resize) with AUTOTUNE, and
  albumentations in a NumPy loop.
* JPEG files: real photos (pieces of scikit-learn's sample photos, 375x500, quality 90, written
  by ``benchmarks/photo_files.py``) read by ``image_files``, to 224x224 random resized crop +
  flip. Baselines: albumentations with ``cv2.imdecode`` in a loop, and the same Pipeline on
  images decoded whole by ``tf.io.decode_jpeg``.
* Text: random swap + random deletion on the sentences of gensim's Lee corpus (2,581
  sentences, several passes per timed run), batch 512.
  Baseline: nlpaug's RandomWordAug (swap, then delete).

Every table also gives the CPU seconds of the whole process (all threads) per 1,000 items.

Run: ``python benchmarks/bench_augment.py [--quick] [--only cifar|imagenet|jpeg|text]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_regkit import augment as A  # noqa: E402

AUTOTUNE = tf.data.AUTOTUNE


def timed(iterate) -> tuple[float, float]:
    """(items per second of wall time, CPU seconds of this process per 1,000 items)."""
    start, cpu = time.perf_counter(), time.process_time()
    n = iterate()
    return n / (time.perf_counter() - start), 1000.0 * (time.process_time() - cpu) / n


def drain(ds) -> int:
    n = 0
    for el in ds:
        first = el["images"] if isinstance(el, dict) else (el[0] if isinstance(el, tuple) else el)
        n += int(first.shape[0])
    return n


def run_table(title: str, unit: str, methods: dict, repeats: int, reference: str) -> dict:
    """Interleaves the methods ``repeats`` times (after one warm-up each) and prints medians of
    the rate and of the CPU seconds per 1,000 items (all threads of this process)."""
    for fn in methods.values():
        fn()
    rates = {name: [] for name in methods}
    cpus = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            rate, cpu = timed(fn)
            rates[name].append(rate)
            cpus[name].append(cpu)
    med = {name: statistics.median(r) for name, r in rates.items()}
    cpu = {name: statistics.median(c) for name, c in cpus.items()}
    print(f"\n## {title}  (median of {repeats})")
    print(f"{'method':58s} {unit + '/s':>12s} {'ratio':>8s} {'CPU s/1k':>9s} {'ratio':>7s}")
    for name, value in med.items():
        print(f"{name:58s} {value:12,.0f} {med[name] / med[reference]:7.2f}x "
              f"{cpu[name]:9.3f} {cpu[name] / cpu[reference]:6.2f}x")
    return med


# ----------------------------------------------------------------------------------- CIFAR-like
def cifar(repeats: int, n_batches: int) -> None:
    import albumentations as alb
    import keras

    batch = 128
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * n_batches, 32, 32, 3), dtype=np.uint8)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, len(x))]
    images = tf.data.Dataset.from_tensor_slices(x).batch(batch).cache()
    pairs = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    drain(images), drain(pairs)

    ours = A.Pipeline([A.RandomCrop(32, 32, padding=4), A.RandomFlip("horizontal"),
                       A.Cutout(16, 16)], seed=0)
    ours_graph = A.Pipeline(ours.ops, seed=0, jit_compile=False)
    ours_mix = A.Pipeline(ours.ops + [A.MixUp(0.2)], seed=0)
    ds_ours, ds_graph, ds_mix = ours(images), ours_graph(images), ours_mix(pairs)

    pad = keras.layers.ZeroPadding2D(4)
    crop = keras.layers.RandomCrop(32, 32, seed=0)
    flip = keras.layers.RandomFlip("horizontal", seed=0)
    erase = keras.layers.RandomErasing(factor=1.0, scale=(0.25, 0.25), fill_value=0.0, seed=0)
    kmix = keras.layers.MixUp(alpha=0.2, seed=0)

    def keras_ops(img):
        return erase(flip(crop(pad(tf.cast(img, tf.float32)), training=True), training=True),
                     training=True)

    def keras_mix(img, lab):
        out = kmix({"images": keras_ops(img), "labels": lab}, training=True)
        return out["images"], out["labels"]

    ds_kb = images.map(keras_ops, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    ds_ke = (tf.data.Dataset.from_tensor_slices(x).cache()
             .map(lambda im: keras_ops(im[None])[0], num_parallel_calls=AUTOTUNE)
             .batch(batch).prefetch(AUTOTUNE))
    ds_kmix = pairs.map(keras_mix, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    ds_cast = images.map(lambda im: tf.cast(im, tf.float32), num_parallel_calls=AUTOTUNE)

    albu = alb.Compose([alb.PadIfNeeded(40, 40, border_mode=0, fill=0), alb.RandomCrop(32, 32),
                        alb.HorizontalFlip(p=0.5),
                        alb.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(16, 16),
                                          hole_width_range=(16, 16), fill=0, p=1.0)])

    def albu_loop():
        for i in range(0, len(x), batch):
            np.stack([albu(image=im)["image"] for im in x[i:i + batch]]).astype(np.float32)
        return len(x)

    run_table("CIFAR-like: pad-4 crop + flip + 16x16 cutout, batch 128", "img",
              {"keras_regkit Pipeline (XLA)": lambda: drain(ds_ours),
               "keras_regkit Pipeline (graph, jit_compile=False)": lambda: drain(ds_graph),
               "Keras 3 layers mapped over batches": lambda: drain(ds_kb),
               "Keras 3 layers mapped per example": lambda: drain(ds_ke),
               "albumentations, NumPy loop": albu_loop,
               "tf.data cast only (ceiling)": lambda: drain(ds_cast)},
              repeats, "Keras 3 layers mapped over batches")
    run_table("CIFAR-like + MixUp(0.2), batch 128", "img",
              {"keras_regkit Pipeline (XLA) + MixUp": lambda: drain(ds_mix),
               "Keras 3 layers over batches + keras.layers.MixUp": lambda: drain(ds_kmix)},
              repeats, "Keras 3 layers over batches + keras.layers.MixUp")


# -------------------------------------------------------------------------------- ImageNet-like
def imagenet(repeats: int, n_batches: int) -> None:
    import albumentations as alb

    batch = 32
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * n_batches, 256, 256, 3), dtype=np.uint8)
    # As a user writes it: uint8 examples batched by tf.data (no cache), a new iterator per pass.
    images = tf.data.Dataset.from_tensor_slices(x).batch(batch)
    ops = [A.RandomResizedCrop(224, 224), A.RandomFlip("horizontal")]
    ds_ours = A.Pipeline(ops, seed=0)(images)  # kernel="auto": OpenCV when installed
    ds_tf_kernel = A.Pipeline(ops, seed=0, kernel="tensorflow")(images)

    def tf_image(im):
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(im), tf.zeros([0, 0, 4]), area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        crop = tf.slice(im, begin, size)
        out = tf.image.resize(crop, (224, 224), "bilinear")
        return tf.image.random_flip_left_right(out)

    ds_tf = (tf.data.Dataset.from_tensor_slices(x).cache()
             .map(tf_image, num_parallel_calls=AUTOTUNE).batch(batch).prefetch(AUTOTUNE))
    albu = alb.Compose([alb.RandomResizedCrop(size=(224, 224)), alb.HorizontalFlip(p=0.5)])

    def albu_loop():
        for i in range(0, len(x), batch):
            np.stack([albu(image=im)["image"] for im in x[i:i + batch]]).astype(np.float32)
        return len(x)

    run_table("ImageNet-like: 256->224 random resized crop + flip, batch 32", "img",
              {"keras_regkit Pipeline (default: OpenCV kernel)": lambda: drain(ds_ours),
               "keras_regkit Pipeline(kernel='tensorflow') (XLA)": lambda: drain(ds_tf_kernel),
               "tf.image per example, AUTOTUNE": lambda: drain(ds_tf),
               "albumentations, NumPy loop": albu_loop},
              repeats, "albumentations, NumPy loop")


# ------------------------------------------------------------------------------------ JPEG files
def jpeg(repeats: int, n_images: int) -> None:
    import tempfile

    import albumentations as alb
    import cv2

    from photo_files import write_photo_folders

    batch = 32
    directory = tempfile.mkdtemp(prefix="regkit_photos_")
    paths = write_photo_folders(directory, n_images, size=(375, 500), quality=90)
    source = A.image_files(directory, seed=0)
    ops = [A.DecodeRandomResizedCrop(224, 224), A.RandomFlip("horizontal")]
    ds_ours = A.Pipeline(ops, seed=0)(source.batch(batch))
    ds_ours_tf = A.Pipeline(ops, seed=0, kernel="tensorflow")(source.batch(batch))

    def decode(encoded, label):  # the photos are all 375x500, so a batch stacks them
        return tf.ensure_shape(tf.io.decode_jpeg(encoded, channels=3), [375, 500, 3]), label

    whole = source.map(decode, num_parallel_calls=AUTOTUNE).batch(batch)
    ds_whole = A.Pipeline([A.RandomResizedCrop(224, 224), A.RandomFlip("horizontal")],
                          seed=0)(whole)
    albu = alb.Compose([alb.RandomResizedCrop(size=(224, 224)), alb.HorizontalFlip(p=0.5)])
    flag = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)
    rng = np.random.default_rng(0)

    def albu_loop():
        order = rng.permutation(len(paths))
        for i in range(0, len(order), batch):
            images = []
            for k in order[i:i + batch]:
                with open(paths[k], "rb") as f:
                    data = np.frombuffer(f.read(), np.uint8)
                images.append(albu(image=cv2.imdecode(data, flag))["image"])
            np.stack(images).astype(np.float32)
        return len(paths)

    run_table(f"JPEG files: {n_images} photos of 375x500 (q90) -> 224 random resized crop + flip, "
              f"batch {batch}", "img",
              {"image_files + Pipeline([DecodeRandomResizedCrop, RandomFlip])":
                   lambda: drain(ds_ours),
               "  the same, kernel='tensorflow'": lambda: drain(ds_ours_tf),
               "image_files + decode_jpeg whole + Pipeline([RandomResizedCrop, RandomFlip])":
                   lambda: drain(ds_whole),
               "albumentations loop: cv2.imdecode + RandomResizedCrop + HorizontalFlip":
                   albu_loop},
              repeats, "albumentations loop: cv2.imdecode + RandomResizedCrop + HorizontalFlip")


# ------------------------------------------------------------------------------------------ text
def lee_sentences() -> list[str]:
    from gensim.test.utils import datapath

    from keras_regkit.augment.text import split_sentences_py

    with open(datapath("lee_background.cor"), encoding="utf-8") as f:
        return split_sentences_py(f.read())


def text(repeats: int, copies: int) -> None:
    import nlpaug.augmenter.word as naw

    sentences = lee_sentences() * copies  # the corpus, several passes per timed run
    batch = 512
    source = tf.data.Dataset.from_tensor_slices(sentences).batch(batch).cache()
    drain(source)
    ours = A.Pipeline([A.RandomSwap(alpha=0.1), A.RandomDeletion(rate=0.1)], seed=0)
    ds_ours = ours(source)
    swap = naw.RandomWordAug(action="swap", aug_p=0.1)
    delete = naw.RandomWordAug(action="delete", aug_p=0.1)

    def nlpaug_loop():
        for i in range(0, len(sentences), batch):
            delete.augment(swap.augment(sentences[i:i + batch]))
        return len(sentences)

    run_table(f"Text: random swap + random deletion, {len(sentences)} Lee-corpus sentences, "
              f"batch {batch}", "sentence",
              {"keras_regkit Pipeline (tf.strings)": lambda: drain(ds_ours),
               "nlpaug RandomWordAug swap + delete": nlpaug_loop},
              repeats, "nlpaug RandomWordAug swap + delete")
    # Each new iterator (each epoch) pays a fixed start-up before its first batch; report it apart.
    startup = []
    for _ in range(repeats):
        start = time.perf_counter()
        next(iter(ds_ours))
        startup.append(time.perf_counter() - start)
    print(f"first batch of a new epoch (iterator start-up included): "
          f"{1e3 * statistics.median(startup):.0f} ms median")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and repeats")
    parser.add_argument("--only", choices=("cifar", "imagenet", "jpeg", "text"), default=None)
    args = parser.parse_args()
    repeats = 5 if args.quick else 7
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs visible, "
          f"inter/intra threads default")
    if args.only in (None, "cifar"):
        cifar(repeats, 100 if args.quick else 200)
    if args.only in (None, "imagenet"):
        imagenet(repeats, 48 if args.quick else 96)
    if args.only in (None, "jpeg"):
        jpeg(repeats, 512 if args.quick else 1024)
    if args.only in (None, "text"):
        text(repeats, 10 if args.quick else 20)


if __name__ == "__main__":
    main()
