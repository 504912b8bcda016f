"""Encoded image files: listing and checking, header sizes, and decoding crops only."""

import os
import struct
import warnings

import numpy as np
import pytest
import tensorflow as tf

from keras_regkit.augment import files as F
from keras_regkit.augment import kernels as K

HIDDEN_CLASS = ".cache"
POSITION_ROUNDING = 5e-3  # ResizeBilinear's float32 positions against exact ones, in levels


# ---------------------------------------------------------------------------------- test images
@pytest.fixture(scope="module")
def photos():
    """The two 427x640 sample photos of scikit-learn (china, flower)."""
    from sklearn.datasets import load_sample_images

    return load_sample_images().images


def jpeg(img, quality=90) -> bytes:
    return tf.io.encode_jpeg(img, quality=quality).numpy()


def png(img) -> bytes:
    return tf.io.encode_png(img).numpy()


def bmp(img, top_down=False) -> bytes:
    """A 24-bit BMP (bottom-up unless ``top_down``)."""
    h, w, _ = img.shape
    stride = (w * 3 + 3) // 4 * 4
    rows = img[:, :, ::-1] if top_down else img[::-1, :, ::-1]
    data = b"".join(r.tobytes() + b"\0" * (stride - 3 * w) for r in rows)
    info = struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, 24, 0, len(data), 2835,
                       2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(data), 0, 0, 54) + info + data


def gray(img):
    return np.round(img.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)[..., None]


def rgba(img):
    alpha = np.full(img.shape[:2] + (1,), 200, np.uint8)
    return np.concatenate([img, alpha], axis=-1)


@pytest.fixture(scope="module")
def samples(photos):
    """Named encoded images of several formats and channel counts, with their RGB pixels."""
    china, flower = photos
    out = {
        "jpeg": jpeg(china[:300, :400]),
        "jpeg_flower": jpeg(flower[50:427, 100:600]),
        "jpeg_gray": jpeg(gray(flower[:200, :260])),
        "png": png(china[100:250, 200:420]),
        "png_gray": png(gray(flower[:150, :190])),
        "png_rgba": png(rgba(china[200:330, 300:470])),
        "bmp": bmp(flower[:61, :83]),
        "bmp_top_down": bmp(china[:40, :57], top_down=True),
    }
    return out


def decoded(data: bytes, channels=3) -> np.ndarray:
    return tf.io.decode_image(data, channels=channels, expand_animations=False).numpy()


@pytest.fixture
def folder(tmp_path, photos):
    """dog/ (2 JPEG + nested PNG), cat/ (2 JPEG, gray PNG, RGBA PNG), plus ignored entries."""
    china, flower = photos
    files = {
        "cat/a.jpg": jpeg(china[:120, :160]),
        "cat/b.JPEG": jpeg(flower[100:220, 200:360]),
        "cat/c.png": png(gray(flower[:90, :100])),
        "cat/d.png": png(rgba(china[50:130, 60:170])),
        "dog/x.jpg": jpeg(flower[:100, :100]),
        "dog/y.jpeg": jpeg(china[200:300, 300:420]),
        "dog/deep/z.png": png(china[:64, :48]),
    }
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / HIDDEN_CLASS).mkdir()
    (tmp_path / HIDDEN_CLASS / "h.jpg").write_bytes(files["cat/a.jpg"])
    (tmp_path / "README.jpg").write_bytes(files["cat/a.jpg"])  # not in a class folder
    return tmp_path, files


def contents_and_labels(ds):
    return [(bytes(c), int(y)) for c, y in ds.as_numpy_iterator()]


# ----------------------------------------------------------------------------------- image_files
def test_labels_class_names_and_file_paths(folder):
    root, files = folder
    ds = F.image_files(root, shuffle=False)
    assert ds.class_names == ["cat", "dog"]
    # Keras's order: folders sorted by path (dog before dog/deep), then file names sorted.
    expected = ["cat/a.jpg", "cat/b.JPEG", "cat/c.png", "cat/d.png", "dog/x.jpg", "dog/y.jpeg",
                "dog/deep/z.png"]
    assert ds.file_paths == [os.path.join(root, *name.split("/")) for name in expected]
    assert ds.element_spec == (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32))
    got = contents_and_labels(ds)
    assert got == [(files[name], 0 if name.startswith("cat") else 1) for name in expected]


