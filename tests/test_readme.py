"""Runs every ```python block of README.md, so a snippet that drifts from the code fails.

Each block is one test case (id ``block<N>-<section heading>``), executed in-process with
``exec`` in a fresh namespace and compiled with README.md as its file name and the block's
own line numbers, so a traceback points at the README line that broke.

Blocks use placeholders that a reader fills in (``train_ds``, ``x``, ``model``, ...). The
names a block reads but never binds are found with ``ast``, and the prelude gives each one a
tiny stand-in of the right shape and dtype (``STAND_INS``); a block that reads a name with no
stand-in fails with a message that says so. Commented-out lines stay comments. The blocks run
in a temporary directory, so files they write (``ckpt/best.weights.h5``) land there. The only
patch is in the 'Scaling out' block: ``tf.distribute.MultiWorkerMirroredStrategy`` is replaced
by a one-CPU ``MirroredStrategy`` (see :func:`_single_process_strategy`).

After a block has run, cheap checks look at what it made (:func:`_check_results`), and
:func:`test_yao_blocks_use_one_theta` checks that a block pairing ``YaoStepSchedule`` with
``YaoStoppingTime`` gives both the same ``theta`` (a mismatch stops at about ``m^(1/3)``
instead of ``m^(2/3)`` steps, silently).
"""

from __future__ import annotations

import ast
import builtins
import math
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

README = Path(__file__).resolve().parents[1] / "README.md"

_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([^`\s]*)")


def _readme_python_blocks(text: str) -> list[tuple[str, int, str]]:
    """``(heading, first code line number, code)`` for every fenced ``python`` block, in order."""
    blocks, heading, fence, info, start, lines = [], "", None, "", 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is None:
            match = _FENCE.match(line)
            if match:
                fence, info, start, lines = match.group(1), match.group(2), number + 1, []
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            if info == "python":
                blocks.append((heading, start, "\n".join(lines) + "\n"))
            fence = None
        else:
            lines.append(line)
    return blocks


def _slug(heading: str, words: int = 4) -> str:
    """A short test id from a heading: no code spans or parentheses, text before any ':'."""
    text = re.sub(r"`[^`]*`|\([^)]*\)", " ", heading).split(":")[0]
    return "-".join(re.findall(r"[A-Za-z0-9]+", text)[:words]) or "untitled"


BLOCKS = _readme_python_blocks(README.read_text(encoding="utf-8"))
IDS = [f"block{i}-{_slug(heading)}" for i, (heading, _, _) in enumerate(BLOCKS, start=1)]


def _free_names(code: str) -> set[str]:
    """Names the code reads but never binds (imports, assignments, defs, arguments)."""
    tree = ast.parse(code)
    loaded, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound - set(dir(builtins))


# ------------------------------------------------------------------ stand-ins
# Each factory gets the block's free names (some stand-ins depend on their neighbours, e.g.
# ``model`` has to fit the data the block gives it) and returns a tiny object.


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _train_ds(free):
    """28x28x1 float images with sparse labels, 2 batches of 64 (the BatchNormalization block)."""
    images = _rng().normal(size=(128, 28, 28, 1)).astype("float32")
    labels = _rng().integers(0, 10, size=128)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(64)


def _regression(split: int):
    """Pure-noise targets: the stand-in model overfits at once, so patience stops it early."""
    rng = np.random.default_rng(split)
    return rng.normal(size=(32, 8)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")


def _x_uint8(free):
    """16 CIFAR-like 32x32x3 uint8 images (the augmentation block)."""
    return _rng().integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)


def _y_onehot(free):
    return keras.utils.to_categorical(_rng().integers(0, 10, size=16), 10).astype("float32")


def _image_classifier():
    """A 32x32x3 -> 10-way softmax model for images in [0, 255]."""
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(4, 3, strides=2),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])


def _model(free):
    """A compiled model for the data the block gives it."""
    if "x_uint8" in free:
        model = _image_classifier()
        model.compile("adam", "categorical_crossentropy")
        return model
    if "x" in free:
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(0.05), "mse")
        return model
    raise AssertionError(f"no stand-in for `model` with the data names {sorted(free)}")


