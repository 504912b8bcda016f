"""Encoded image files in: a dataset of file bytes, header-only sizes, and decoding of crops only.

The usual input pipeline decodes every image whole, then crops and resizes it. With random
resized crops most decoded pixels are thrown away; here the crop is chosen first from the image
size read from the file header (``image_sizes``), and ``decode_resized_crops`` decodes only that
window: JPEG crops are decoded by libjpeg with ``decode_and_crop_jpeg``, and when the crop is at
least 2x, 4x or 8x the output size in both dimensions, at 1/2, 1/4 or 1/8 scale directly from the
DCT coefficients (no full-resolution pixels are ever produced).

``image_files`` lists a directory laid out as Keras's ``image_dataset_from_directory`` expects
(one subfolder per class) and yields ``(encoded bytes, label)`` pairs, checking each file cheaply.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
import tensorflow as tf

from keras_regkit._validation import check_choice, check_int
from keras_regkit.augment import kernels as K
from keras_regkit.augment.base import spec_error

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")  # as image_dataset_from_directory
ON_ERROR = ("raise", "skip")
CHANNELS = (1, 3)

JPEG, PNG, BMP, GIF, UNKNOWN = range(5)
_MAGIC = ((JPEG, b"\xff\xd8\xff"), (PNG, b"\x89PNG\r\n\x1a\n"), (BMP, b"BM"), (GIF, b"GIF8"))
_RATIOS = (1, 2, 4, 8)  # libjpeg's DCT-domain downscaling factors


# ------------------------------------------------------------------------------- file checking
def image_format(contents: tf.Tensor) -> tf.Tensor:
    """Format code (``JPEG``, ``PNG``, ``BMP``, ``GIF`` or ``UNKNOWN``) of encoded bytes, by magic.

    Args:
        contents: tf.string tensor of any shape.

    Returns:
        int32 tensor of the same shape.
    """
    head = tf.strings.substr(contents, 0, 8)
    code = tf.fill(tf.shape(contents), UNKNOWN)
    for fmt, magic in reversed(_MAGIC):
        code = tf.where(tf.strings.substr(head, 0, len(magic)) == magic, fmt, code)
    return code


def looks_valid(contents: tf.Tensor) -> tf.Tensor:
    """Cheap integrity check of one encoded image (a scalar tf.string), without decoding it.

    The file must start with the magic bytes of JPEG, PNG, BMP or GIF; a JPEG must end with its
    end-of-image marker ``FF D9`` and a PNG with its ``IEND`` chunk (catches truncated files).
    Files with bytes appended after those end markers are reported as bad. The check adds about
    0.03 ms per file in a ``tf.data`` map (reading one takes 0.05 ms, decoding a 375x500 JPEG
    0.6 ms); searching the last bytes for the markers instead, or branching with ``tf.cond``,
    costs about 3 times more.

    Returns:
        A scalar bool tensor.
    """
    head = tf.strings.substr(contents, 0, 8)

    def starts(magic: bytes):
        return tf.strings.substr(head, 0, len(magic)) == magic

    # Plain comparisons: image_format's chain of ``where`` would add a third to the cost.
    length = tf.strings.length(contents)
    jpeg_end = tf.strings.substr(contents, tf.maximum(length - 2, 0), 2) == b"\xff\xd9"
    png_end = tf.strings.substr(contents, tf.maximum(length - 8, 0), 4) == b"IEND"
    return ((starts(b"\xff\xd8\xff") & jpeg_end) | ((head == _MAGIC[PNG][1]) & png_end)
            | starts(b"BM") | starts(b"GIF8"))


# ------------------------------------------------------------------------------------- listing
def _list_classes(directory: str, class_names) -> list[str]:
    owner = "image_files"
    subdirs = sorted(name.rstrip("/") for name in tf.io.gfile.listdir(directory)
                     if not name.startswith(".")
                     and tf.io.gfile.isdir(os.path.join(directory, name)))
    if not subdirs:
        spec_error(owner, "directory", "a folder with one subfolder per class",
                   f"{directory!r} without subfolders")
    if class_names is None:
        return subdirs
    if isinstance(class_names, str) or not isinstance(class_names, Sequence) \
            or not all(isinstance(n, str) for n in class_names):
        spec_error(owner, "class_names", "a list of subfolder names", repr(class_names))
    class_names = list(class_names)
    if not class_names or len(set(class_names)) != len(class_names) \
            or not set(class_names) <= set(subdirs):
        spec_error(owner, "class_names", f"distinct names of subfolders of the directory "
                   f"(a subset of {subdirs}, in the order of the labels)", repr(class_names))
    return class_names


def _list_files(folder: str) -> list[str]:
    """Image files under ``folder``, recursively, sorted as Keras sorts them."""
    found = []
    for root, _, files in sorted(tf.io.gfile.walk(folder), key=lambda entry: entry[0]):
        found += [os.path.join(root, name) for name in sorted(files)
                  if name.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def _warn_skipped(path) -> bool:
    warnings.warn(f"image_files: skipping {path.numpy().decode()!r}: not a valid JPEG, PNG, BMP "
                  "or GIF file (bad header or truncated)", RuntimeWarning, stacklevel=2)
    return False


def image_files(directory: str, *, class_names: Sequence[str] | None = None,
                shuffle: bool = True, seed: int | None = None,
                on_error: str = "raise") -> tf.data.Dataset:
    """An unbatched dataset of ``(encoded image bytes, int32 label)`` from class subfolders.

    Labels are as in ``keras.utils.image_dataset_from_directory(labels="inferred")``: the index of
    the class subfolder in sorted order (or in ``class_names``); files with the extensions of
    ``IMAGE_EXTENSIONS`` are found recursively in each class subfolder, others are ignored.

    The list of file names is shuffled by ``Dataset.shuffle`` before any file is read, with a new
    order at each iteration (reproducible when ``seed`` is given); files are then read in
    parallel and checked cheaply (see :func:`looks_valid`).

    Args:
        directory: folder with one subfolder per class (hidden folders are ignored).
        class_names: optional names of the subfolders to use, in label order (a subset of them).
        shuffle: shuffle the files (once per iteration); False keeps the sorted order.
        seed: optional seed of the shuffle, an integer >= 0.
        on_error: ``"raise"``: a bad file stops the iteration with an ``InvalidArgumentError``
            naming it; ``"skip"``: a bad file is dropped with a ``RuntimeWarning`` naming it.

    Returns:
        A ``tf.data.Dataset`` of ``(tf.string scalar, tf.int32 scalar)`` with attributes
        ``class_names`` (list of str) and ``file_paths`` (all files, in label then path order).

    Raises:
        ValueError: missing directory, no class subfolders, no image files, ``class_names`` not
            matching the subfolders, bad ``on_error`` or negative ``seed``.
        TypeError: non-integer ``seed``.
    """
    owner = "image_files"
    check_choice(owner, "on_error", on_error, ON_ERROR)
    if seed is not None:
        seed = check_int(owner, "seed", seed, 0)
    directory = os.fspath(directory)
    if not tf.io.gfile.isdir(directory):
        spec_error(owner, "directory", "an existing folder", repr(directory))
    class_names = _list_classes(directory, class_names)
    paths, labels = [], []
    for label, name in enumerate(class_names):
        found = _list_files(os.path.join(directory, name))
        paths += found
        labels += [label] * len(found)
    if not paths:
        spec_error(owner, "directory", f"a folder whose class subfolders hold image files "
                   f"{IMAGE_EXTENSIONS}", f"none in {directory!r}")

    files = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32)))
    if shuffle:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def read(path, label):
        contents = tf.io.read_file(path)
        return contents, label, path, looks_valid(contents)

    def read_or_raise(path, label):
        contents, label, path, ok = read(path, label)
        check = tf.debugging.Assert(
            ok, ["image_files: not a valid JPEG, PNG, BMP or GIF file (bad header or truncated):",
                 path])
        with tf.control_dependencies([check]):
            return tf.identity(contents), label

    def keep(contents, label, path, ok):
        return tf.cond(ok, lambda: tf.constant(True),
                       lambda: tf.py_function(_warn_skipped, [path], tf.bool))

    if on_error == "raise":
        data = files.map(read_or_raise, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = files.map(read, num_parallel_calls=tf.data.AUTOTUNE).filter(keep)
        data = data.map(lambda contents, label, path, ok: (contents, label))
    data.class_names = class_names
    data.file_paths = paths
    return data


# --------------------------------------------------------------------------------------- sizes
def _from_bytes(b: tf.Tensor, start: int, n: int, big_endian: bool) -> tf.Tensor:
    """Unsigned integers from bytes ``[start, start + n)`` of each row of ``b`` (int32)."""
    order = range(start, start + n) if big_endian else range(start + n - 1, start - 1, -1)
    value = tf.zeros_like(b[:, 0])
    for k in order:
        value = value * 256 + b[:, k]
    return value


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT, JPG, DAC)


def jpeg_size(contents: bytes) -> tuple[int, int]:
    """``(height, width)`` from a JPEG's frame header, walking its marker segments.

    Raises:
        ValueError: when no frame header is found before the data ends (not a JPEG, or cut).
    """
    i, n = 2, len(contents)
    while i + 9 <= n:
        if contents[i] != 0xFF:
            raise ValueError(f"image_sizes: corrupt JPEG header (byte {i} is not a marker)")
        marker = contents[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF_MARKERS:
            return (contents[i + 5] << 8 | contents[i + 6], contents[i + 7] << 8 | contents[i + 8])
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        i += 2 + (contents[i + 2] << 8 | contents[i + 3])
    raise ValueError("image_sizes: corrupt JPEG header (no frame header found)")


def _jpeg_sizes(encoded: np.ndarray) -> np.ndarray:
    return np.array([jpeg_size(contents) for contents in encoded], np.int32).reshape(-1, 2)


def image_sizes(encoded) -> tf.Tensor:
    """``[height, width]`` of each encoded image, read from its header only.

    JPEG sizes come from the frame header (SOF marker), found by walking the marker segments in
    one ``tf.numpy_function`` per batch (a few microseconds per file; ``extract_jpeg_shape`` in
    a ``map_fn`` costs about 0.1 ms per file); PNG, BMP and GIF sizes from their fixed header
    fields (PNG IHDR, BMP info header, GIF logical screen), for the whole batch at once. Works eagerly and in graph mode (e.g. in a
    ``tf.data`` map).

    Args:
        encoded: (batch,) tf.string of encoded JPEG, PNG, BMP or GIF images.

    Returns:
        (batch, 2) int32 tensor.

    Raises:
        InvalidArgumentError: (at run time) for bytes of another format or a corrupt JPEG header.
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    fmt = image_format(encoded)
    known = tf.debugging.Assert(tf.reduce_all(fmt != UNKNOWN), [
        "image_sizes: encoded must be JPEG, PNG, BMP or GIF images; unknown magic bytes:",
        tf.strings.substr(tf.boolean_mask(encoded, fmt == UNKNOWN), 0, 8)])
    # Fixed 26-byte headers (zero-padded) decode as one (batch, 26) array.
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(encoded, 0, 26), b"\0" * 26]),
                             0, 26)
    b = tf.reshape(tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int32), [-1, 26])
    # BMP height is a signed little-endian int32 (negative: rows stored top-down).
    bmp_height = tf.abs(tf.bitcast(tf.cast(_from_bytes(b, 22, 4, False), tf.uint32), tf.int32))
    height = tf.where(fmt == PNG, _from_bytes(b, 20, 4, True),
                      tf.where(fmt == BMP, bmp_height, _from_bytes(b, 8, 2, False)))
    width = tf.where(fmt == PNG, _from_bytes(b, 16, 4, True),
                     tf.where(fmt == BMP, _from_bytes(b, 18, 4, False),
                              _from_bytes(b, 6, 2, False)))
    sizes = tf.stack([height, width], axis=1)
    is_jpeg = tf.where(fmt == JPEG)
    jpeg_sizes = tf.numpy_function(_jpeg_sizes, [tf.gather_nd(encoded, is_jpeg)], tf.int32,
                                   stateful=False, name="jpeg_sizes")
    jpeg_sizes = tf.reshape(jpeg_sizes, [-1, 2])
    with tf.control_dependencies([known]):
        return tf.tensor_scatter_nd_update(sizes, is_jpeg, jpeg_sizes)