def test_class_names_order_and_subset(folder):
    root, files = folder
    ds = F.image_files(root, class_names=["dog", "cat"], shuffle=False)
    labels = {c: y for c, y in contents_and_labels(ds)}
    assert labels[files["dog/x.jpg"]] == 0 and labels[files["cat/a.jpg"]] == 1
    only = F.image_files(root, class_names=["dog"], shuffle=False)
    assert only.class_names == ["dog"]
    assert sorted(contents_and_labels(only)) == sorted(
        (data, 0) for name, data in files.items() if name.startswith("dog"))


def test_same_format_as_keras(folder):
    import keras

    root, _ = folder
    ours = F.image_files(root, shuffle=False)
    theirs = keras.utils.image_dataset_from_directory(root, shuffle=False, batch_size=None,
                                                      image_size=(32, 32), verbose=False)
    assert ours.class_names == theirs.class_names
    assert ours.file_paths == theirs.file_paths
    assert [y for _, y in contents_and_labels(ours)] == [int(y) for _, y in theirs]


def test_shuffle_reproducible_with_seed_and_reshuffled_each_iteration(folder):
    root, _ = folder
    plain = contents_and_labels(F.image_files(root, shuffle=False))
    first = F.image_files(root, seed=3)
    second = F.image_files(root, seed=3)
    epochs = [contents_and_labels(first) for _ in range(4)]
    assert epochs == [contents_and_labels(second) for _ in range(4)]
    assert all(sorted(e) == sorted(plain) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # a new order each iteration
    assert contents_and_labels(F.image_files(root, seed=4)) != epochs[0]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"on_error": "ignore"}, ValueError, "image_files: on_error must be one of 'raise', 'skip'"),
    ({"seed": -1}, ValueError, "image_files: seed must be an integer >= 0, got -1"),
    ({"seed": 1.5}, TypeError, "image_files: seed must be an integer"),
    ({"class_names": ["cat", "bird"]}, ValueError, r"class_names must be distinct names of "
                                                   r"subfolders .*\['cat', 'dog'\]"),
    ({"class_names": ["cat", "cat"]}, ValueError, "class_names must be distinct"),
    ({"class_names": []}, ValueError, "class_names must be distinct"),
    ({"class_names": "cat"}, ValueError, "class_names must be a list of subfolder names"),
    ({"class_names": [HIDDEN_CLASS]}, ValueError, "class_names must be distinct"),
])
def test_argument_errors(folder, kwargs, error, match):
    with pytest.raises(error, match=match):
        F.image_files(folder[0], **kwargs)