def _examples(free):
    """16 unbatched (32x32x3 uint8 image, label) examples (the 'Scaling out' block)."""
    return tf.data.Dataset.from_tensor_slices((_x_uint8(free), _rng().integers(0, 10, size=16)))


def _build_model(free):
    """What the 'Scaling out' block's comment asks for: a model with synchronized BN."""
    from keras_regkit.layers import BatchNormalization

    def build_model():
        model = keras.Sequential([
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(4, 3),
            BatchNormalization(synchronized=True),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    return build_model


def _photo_dir(free):
    """A folder of class subfolders holding small real JPEGs (scikit-learn's sample photos)."""
    import tempfile

    from sklearn.datasets import load_sample_images

    root = Path(tempfile.mkdtemp(prefix="readme_photos_"))
    for k, photo in enumerate(load_sample_images().images):
        for j in range(3):
            folder = root / f"class_{k}"
            folder.mkdir(exist_ok=True)
            piece = np.ascontiguousarray(photo[60 * j:60 * j + 240, 80 * j:80 * j + 320])
            (folder / f"{j}.jpg").write_bytes(tf.io.encode_jpeg(piece, quality=90).numpy())
    return str(root)


def _boxed_objects():
    """8 images of 64x64 with one bright rectangle each, its mask and its box (xyxy)."""
    rng = _rng()
    images = np.zeros((8, 64, 64, 3), np.uint8)
    masks = np.zeros((8, 64, 64), np.uint8)
    boxes = np.zeros((8, 2, 4), np.float32)
    for i in range(8):
        y, x = rng.integers(4, 30, 2)
        images[i, y:y + 24, x:x + 30] = 255
        masks[i, y:y + 24, x:x + 30] = 1
        boxes[i, 0] = [x, y, x + 30, y + 24]
    labels = np.tile(np.array([[1, -1]], np.int32), (8, 1))  # the second box is padding
    return images, masks, boxes, labels


STAND_INS = {
    "photo_dir": _photo_dir,
    "images": lambda free: _boxed_objects()[0],
    "masks": lambda free: _boxed_objects()[1],
    "boxes": lambda free: _boxed_objects()[2],
    "box_labels": lambda free: _boxed_objects()[3],
    "train_ds": _train_ds,
    "x": lambda free: _regression(0)[0],
    "y": lambda free: _regression(0)[1],
    "xv": lambda free: _regression(1)[0],
    "yv": lambda free: _regression(1)[1],
    "x_uint8": _x_uint8,
    "y_onehot": _y_onehot,
    "model": _model,
    "examples": _examples,
    "build_model": _build_model,
}


def _prelude(code: str) -> dict:
    """A fresh namespace with a stand-in for every placeholder the block reads."""
    free = _free_names(code)
    missing = sorted(free - STAND_INS.keys())
    assert not missing, (
        f"the README block reads {missing}, which it never defines and which have no stand-in "
        "in tests/test_readme.py: define them in the block or add them to STAND_INS"
    )
    return {"__name__": "__readme__", **{name: STAND_INS[name](free) for name in sorted(free)}}


def _single_process_strategy(*args, **kwargs):
    """Stands in for ``tf.distribute.MultiWorkerMirroredStrategy()``.

    The real one needs a ``TF_CONFIG`` naming the workers, or else runs as a one-worker
    cluster that configures TensorFlow's collective ops for the whole process; that cannot be
    undone and would change every later test in this pytest process. The block only constructs
    things under the strategy (no ``fit``), so a ``MirroredStrategy`` on the CPU exercises the
    same API: ``distribute_datasets_from_function`` with an ``InputContext``, ``scope()`` and
    building the model. The patch lasts for the block only (``monkeypatch``): Keras uses the
    class in ``isinstance`` checks. Real multi-worker runs are tested in ``tests/distributed``
    and ``tests/examples/test_multi_worker.py``.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0"])


def _run_block(index: int, monkeypatch, tmp_path) -> tuple[dict, dict]:
    """Executes README block ``index`` in ``tmp_path``; returns (prelude, namespace after it)."""
    heading, start, code = BLOCKS[index]
    monkeypatch.chdir(tmp_path)
    if "MultiWorkerMirroredStrategy" in code:
        monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", _single_process_strategy)
    keras.backend.clear_session()
    prelude = _prelude(code)
    namespace = dict(prelude)
    # Leading newlines keep README.md's line numbers in tracebacks.
    exec(compile("\n" * (start - 1) + code, str(README), "exec"), namespace)
    return prelude, namespace


# --------------------------------------------------------------------- checks


def _objects(namespace: dict):
    """The namespace's values, and the items of any list, tuple or dict among them."""
    for value in namespace.values():
        yield value
        if isinstance(value, (list, tuple)):
            yield from value
        elif isinstance(value, dict):
            yield from value.values()


STOP_REASONS = {"patience", "threshold", "divergence", "non-finite", "GL", "PQ", "UP", "exception"}


def _check_results(prelude: dict, namespace: dict) -> None:
    """Cheap checks on what a block made, and on the stand-in models it trained."""
    from keras_regkit.callbacks import EarlyStopping

    given = {id(value) for value in prelude.values()}
    for value in _objects(namespace):
        if isinstance(value, EarlyStopping):
            assert value.stop_reason is None or value.stop_reason in STOP_REASONS, value.stop_reason
            if value.model is not None and value.backup_path is not None:  # it ran in a fit
                assert Path(value.backup_path).is_file(), "no backup of the best weights"
        elif isinstance(value, tf.distribute.DistributedDataset):
            images = next(iter(value))[0]
            for part in getattr(images, "values", (images,)):  # PerReplica or a tensor
                # The Pipeline's contract: float32 images in [0, 255].
                assert part.dtype == tf.float32 and part.shape.rank == 4, part
                assert 0.0 <= float(tf.reduce_min(part)) <= float(tf.reduce_max(part)) <= 255.0
        elif isinstance(value, keras.Model):
            history = getattr(value, "history", None)
            losses = history.history.get("loss", []) if history is not None else []
            assert all(math.isfinite(v) for v in losses), losses
            if id(value) not in given and value.built and value.inputs:
                shape = tuple(1 if dim is None else dim for dim in value.inputs[0].shape)
                out = keras.ops.convert_to_numpy(value(np.zeros(shape, "float32"), training=False))
                assert np.all(np.isfinite(out)), f"{value.name} gives non-finite outputs"


# ---------------------------------------------------------------------- tests


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5, [heading for heading, _, _ in BLOCKS]


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=IDS)
def test_readme_block_runs(index, monkeypatch, tmp_path):
    prelude, namespace = _run_block(index, monkeypatch, tmp_path)
    _check_results(prelude, namespace)


YAO_BLOCKS = [i for i, (_, _, code) in enumerate(BLOCKS)
              if "YaoStepSchedule(" in code and "YaoStoppingTime(" in code]


@pytest.mark.parametrize("index", YAO_BLOCKS, ids=[IDS[i] for i in YAO_BLOCKS])
def test_yao_blocks_use_one_theta(index, monkeypatch, tmp_path):
    """``YaoStoppingTime`` must use the step schedule's ``theta`` (it defaults to 0)."""
    from keras_regkit.callbacks import YaoStepSchedule, YaoStoppingTime

    _, namespace = _run_block(index, monkeypatch, tmp_path)
    objects = list(_objects(namespace))
    schedules = {o.theta for o in objects if isinstance(o, YaoStepSchedule)}
    stops = {o.theta for o in objects if isinstance(o, YaoStoppingTime)}
    assert schedules and stops, "the block should leave both objects in its namespace"
    assert len(schedules | stops) == 1, (
        f"YaoStepSchedule theta {sorted(schedules)} != YaoStoppingTime theta {sorted(stops)}"
    )
