"""Folders of real JPEG photos, and the throughput of decoding random resized crops from files.

``write_photo_folders`` cuts pieces of scikit-learn's two sample photos (china.jpg and
flower.jpg, 427x640) at random positions, flips some, and writes them as JPEG files into class
subfolders, for tests and benchmarks of file pipelines without a download.

Run as a script, it times, in this one process (median of the repeats, a fresh iterator per
pass), random resized crops to 224x224 with random horizontal flips, batches of 32:

* albumentations in a NumPy loop: ``cv2.imdecode`` + ``RandomResizedCrop`` + ``HorizontalFlip``,
  then ``np.stack(...).astype(np.float32)``;
* ``image_files`` -> ``batch(32)`` -> boxes from ``image_sizes`` -> ``decode_resized_crops``, with
  the TensorFlow kernel and with the OpenCV kernel;
* whole images decoded by ``tf.io.decode_jpeg``, then ``resized_crops``;

and, in memory, ``resized_crops`` on 256x256 uint8 batches against the albumentations loop. It
reports wall-clock images per second and CPU seconds (all threads) per 1000 images.

Run: ``python benchmarks/photo_files.py [--images 500] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

AUTOTUNE = tf.data.AUTOTUNE
OUT = 224
BATCH = 32


def write_photo_folders(directory, n_images: int, size=(375, 500), quality: int = 90,
                        n_classes: int = 2, seed: int = 0) -> list[str]:
    """Writes ``n_images`` JPEG pieces of scikit-learn's sample photos into class subfolders.

    Image ``k`` goes to ``directory/class_{k % n_classes}/{k:05d}.jpg``; it is a ``size`` piece
    (height, width; at most 427x640) of china.jpg or flower.jpg at a random position, flipped
    left-right with probability 1/2, encoded by TensorFlow at ``quality``.

    Returns:
        The paths written, in order.
    """
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    height, width = size
    if not (0 < height <= photos[0].shape[0] and 0 < width <= photos[0].shape[1]):
        raise ValueError(f"write_photo_folders: size must fit in {photos[0].shape[:2]}, "
                         f"got {size}")
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n_images):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - height + 1)
        left = rng.integers(photo.shape[1] - width + 1)
        piece = photo[top:top + height, left:left + width]
        if rng.random() < 0.5:
            piece = piece[:, ::-1]
        folder = os.path.join(directory, f"class_{k % n_classes}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{k:05d}.jpg")
        with open(path, "wb") as f:
            f.write(tf.io.encode_jpeg(np.ascontiguousarray(piece), quality=quality).numpy())
        paths.append(path)
    return paths


def random_resized_boxes(sizes, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10):
    """torchvision's RandomResizedCrop boxes for per-example image sizes, vectorized.

    Args:
        sizes: (batch, 2) int32 [height, width].

    Returns:
        ``(top, left, box_height, box_width, flip)``; the whole image where no attempt fits.
    """
    batch = tf.shape(sizes)[0]
    height = tf.cast(sizes[:, 0:1], tf.float32)
    width = tf.cast(sizes[:, 1:2], tf.float32)
    area = height * width * tf.random.uniform([batch, attempts], *scale)
    aspect = tf.exp(tf.random.uniform([batch, attempts], math.log(ratio[0]), math.log(ratio[1])))
    w = tf.round(tf.sqrt(area * aspect))
    h = tf.round(tf.sqrt(area / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(ok, axis=1)
    h = tf.where(found, tf.gather(h, first, batch_dims=1), height[:, 0])
    w = tf.where(found, tf.gather(w, first, batch_dims=1), width[:, 0])
    top = tf.floor(tf.random.uniform([batch]) * (height[:, 0] - h + 1))
    left = tf.floor(tf.random.uniform([batch]) * (width[:, 0] - w + 1))
    flip = tf.random.uniform([batch]) < 0.5
    return (tf.cast(top, tf.int32), tf.cast(left, tf.int32), tf.cast(h, tf.int32),
            tf.cast(w, tf.int32), flip)


# ------------------------------------------------------------------------------------- timing
def drain(ds) -> int:
    n = 0
    for images, _ in ds:
        n += int(images.shape[0])
    return n


def run_table(title: str, methods: dict, repeats: int) -> dict:
    """Interleaves the methods ``repeats`` times after one warm-up; prints median img/s and CPU."""
    for fn in methods.values():
        fn()
    rates = {name: [] for name in methods}
    cpus = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            n = fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rates[name].append(n / wall)
            cpus[name].append(1000 * cpu / n)
    print(f"\n## {title}  (median of {repeats})")
    print(f"{'method':66s} {'img/s':>8s} {'CPU s/1000 img':>15s}")
    result = {}
    for name in methods:
        result[name] = (statistics.median(rates[name]), statistics.median(cpus[name]))
        print(f"{name:66s} {result[name][0]:8,.0f} {result[name][1]:15.3f}")
    return result


# ----------------------------------------------------------------------------------- scenarios
def files(directory: str, repeats: int, opencv_threads: bool) -> None:
    import albumentations as alb
    import cv2

    from keras_regkit.augment import files as F
    from keras_regkit.augment import kernels as K

    source = F.image_files(directory, seed=0)
    paths = list(source.file_paths)
    labels = np.zeros(len(paths), np.int32)
    albu = alb.Compose([alb.RandomResizedCrop(size=(OUT, OUT)), alb.HorizontalFlip(p=0.5)])
    flag = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)
    rng = np.random.default_rng(0)

    def albu_loop():
        order = rng.permutation(len(paths))
        for i in range(0, len(order), BATCH):
            images = []
            for k in order[i:i + BATCH]:
                with open(paths[k], "rb") as f:
                    data = np.frombuffer(f.read(), np.uint8)
                images.append(albu(image=cv2.imdecode(data, flag))["image"])
            np.stack(images).astype(np.float32), labels[order[i:i + BATCH]]
        return len(paths)

    def crops(kernel, parallel_iterations=8):
        def augment(encoded, label):
            top, left, h, w, flip = random_resized_boxes(F.image_sizes(encoded))
            return F.decode_resized_crops(encoded, top, left, h, w, OUT, OUT, flip,
                                          kernel=kernel,
                                          parallel_iterations=parallel_iterations), label
        return source.batch(BATCH).map(augment, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    def whole(kernel):
        @tf.function(jit_compile=kernel == "tensorflow")
        def resize(images, top, left, h, w, flip):
            return K.resized_crops(images, top, left, h, w, OUT, OUT, flip, kernel=kernel)

        def augment(images, label):
            sizes = tf.tile(tf.shape(images)[1:3][None], [tf.shape(images)[0], 1])
            return resize(images, *random_resized_boxes(sizes)), label  # boxes end with flips
        def decode(encoded, label):  # every photo is 375x500: a batch stacks them
            return tf.ensure_shape(tf.io.decode_jpeg(encoded, channels=3), [375, 500, 3]), label
        decoded = source.map(decode, num_parallel_calls=AUTOTUNE)
        return decoded.batch(BATCH).map(augment, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    def only_read(encoded, label):
        return tf.strings.length(encoded), label

    datasets = {
        "albumentations loop (cv2.imdecode + RRC + flip + stack float32)": albu_loop,
        "image_files -> decode_resized_crops, kernel=tensorflow": crops("tensorflow"),
        "image_files -> decode_resized_crops, kernel=opencv": crops("opencv"),
        "image_files -> decode_jpeg whole -> resized_crops (XLA)": whole("tensorflow"),
        "image_files -> decode_jpeg whole -> resized_crops, kernel=opencv": whole("opencv"),
        "image_files only (read + check), batch 32": source.batch(BATCH).map(only_read),
    }
    methods = {name: (ds if callable(ds) else (lambda ds=ds: drain(ds)))
               for name, ds in datasets.items()}
    run_table(f"{len(paths)} JPEG files of 375x500 -> 224x224 random resized crop + flip, "
              f"batch {BATCH}", methods, repeats)

    extra = {f"decode_resized_crops tensorflow, map_fn parallel_iterations={p}":
             (lambda ds=crops("tensorflow", p): drain(ds)) for p in (1, 4, 8, 32)}
    run_table("TensorFlow kernel: map_fn parallel_iterations", extra, repeats)

    if opencv_threads:
        default = cv2.getNumThreads()
        ds = crops("opencv")
        whole_cv = whole("opencv")

        def with_threads(n, data):
            def fn():
                cv2.setNumThreads(n)
                try:
                    return drain(data)
                finally:
                    cv2.setNumThreads(default)
            return fn
        run_table(f"OpenCV internal threads (default {default}) with 2+ parallel map calls",
                  {f"decode_resized_crops opencv, cv2 threads={default}": with_threads(default, ds),
                   "decode_resized_crops opencv, cv2 threads=1": with_threads(1, ds),
                   f"whole decode -> resized_crops opencv, cv2 threads={default}":
                   with_threads(default, whole_cv),
                   "whole decode -> resized_crops opencv, cv2 threads=1":
                   with_threads(1, whole_cv)}, repeats)


def in_memory(repeats: int, n_batches: int) -> None:
    import albumentations as alb

    from keras_regkit.augment import kernels as K

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (BATCH * n_batches, 256, 256, 3), dtype=np.uint8)
    batches = tf.data.Dataset.from_tensor_slices(x).batch(BATCH).cache()
    drain(batches.map(lambda b: (b, 0)))
    albu = alb.Compose([alb.RandomResizedCrop(size=(OUT, OUT)), alb.HorizontalFlip(p=0.5)])

    def albu_loop():
        for i in range(0, len(x), BATCH):
            np.stack([albu(image=im)["image"] for im in x[i:i + BATCH]]).astype(np.float32)
        return len(x)

    def pipeline(kernel):
        @tf.function(jit_compile=kernel == "tensorflow")
        def augment(images):
            sizes = tf.tile(tf.constant([[256, 256]]), [tf.shape(images)[0], 1])
            top, left, h, w, flip = random_resized_boxes(sizes)
            return K.resized_crops(images, top, left, h, w, OUT, OUT, flip, kernel=kernel), 0
        return batches.map(augment, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    top, left, h, w, flip = random_resized_boxes(tf.fill([BATCH, 2], 256))
    one = tf.constant(x[:BATCH])
    direct = {kernel: tf.function(lambda images, kernel=kernel: K.resized_crops(
        images, top, left, h, w, OUT, OUT, flip, kernel=kernel),
        jit_compile=kernel == "tensorflow") for kernel in ("tensorflow", "opencv")}

    def calls(fn, n=n_batches):
        def run():
            for _ in range(n):
                fn(one)
            return n * BATCH
        return run

    run_table(f"In memory: {len(x)} uint8 256x256x3 -> 224x224 random resized crop + flip, "
              f"batch {BATCH}",
              {"albumentations loop (RRC + flip + stack float32)": albu_loop,
               "resized_crops tensorflow (XLA), called on one batch": calls(direct["tensorflow"]),
               "resized_crops opencv, called on one batch": calls(direct["opencv"]),
               "tf.data map: boxes + resized_crops tensorflow (XLA)":
               lambda ds=pipeline("tensorflow"): drain(ds),
               "tf.data map: boxes + resized_crops opencv":
               lambda ds=pipeline("opencv"): drain(ds)}, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--directory", default=None, help="reuse or create photos here")
    parser.add_argument("--skip-threads", action="store_true",
                        help="skip the OpenCV thread-count comparison")
    args = parser.parse_args()
    import cv2

    print(f"TensorFlow {tf.__version__}, OpenCV {cv2.__version__}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.directory or scratch
        if not os.path.isdir(os.path.join(directory, "class_0")):
            write_photo_folders(directory, args.images)
        files(directory, args.repeats, not args.skip_threads)
    in_memory(args.repeats, 16)


if __name__ == "__main__":
    main()