def test_directory_errors(tmp_path):
    with pytest.raises(ValueError, match="image_files: directory must be an existing folder"):
        F.image_files(tmp_path / "missing")
    (tmp_path / "file.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(ValueError, match="directory must be an existing folder"):
        F.image_files(tmp_path / "file.jpg")
    with pytest.raises(ValueError, match="directory must be a folder with one subfolder per "
                                         "class, got .* without subfolders"):
        F.image_files(tmp_path)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.txt").write_text("text")
    with pytest.raises(ValueError, match="image files .*'.jpg', '.jpeg', '.png', '.bmp', "
                                         "'.gif'.*got none in"):
        F.image_files(tmp_path)


@pytest.fixture
def corrupt(folder):
    root, files = folder
    truncated = root / "dog" / "truncated.jpg"
    truncated.write_bytes(files["dog/x.jpg"][: len(files["dog/x.jpg"]) // 2])
    text = root / "cat" / "x.jpg"
    text.write_text("this is not a JPEG file, just text named like one")
    cut_png = root / "cat" / "cut.png"
    cut_png.write_bytes(files["cat/c.png"][:-20])
    return root, files, [str(truncated), str(text), str(cut_png)]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_bad_file_raises_with_its_path(corrupt, index):
    root, _, bad = corrupt
    others = [path for path in bad if path != bad[index]]
    for path in others:
        os.remove(path)
    ds = F.image_files(root, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a valid JPEG, PNG") as info:
        list(ds)
    assert bad[index] in str(info.value)


def test_bad_files_skipped_with_warnings(corrupt):
    root, files, bad = corrupt
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = contents_and_labels(F.image_files(root, on_error="skip", seed=0))
    assert sorted(c for c, _ in got) == sorted(files.values())
    messages = " ".join(str(w.message) for w in caught if w.category is RuntimeWarning)
    for path in bad:
        assert path in messages


def test_looks_valid(samples):
    for name, data in samples.items():
        assert F.looks_valid(data), name
    gif = b"GIF89a" + b"\0" * 20
    for data, ok in [(b"", False), (b"\xff\xd8", False), (b"\xff\xd8\xff\xd9", True),
                     (samples["jpeg"][:-1], False), (samples["jpeg"] + b"\0", False),
                     (samples["png"][:-12], False), (gif, True), (b"RIFF....WEBP", False)]:
        assert bool(F.looks_valid(data)) is ok, data[:12]


# ---------------------------------------------------------------------------------- image_sizes
def test_image_sizes_equal_decoded_shapes(samples):
    names = list(samples)
    sizes = F.image_sizes([samples[n] for n in names]).numpy()
    for name, size in zip(names, sizes):
        assert tuple(size) == decoded(samples[name]).shape[:2], name


def test_image_sizes_of_a_gif():
    image = pytest.importorskip("PIL.Image")
    import io

    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image.fromarray(pixels).save(buffer, format="GIF")
    data = buffer.getvalue()
    assert F.looks_valid(data)
    assert tuple(F.image_sizes([data]).numpy()[0]) == decoded(data).shape[:2] == (37, 53)


def test_image_sizes_in_a_tf_data_map(samples):
    data = list(samples.values())
    ds = tf.data.Dataset.from_tensor_slices(data).batch(3).map(F.image_sizes)
    got = np.concatenate(list(ds.as_numpy_iterator()))
    np.testing.assert_array_equal(got, [decoded(d).shape[:2] for d in data])


def test_image_sizes_rejects_non_images_and_accepts_empty_batches():
    with pytest.raises(tf.errors.InvalidArgumentError, match="unknown magic bytes"):
        F.image_sizes([b"definitely not an image"])
    assert F.image_sizes(tf.constant([], tf.string)).shape == (0, 2)


# ------------------------------------------------------------------------ decode_resized_crops
def random_boxes(sizes, seed, min_fraction=0.3):
    """Boxes inside each (height, width), of at least ``min_fraction`` of each side."""
    rng = np.random.default_rng(seed)
    boxes = []
    for h, w in sizes:
        bh = int(rng.integers(max(1, int(min_fraction * h)), h + 1))
        bw = int(rng.integers(max(1, int(min_fraction * w)), w + 1))
        boxes.append((int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw))
    top, left, bh, bw = (np.array(v, np.int32) for v in zip(*boxes))
    flips = rng.random(len(sizes)) < 0.5
    return top, left, bh, bw, flips


def reference_crops(images, top, left, bh, bw, oh, ow, flips, method="bilinear"):
    return np.concatenate([
        K.resized_crops(img[None], top[i:i + 1], left[i:i + 1], bh[i:i + 1], bw[i:i + 1], oh,
                        ow, flips[i:i + 1], method=method).numpy()
        for i, img in enumerate(images)])


def test_decode_equals_resized_crops_of_the_decoded_image(samples):
    """Crops too small for DCT scaling: decode_and_crop_jpeg equals a crop of decode_jpeg."""
    data = list(samples.values())
    images = [decoded(d) for d in data]
    top, left, bh, bw, flips = random_boxes([im.shape[:2] for im in images], seed=1)
    out_h = int(bh.max()) // 2 + 1  # every box smaller than 2x the output in height
    got = F.decode_resized_crops(data, top, left, bh, bw, out_h, 70, flips).numpy()
    assert got.dtype == np.float32 and got.shape == (len(data), out_h, 70, 3)
    # The TensorFlow kernel resizes with ResizeBilinear, whose float32 sample positions differ
    # from the exact ones of resized_crops by up to 1.5e-5 pixel: up to 255 * 1.5e-5 in value.
    np.testing.assert_allclose(got, reference_crops(images, top, left, bh, bw, out_h, 70, flips),
                               atol=POSITION_ROUNDING)


def test_nearest_is_exact_and_uint8(samples):
    data = list(samples.values())
    images = [decoded(d) for d in data]
    top, left, bh, bw, flips = random_boxes([im.shape[:2] for im in images], seed=2)
    got = F.decode_resized_crops(data, top, left, bh, bw, 20, 23, flips, method="nearest")
    assert got.dtype == tf.uint8
    np.testing.assert_array_equal(got.numpy(), reference_crops(images, top, left, bh, bw, 20, 23,
                                                               flips, "nearest"))


@pytest.mark.parametrize("out_size, ratio", [((150, 200), 2), ((60, 70), 4), ((30, 30), 8)])
def test_dct_scaled_decoding(photos, out_size, ratio):
    data = jpeg(photos[0])
    full = decoded(data)
    top, left, bh, bw = 20, 30, 400, 600
    oh, ow = out_size
    assert 1 << F.dct_level(bh, bw, oh, ow) == ratio
    got = F.decode_resized_crops([data], [top], [left], [bh], [bw], oh, ow).numpy()[0]
    # Exactly a bilinear resize of the scaled decode over the box rounded to the scaled grid.
    row, sh = F.scaled_window(top, bh, ratio)
    col, sw = F.scaled_window(left, bw, ratio)
    assert abs(row * ratio - top) <= ratio / 2 and abs((row + sh) * ratio - top - bh) <= ratio / 2
    scaled = tf.io.decode_jpeg(data, ratio=ratio).numpy()
    np.testing.assert_allclose(got, K.resized_crops(scaled[None], [row], [col], [sh], [sw], oh,
                                                    ow).numpy()[0], atol=POSITION_ROUNDING)
    # Close to an antialiased (area) resize of the full-resolution box; a full-resolution
    # bilinear resize without antialiasing aliases and is farther from it.
    crop = full[row * ratio:(row + sh) * ratio, col * ratio:(col + sw) * ratio]
    area = tf.image.resize(crop.astype(np.float32), (oh, ow), "area").numpy()
    plain = K.resized_crops(full[None], [top], [left], [bh], [bw], oh, ow).numpy()[0]
    assert np.abs(got - area).mean() < 5.0
    assert np.abs(got - area).mean() < np.abs(plain - area).mean()


def test_channels_one_gives_luma(samples):
    names = ["jpeg", "jpeg_gray", "png", "png_gray", "png_rgba", "bmp"]
    data = [samples[n] for n in names]
    sizes = F.image_sizes(data).numpy()
    top, left, bh, bw, flips = random_boxes(sizes, seed=3)
    got = F.decode_resized_crops(data, top, left, bh, bw, 16, 16, flips, channels=1).numpy()
    assert got.shape == (len(data), 16, 16, 1)
    rgb = F.decode_resized_crops(data, top, left, bh, bw, 16, 16, flips).numpy()
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.abs(got[..., 0] - luma).mean() < 3.0


def test_decode_in_tf_data_pipeline(folder):
    root, _ = folder

    def augment(encoded, labels):
        sizes = F.image_sizes(encoded)
        top, left = sizes[:, 0] // 4, sizes[:, 1] // 4
        crops = F.decode_resized_crops(encoded, top, left, sizes[:, 0] // 2, sizes[:, 1] // 2,
                                       24, 32, tf.ones_like(top, tf.bool))
        return crops, labels

    ds = F.image_files(root, seed=0).batch(3).map(augment, num_parallel_calls=2)
    assert ds.element_spec[0].shape.as_list() == [None, 24, 32, 3]
    images = np.concatenate([x for x, _ in ds.as_numpy_iterator()])
    assert images.shape == (7, 24, 32, 3) and 0 <= images.min() and images.max() <= 255


def test_box_outside_the_image_raises(samples):
    for data in (samples["jpeg"], samples["png"]):
        h, w = decoded(data).shape[:2]
        with pytest.raises(tf.errors.InvalidArgumentError):
            F.decode_resized_crops([data], [h - 5], [0], [10], [w], 8, 8)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"channels": 4}, ValueError, "decode_resized_crops: channels must be one of 1, 3"),
    ({"method": "area"}, ValueError, "decode_resized_crops: method must be one of"),
    ({"kernel": "pil"}, ValueError, "decode_resized_crops: kernel must be one of"),
    ({"out_height": 0}, ValueError, "out_height must be an integer >= 1"),
    ({"encoded": [[b"x"]]}, ValueError, "encoded must be a batch of rank 1"),
])
def test_decode_argument_errors(samples, kwargs, error, match):
    args = {"encoded": [samples["png"]], "top": [0], "left": [0], "box_height": [4],
            "box_width": [4], "out_height": 2, "out_width": 2}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        F.decode_resized_crops(**args)