# ------------------------------------------------------------------------------------ decoding
def dct_level(box_height, box_width, out_height: int, out_width: int):
    """``k`` in 0..3 for libjpeg's downscaling by ``2**k``: the largest with the box at least
    ``2**k`` times the output size in both dimensions (Python ints or int32 tensors)."""
    level = 0
    for k in (1, 2, 3):
        fits = (box_height >= out_height << k) & (box_width >= out_width << k)
        level = level + (tf.cast(fits, tf.int32) if isinstance(fits, tf.Tensor) else int(fits))
    return level


def scaled_window(start, size, ratio):
    """The box ``[start, start + size)`` in an image downscaled by ``ratio``, rounded to pixels.

    Scaled pixel ``j`` covers full-resolution pixels ``[j r, (j + 1) r)``, so each edge moves by
    at most half a scaled pixel (half an output pixel or less, as the scaled box is at least the
    output size). Returns ``(scaled_start, scaled_size)``.
    """
    first = (2 * start + ratio) // (2 * ratio)
    last = (2 * (start + size) + ratio) // (2 * ratio)
    return first, last - first


def _decode_window_tf(contents, top, left, box_height, box_width, out_height, out_width,
                      channels, use_dct):
    """Decodes the box of one image (a JPEG box alone, possibly DCT-scaled); (h, w, C) uint8."""
    fmt = image_format(contents)

    def jpeg():
        level = dct_level(box_height, box_width, out_height, out_width) if use_dct else 0
        ratio = tf.bitwise.left_shift(1, level)
        row, height = scaled_window(top, box_height, ratio)
        col, width = scaled_window(left, box_width, ratio)
        window = tf.stack([row, col, height, width])

        def decoder(r):
            return lambda: tf.io.decode_and_crop_jpeg(contents, window, channels=channels,
                                                      ratio=r)

        # ``ratio`` is a static attribute of the decoder: one branch per scale.
        return tf.switch_case(tf.convert_to_tensor(level), [decoder(r) for r in _RATIOS])

    def other():
        if channels == 3:
            pixels = tf.io.decode_image(contents, 3, expand_animations=False)
        else:
            pixels = tf.cond(
                tf.equal(fmt, PNG), lambda: tf.io.decode_png(contents, 1),
                lambda: tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(
                    tf.io.decode_image(contents, 3, expand_animations=False), tf.float32))),
                    tf.uint8))
        shape = tf.shape(pixels)
        inside = ((top >= 0) & (left >= 0) & (top + box_height <= shape[0])
                  & (left + box_width <= shape[1]))
        check = tf.debugging.Assert(inside, ["decode_resized_crops: box (top, left, height, "
                                             "width) outside the image:", top, left, box_height,
                                             box_width, shape])
        with tf.control_dependencies([check]):
            return tf.slice(pixels, tf.stack([top, left, 0]), tf.stack([box_height, box_width,
                                                                         channels]))

    pixels = tf.cond(tf.equal(fmt, JPEG), jpeg, other)
    pixels.set_shape([None, None, channels])
    return pixels


