"""keras_regkit: the regularization toolbox for Keras 3.

Sub-packages:
    ops:       pure functions on tensors (``keras.ops``), the math of every layer.
    layers:    ``keras.layers.Layer`` subclasses (BatchNormalization, the Dropout family, noise).
    callbacks: ``keras.callbacks.Callback`` subclasses (EarlyStopping, population statistics, ...).
    stopping:  stopping rules and the Yao–Rosasco–Caponnetto theory.
    augment:   ``tf.data`` augmentation pipelines for images and text (import it explicitly).
    weight_decay: decoupled weight decay without biases and normalization weights
               (``exclude_from_weight_decay``), and the L2 penalty it matches
               (``l2_penalty_to_weight_decay``).
    local_cluster: run a multi-worker ``tf.distribute`` program as local processes.
    demo:      the main job, ``python -m keras_regkit.demo``.
"""

from keras_regkit import callbacks, layers, ops, stopping
from keras_regkit.callbacks.population_statistics import recompute_batch_statistics
from keras_regkit.mc_dropout import mc_predict
from keras_regkit.weight_decay import exclude_from_weight_decay, l2_penalty_to_weight_decay

__version__ = "0.1.0"

__all__ = [
    "callbacks",
    "layers",
    "ops",
    "stopping",
    "mc_predict",
    "recompute_batch_statistics",
    "exclude_from_weight_decay",
    "l2_penalty_to_weight_decay",
    "__version__",
]