# -------------------------------------------------------------------------------- opencv kernel
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("out_size", [(48, 64), (150, 150)])
def test_opencv_kernel_agrees_with_tensorflow(samples, photos, channels, out_size):
    pytest.importorskip("cv2")
    data = list(samples.values()) + [jpeg(photos[0]), jpeg(photos[1])]
    sizes = F.image_sizes(data).numpy()
    top, left, bh, bw, flips = random_boxes(sizes, seed=4, min_fraction=0.5)
    args = (data, top, left, bh, bw, *out_size, flips, channels)
    cv = F.decode_resized_crops(*args, kernel="opencv").numpy()
    ours = F.decode_resized_crops(*args).numpy()
    assert cv.shape == ours.shape == (len(data), *out_size, channels)
    diff = np.abs(cv - ours).mean(axis=(1, 2, 3))
    assert diff.max() < 3.0, diff


def test_opencv_nearest_is_exact_on_lossless_files(samples):
    pytest.importorskip("cv2")
    data = [samples[n] for n in ("png", "png_gray", "png_rgba", "bmp", "bmp_top_down")]
    sizes = F.image_sizes(data).numpy()
    top, left, bh, bw, flips = random_boxes(sizes, seed=5)
    args = (data, top, left, bh, bw, 31, 17, flips)
    np.testing.assert_array_equal(
        F.decode_resized_crops(*args, method="nearest", kernel="opencv").numpy(),
        F.decode_resized_crops(*args, method="nearest").numpy())


