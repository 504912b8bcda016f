"""Decoupled weight decay done right: what to exclude, and how it relates to an L2 penalty.

Keras offers two ways to pull weights towards zero:

* ``kernel_regularizer=keras.regularizers.L2(l2)`` adds ``l2 * sum(w**2)`` to the loss, so the
  gradient gets ``2 * l2 * w`` and passes through the optimizer (momentum, Adam's scaling...).
* every optimizer's ``weight_decay=wd`` shrinks each variable before the gradient step,
  ``v <- v - v * wd * lr`` (decoupled weight decay; ``keras.optimizers.AdamW`` is Adam with it).
  By default it decays *every* trainable variable, biases and normalization scales included,
  unless ``optimizer.exclude_from_weight_decay(var_list=..., var_names=...)`` was called
  before the optimizer was built.

:func:`exclude_from_weight_decay` picks the variables to exclude by identity (the ``bias`` of
every layer, the weights of every normalization layer, optionally embeddings), not by name
patterns; :func:`l2_penalty_to_weight_decay` converts an L2 coefficient to the matching
``weight_decay``.

Reference:
    Loshchilov, Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Union

import keras

from keras_regkit import _compat, _validation
from keras_regkit import layers as regkit_layers

#: Keras's normalization layers whose trainable weights (``gamma``/``beta``, RMSNormalization's
#: ``scale``) are excluded by ``normalization=True``. ``UnitNormalization`` has no weights;
#: ``SpectralNormalization`` is a wrapper whose weight is the wrapped layer's kernel, which
#: should decay, so it is not listed. ``RMSNormalization`` is included when Keras has it.
KERAS_NORMALIZATION_LAYERS = tuple(
    cls
    for cls in (
        keras.layers.BatchNormalization,
        keras.layers.LayerNormalization,
        keras.layers.GroupNormalization,
        getattr(keras.layers, "RMSNormalization", None),
    )
    if cls is not None
)

#: keras_regkit's normalization layers (not subclasses of Keras's).
REGKIT_NORMALIZATION_LAYERS = (
    regkit_layers.BatchNormalization,
    regkit_layers.InstanceNormalization,
)

_OWNER = "exclude_from_weight_decay"


def normalization_layer_types() -> tuple:
    """The classes whose weights ``exclude_from_weight_decay(normalization=True)`` excludes.

    Keras's ``BatchNormalization``, ``LayerNormalization``, ``GroupNormalization`` and
    ``RMSNormalization`` (when the installed Keras has it), and keras_regkit's
    ``BatchNormalization`` and ``InstanceNormalization``. The test is ``isinstance``, so
    subclasses count too. A class is the rule, not a name pattern: a user layer called
    ``...Normalization`` is not caught (pass its weights to Keras's
    ``optimizer.exclude_from_weight_decay(var_list=...)`` first; they are kept), and Keras's
    ``SpectralNormalization`` (a wrapper around a layer whose kernel should decay) is
    deliberately left out.

    Returns:
        A tuple of layer classes.
    """
    return KERAS_NORMALIZATION_LAYERS + REGKIT_NORMALIZATION_LAYERS


def _layer_variable(layer, name: str):
    """``layer.<name>`` when it is a Keras variable (``None`` otherwise, or when absent)."""
    value = getattr(layer, name, None)
    return value if isinstance(value, keras.Variable) else None


def _unwrap(optimizer):
    """The optimizer that applies the decay: ``LossScaleOptimizer`` wraps the one that does."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


def _check_optimizer(optimizer):
    allowed = (
        "a Keras optimizer with decoupled weight decay, e.g. "
        "keras.optimizers.AdamW(weight_decay=0.004) or keras.optimizers.SGD(weight_decay=...)"
    )
    inner = _unwrap(optimizer)
    keras_optimizer = isinstance(inner, keras.optimizers.Optimizer)
    if not keras_optimizer or not _compat.has_weight_decay_exclusions(inner):
        raise ValueError(f"{_OWNER}: optimizer must be {allowed}, got {optimizer!r}")
    described = f"{type(inner).__name__} {inner.name!r}"
    if inner.weight_decay is None:
        raise ValueError(
            f"{_OWNER}: optimizer must be {allowed} (weight_decay set), got {described} with "
            "weight_decay=None"
        )
    if inner.built or optimizer.built:
        raise ValueError(
            f"{_OWNER}: optimizer must not be built yet (Keras decides which variables decay when "
            "it traces the train step, so a compiled step would ignore later exclusions); call "
            f"this after compile and before fit or optimizer.build, got built {described}"
        )
    return inner


