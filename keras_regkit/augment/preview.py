"""A PNG grid of original images and their augmentations, for eyeballing a pipeline."""

from __future__ import annotations

import numpy as np

from keras_regkit._validation import check_int
from keras_regkit.augment.base import spec_error


def preview(pipeline, images, path: str, labels=None, rounds: int = 3, max_images: int = 8) -> str:
    """Writes a grid: the originals in the first row, then ``rounds`` augmented versions.

    Args:
        pipeline: an image ``Pipeline``.
        images: array (n, height, width, channels), uint8 or float in [0, 255].
        path: output PNG path.
        labels: labels for pipelines with label ops (MixUp, CutMix, LabelSmoothing).
        rounds: number of augmented rows (epochs 0, 1, ... of the pipeline's draws).
        max_images: columns shown.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    if images.ndim != 4:
        spec_error("preview", "images", "an array (n, height, width, channels)", images.shape)
    rounds = check_int("preview", "rounds", rounds, 1)
    cols = min(check_int("preview", "max_images", max_images, 1), len(images))
    images = images[:cols]
    rows = [images.astype(np.float32)]
    for epoch in range(rounds):
        out = pipeline.augment(images, None if labels is None else np.asarray(labels)[:cols],
                               epoch=epoch)
        rows.append(np.asarray(out[0] if isinstance(out, tuple) else out))
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols, 1.3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            im = np.clip(row[c], 0, 255).astype(np.uint8)
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel("original" if r == 0 else f"epoch {r - 1}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