def test_opencv_kernel_errors(samples):
    pytest.importorskip("cv2")
    h, w = decoded(samples["png"]).shape[:2]
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="box 0 must lie"):
        F.decode_resized_crops([samples["png"]], [h - 5], [0], [10], [w], 8, 8, kernel="opencv")
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="could not decode"):
        F.decode_resized_crops([b"\x89PNG\r\n\x1a\nbroken"], [0], [0], [1], [1], 8, 8,
                               kernel="opencv")


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_opencv_kernel_without_rgb_decoding(samples, photos, monkeypatch, method):
    """OpenCV before IMREAD_COLOR_RGB decodes to BGR; the kernel reverses the channels."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "IMREAD_COLOR_RGB"):
        pytest.skip("this OpenCV always decodes to BGR")
    data = [samples["jpeg"], samples["png_rgba"], jpeg(photos[1])]
    sizes = F.image_sizes(data).numpy()
    top, left, bh, bw, flips = random_boxes(sizes, seed=6, min_fraction=0.6)
    args = (data, top, left, bh, bw, 40, 30, flips)
    rgb = F.decode_resized_crops(*args, method=method, kernel="opencv").numpy()
    monkeypatch.delattr(cv2, "IMREAD_COLOR_RGB")
    np.testing.assert_array_equal(
        F.decode_resized_crops(*args, method=method, kernel="opencv").numpy(), rgb)


def test_jpeg_header_parser_equals_libjpeg(photos):
    """The marker walk of ``jpeg_size`` against libjpeg's ``extract_jpeg_shape``, for baseline,
    progressive, grayscale and odd sizes; a cut or foreign header raises."""
    china = photos[0]
    cases = [tf.io.encode_jpeg(gray(china[:427, :640]) if g else china[:h, :w], quality=q,
                               progressive=pr).numpy()
             for h, w, q, pr, g in [(300, 400, 90, False, False), (17, 33, 50, True, False),
                                    (427, 640, 95, False, True), (1, 1, 75, False, False)]]
    for data in cases:
        np.testing.assert_array_equal(F.jpeg_size(data),
                                      tf.image.extract_jpeg_shape(data)[:2].numpy())
    with pytest.raises(ValueError, match="corrupt JPEG header"):
        F.jpeg_size(cases[0][:20])
    with pytest.raises(ValueError, match="corrupt JPEG header"):
        F.jpeg_size(b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 40)