def exclude_from_weight_decay(
    optimizer,
    model,
    *,
    biases: bool = True,
    normalization: bool = True,
    embeddings: bool = False,
) -> list:
    """Excludes ``model``'s biases, normalization weights (and embeddings) from weight decay.

    Keras optimizers apply decoupled weight decay (``weight_decay=...``) to every trainable
    variable unless told otherwise. Decaying biases and the scale and offset of normalization
    layers is usually unwanted: they do not set the capacity of the network the way kernels
    do, and pulling a normalization scale towards 0 fights the normalization. This function
    finds those variables **by identity**, walking every nested layer and sub-model (and
    ``model`` itself), and adds them to ``optimizer``'s exclusions, keeping any the user set
    earlier with ``optimizer.exclude_from_weight_decay(var_list=..., var_names=...)``:

    * ``biases``: the ``bias`` variable of every layer that has one (``Dense``, ``Conv*``,
      ``EinsumDense``, ``MultiHeadAttention``'s inner projections, recurrent cells, ...).
    * ``normalization``: every trainable weight of the layers in
      :func:`normalization_layer_types` (Keras's ``BatchNormalization``,
      ``LayerNormalization``, ``GroupNormalization``, ``RMSNormalization``; keras_regkit's
      ``BatchNormalization`` and ``InstanceNormalization``): ``gamma`` and ``beta``
      (RMSNormalization's ``scale``).
    * ``embeddings``: the ``embeddings`` matrix of every ``keras.layers.Embedding``.

    Only variables in ``model.trainable_variables`` are considered (a frozen layer's weights
    are not updated, so there is nothing to exclude); call this after freezing or unfreezing
    layers. Call it after ``compile`` (or on the optimizer you are about to pass to it) and
    before training: the optimizer must not be built. (Keras means to refuse late exclusions
    too, but its check reads an attribute that is never set: on TensorFlow and JAX the traced
    train step keeps decaying what it decayed when it was traced.) Keras's own
    ``optimizer.exclude_from_weight_decay`` *replaces* the exclusions, so call it before this
    function, not after. A ``LossScaleOptimizer`` (mixed precision) is looked through to the
    optimizer it wraps.

    Args:
        optimizer: a Keras optimizer with ``weight_decay`` set (``AdamW``,
            ``SGD(weight_decay=...)``, ...), or a ``keras.optimizers.LossScaleOptimizer``
            around one; not built yet.
        model: a built Keras model or layer whose variables the optimizer will train.
        biases: exclude the ``bias`` of every layer.
        normalization: exclude the weights of normalization layers.
        embeddings: exclude the ``embeddings`` of ``Embedding`` layers.

    Returns:
        The variables this call selected, in ``model.trainable_variables`` order (exclusions
        set earlier stay in force but are not listed unless selected again).

    Raises:
        ValueError: ``optimizer`` is not a Keras optimizer, has ``weight_decay=None`` or is
            already built; ``model`` is not built (its variables do not exist yet).
        TypeError: a flag is not a bool; ``model`` is not a Keras layer or model.

    Reference:
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (decoupled
        decay); He et al., "Bag of Tricks for Image Classification with Convolutional Neural
        Networks", CVPR 2019, section 3.1 ("no bias decay": biases and BN's gamma and beta).
    """
    flags = {"biases": biases, "normalization": normalization, "embeddings": embeddings}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{_OWNER}: {name} must be a bool, got {value!r}")
    inner = _check_optimizer(optimizer)
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"{_OWNER}: model must be a Keras model or layer, got {model!r}")
    if not model.built:
        raise ValueError(
            f"{_OWNER}: model must be built (its variables must exist; call "
            "model.build(input_shape) or run it on a batch first), got unbuilt model "
            f"{model.name!r}"
        )

    norm_types = normalization_layer_types() if normalization else ()
    chosen = set()
    for layer in [model] + _compat.flatten_layers(model):
        if biases:
            bias = _layer_variable(layer, "bias")
            if bias is not None:
                chosen.add(id(bias))
        if embeddings and isinstance(layer, keras.layers.Embedding):
            matrix = _layer_variable(layer, "embeddings")
            if matrix is not None:
                chosen.add(id(matrix))
        if norm_types and isinstance(layer, norm_types):
            chosen.update(id(weight) for weight in layer.weights)

    selected, seen = [], set()
    for variable in model.trainable_variables:
        if id(variable) in chosen and id(variable) not in seen:
            seen.add(id(variable))
            selected.append(variable)
    _compat.add_weight_decay_exclusions(inner, selected)
    return selected