def _decode_resized_crops_tf(encoded, top, left, box_height, box_width, out_height, out_width,
                             flip, channels, method, parallel_iterations):
    dtype = tf.float32 if method == "bilinear" else tf.uint8

    def one(args):
        contents, t, l, h, w, f = args
        window = _decode_window_tf(contents, t, l, h, w, out_height, out_width, channels,
                                   use_dct=method == "bilinear")
        if method == "nearest":
            size = tf.shape(window)
            return K.nearest_crops(window[None], [0], [0], size[0:1], size[1:2], out_height,
                                   out_width, flip_horizontal=f[None])[0]
        # The same half-pixel bilinear sampling as kernels.resized_crops over the whole window
        # (to float rounding, 5e-3 levels); outside XLA, ResizeBilinear costs half as much as
        # the gathers. A tf.cond flip is cheaper than tf.where or a gather here.
        out = tf.image.resize(window, (out_height, out_width), "bilinear", antialias=False)
        return tf.cond(f, lambda: tf.reverse(out, [1]), lambda: out)

    return tf.map_fn(one, (encoded, top, left, box_height, box_width, flip),
                     fn_output_signature=tf.TensorSpec([out_height, out_width, channels], dtype),
                     parallel_iterations=parallel_iterations)


def _imread_flag(channels: int, ratio: int) -> int:
    import cv2

    reduced = {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
               8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[ratio]
    # The REDUCED_COLOR_r flags are REDUCED_GRAYSCALE_r | IMREAD_COLOR (BGR). OpenCV >= 4.11 can
    # decode to RGB directly (IMREAD_COLOR_RGB), which costs nothing over BGR.
    color = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR) if channels == 3 else 0
    return reduced | color | cv2.IMREAD_IGNORE_ORIENTATION  # TensorFlow ignores EXIF too


