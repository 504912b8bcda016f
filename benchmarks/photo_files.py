"""Folders of real JPEG photos for the file benchmarks and tests, without a download.

``write_photo_folders`` cuts pieces of scikit-learn's two sample photos (china.jpg and
flower.jpg, 427x640) at random positions, flips some, and writes them as JPEG files into class
subfolders. ``benchmarks/bench_augment.py --only jpeg`` times pipelines over such a folder.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf


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