def l2_penalty_to_weight_decay(
    l2: float, learning_rate: Union[float, keras.optimizers.schedules.LearningRateSchedule]
) -> float:
    """The Keras ``weight_decay`` whose decoupled decay equals ``L2(l2)``'s gradient under SGD.

    ``L2(l2)`` adds ``l2 * sum(w**2)`` to the loss, so a plain SGD step (no momentum) at
    learning rate ``lr`` is ``w <- w - lr * (grad + 2 * l2 * w)``. A Keras optimizer with
    ``weight_decay=wd`` does ``w <- w - w * wd * lr`` and then ``w <- w - lr * grad`` (the
    gradient is taken at the old weights), which is the same step when ``wd = 2 * l2``.

    The value returned is what a Keras user passes as ``weight_decay=`` to
    ``keras.optimizers.SGD``, ``AdamW``, ...: ``2 * l2``. It does **not** depend on the
    learning rate, because Keras multiplies the decay by the current learning rate itself; for
    the same reason the match holds at every step under a ``LearningRateSchedule`` too. Loshchilov
    & Hutter (2019, Proposition 1) write the decay per step instead,
    ``x <- (1 - lambda) x - alpha * grad``; their per-step rate is
    ``lambda = learning_rate * weight_decay = 2 * l2 * learning_rate`` (and their L2 coefficient
    is ``lambda' = lambda / alpha = 2 * l2``, as they write the penalty ``lambda'/2 * ||x||^2``).

    The match is exact only for SGD without momentum. With momentum the L2 gradient is also
    accumulated in the velocity, and with adaptive methods (Adam, RMSprop, ...) it is divided by
    the running gradient scale, so weights with large gradients are decayed less; decoupled
    decay (AdamW) shrinks every weight at the same rate. That difference is the point of the
    paper.

    Args:
        l2: the coefficient of ``keras.regularizers.L2``, a finite number >= 0.
        learning_rate: the optimizer's learning rate, a finite number > 0 or a
            ``keras.optimizers.schedules.LearningRateSchedule``. It is checked, and names the
            per-step rate above, but does not change the result.

    Returns:
        ``2 * l2``, the ``weight_decay`` to pass to a Keras optimizer.

    Raises:
        ValueError: ``l2`` negative or not finite; ``learning_rate`` not > 0 or not finite.
        TypeError: ``l2`` not a real number; ``learning_rate`` neither a real number nor a
            ``LearningRateSchedule``.

    Reference:
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Proposition 1.
    """
    owner = "l2_penalty_to_weight_decay"
    l2 = _validation.check_range(owner, "l2", l2, low=0.0)
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
            raise TypeError(
                f"{owner}: learning_rate must be a real number or a "
                f"keras.optimizers.schedules.LearningRateSchedule, got {learning_rate!r}"
            )
        _validation.check_range(owner, "learning_rate", learning_rate, low=0.0, low_inclusive=False)
    result = 2.0 * l2
    if not math.isfinite(result):  # l2 near the float maximum
        raise ValueError(f"{owner}: l2 must be at most {sys.float_info.max / 2:g}, got {l2!r}")
    return result


__all__ = ["exclude_from_weight_decay", "l2_penalty_to_weight_decay", "normalization_layer_types"]