def _decode_batch_cv(encoded, top, left, box_height, box_width, flip, out_height: int,
                     out_width: int, channels: int, method: str) -> np.ndarray:
    """The body of the OpenCV kernel: decode, crop, resize, flip, cast; one example at a time."""
    import cv2

    bgr = channels == 3 and not hasattr(cv2, "IMREAD_COLOR_RGB")
    out = K.aligned_empty((len(encoded), out_height, out_width, channels), np.uint8)
    write = K.bilinear_into if method == "bilinear" else K.nearest_into
    for i, contents in enumerate(encoded):
        t, l, h, w = int(top[i]), int(left[i]), int(box_height[i]), int(box_width[i])
        ratio = 1
        if method == "bilinear" and contents[:3] == b"\xff\xd8\xff":
            ratio = 1 << dct_level(h, w, out_height, out_width)
            (t, h), (l, w) = scaled_window(t, h, ratio), scaled_window(l, w, ratio)
        pixels = cv2.imdecode(np.frombuffer(contents, np.uint8), _imread_flag(channels, ratio))
        if pixels is None:
            raise ValueError(f"decode_resized_crops: OpenCV could not decode example {i}")
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        height, width = pixels.shape[:2]
        K.check_box("decode_resized_crops", i, (t, l, h, w), height, width)
        write(pixels[t:t + h, l:l + w], out[i], bool(flip[i]), reverse_channels=bgr)
    return out


def decode_resized_crops(encoded, top, left, box_height, box_width, out_height: int,
                         out_width: int, flip_horizontal=None, channels: int = 3,
                         method: str = "bilinear", kernel: str = "tensorflow",
                         parallel_iterations: int = 8) -> tf.Tensor:
    """Decodes only a box of each encoded image and resizes it, as :func:`kernels.resized_crops`.

    Boxes are in the pixel coordinates of the full image (e.g. drawn from :func:`image_sizes`).
    A JPEG box is decoded alone (``decode_and_crop_jpeg``), and for ``"bilinear"`` at 1/2, 1/4
    or 1/8 scale when the box is at least that many times the output size in both dimensions
    (libjpeg's DCT-domain downscaling); the box is then rounded to the scaled pixel grid, so its
    edges move by at most half an output pixel, and the result is a little smoother than a
    full-resolution bilinear resize (less aliasing). PNG, BMP and GIF images are decoded whole.
    Grayscale files give 3 equal channels for ``channels=3``; alpha is dropped; ``channels=1``
    gives luma.

    Args:
        encoded: (batch,) tf.string of encoded JPEG, PNG, BMP or GIF images.
        top, left, box_height, box_width: (batch,) int32 boxes inside the images, sizes >= 1.
        out_height, out_width: output size.
        flip_horizontal: optional (batch,) bool; mirror those examples left-right.
        channels: 1 or 3.
        method: ``"bilinear"`` (float32 output) or ``"nearest"`` (uint8, never DCT-scaled).
        kernel: ``"tensorflow"`` (``tf.map_fn`` over the examples with TensorFlow's decoders,
            resizing with ``tf.image.resize``: the same convention, within 5e-3 of
            ``resized_crops`` of the same pixels) or ``"opencv"`` (one ``tf.numpy_function``
            calling ``cv2.imdecode`` and ``cv2.resize``). Results agree up to decoder
            differences (chroma upsampling, IDCT, rounding): under one level on average.
        parallel_iterations: examples decoded at once by the TensorFlow kernel (in a batch map
            on 2 cores: 1 is 20% slower than 4 to 16, 8 the fastest by a few percent).

    Returns:
        (batch, out_height, out_width, channels) float32 (bilinear) or uint8 (nearest).

    Raises:
        ValueError: bad ``channels``, ``method``, ``kernel``, output size or ``encoded`` rank;
            ``InvalidArgumentError`` at run time for undecodable data or boxes outside an image.
        ImportError: ``kernel="opencv"`` without OpenCV.
    """
    owner = "decode_resized_crops"
    K.check_method_kernel(owner, method, kernel)
    check_choice(owner, "channels", channels, CHANNELS)
    out_height = check_int(owner, "out_height", out_height, 1)
    out_width = check_int(owner, "out_width", out_width, 1)
    parallel_iterations = check_int(owner, "parallel_iterations", parallel_iterations, 1)
    encoded = tf.convert_to_tensor(encoded, tf.string)
    if encoded.shape.rank != 1:
        spec_error(owner, "encoded", "a batch of rank 1 (batch,)", f"shape {encoded.shape}")
    top, left, box_height, box_width = (tf.cast(v, tf.int32)
                                        for v in (top, left, box_height, box_width))
    flip = (tf.zeros(tf.shape(encoded), tf.bool) if flip_horizontal is None
            else tf.cast(flip_horizontal, tf.bool))
    if kernel == "tensorflow":
        return _decode_resized_crops_tf(encoded, top, left, box_height, box_width, out_height,
                                        out_width, flip, channels, method, parallel_iterations)

    def run(*args):
        out = _decode_batch_cv(*args, out_height, out_width, channels, method)
        return K.as_float32(out) if method == "bilinear" else out

    dtype = tf.float32 if method == "bilinear" else tf.uint8
    out = tf.numpy_function(run, [encoded, top, left, box_height, box_width, flip], dtype,
                            stateful=False, name="opencv_decode_resized_crops")
    out.set_shape([encoded.shape[0], out_height, out_width, channels])
    return out
