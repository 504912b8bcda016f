"""Every reliance of keras_regkit on private Keras, TensorFlow or CPython internals.

Nothing else in the package imports ``keras.src`` or ``tensorflow.python``, calls
``sys._getframe``, or reads a private attribute of a Keras object. Each function below
wraps one behaviour that no public API offers, says what it relies on, and has a test in
``tests/test_compat.py`` that fails when a Keras or TensorFlow release changes it. The
package supports the Keras versions declared in ``pyproject.toml``; CI runs the layer and
callback tests against the lowest one.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator, Optional

import keras


# --------------------------------------------------------------------------- Keras layers
def flatten_layers(model) -> list:
    """Every layer nested in ``model`` (not ``model`` itself), depth first, each once.

    Relies on ``Layer._flatten_layers``: ``model.layers`` lists only direct children.
    """
    return list(model._flatten_layers(include_self=False, recursive=True))


def build_at_init(layer) -> None:
    """Marks a weightless layer as built at construction, as Keras's own such layers are.

    Relies on ``Layer._build_at_init``, which does so only when the class (or a subclass a
    user writes) does not override ``build``, and then locks the layer's state as a build
    does.
    """
    layer._build_at_init()


@contextlib.contextmanager
def overriding_call(layer, call: Callable) -> Iterator[None]:
    """Within the context, ``layer(...)`` runs ``call`` instead of the class's ``call``.

    Relies on ``Layer.__call__`` looking ``self.call`` up at every call (an instance
    attribute then shadows the method) on every backend. The attribute is set without
    Keras's attribute tracking and removed on exit.
    """
    if call_overridden(layer):
        raise RuntimeError(f"layer {layer.name!r} already has its call overridden")
    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        object.__delattr__(layer, "call")


def call_overridden(layer) -> bool:
    """Whether ``layer`` is inside an :func:`overriding_call` context."""
    return "call" in vars(layer)


def auto_name(prefix: str) -> str:
    """A fresh object name from Keras's counter (``"seed_generator"``, ``"seed_generator_1"``...).

    Relies on ``keras.src.utils.naming.auto_name``.
    """
    from keras.src.utils.naming import auto_name as keras_auto_name

    return keras_auto_name(prefix)


def print_msg(message: str) -> None:
    """Prints as Keras's callbacks do (to absl logging when interactive logging is off).

    Relies on ``keras.src.utils.io_utils.print_msg``.
    """
    from keras.src.utils import io_utils

    io_utils.print_msg(message)


# ------------------------------------------------------------------------- optimizers
def has_weight_decay_exclusions(optimizer) -> bool:
    """Whether ``optimizer`` skips decay per variable through Keras's exclusion mechanism.

    Relies on ``BaseOptimizer.exclude_from_weight_decay`` (public) and on the private
    ``_use_weight_decay(variable)`` that every Keras ``_apply_weight_decay`` (the base one, the
    TensorFlow and torch backends', Muon's) asks before decaying a variable.
    """
    return callable(getattr(optimizer, "exclude_from_weight_decay", None)) and callable(
        getattr(optimizer, "_use_weight_decay", None)
    )


def add_weight_decay_exclusions(optimizer, variables) -> None:
    """Adds ``variables`` to ``optimizer``'s weight-decay exclusions, keeping the earlier ones.

    Keras's public ``exclude_from_weight_decay(var_list, var_names)`` replaces both the set of
    excluded variable keys and the name pattern. This reads them first, from the private
    ``_exclude_from_weight_decay`` (a set of ``_var_key`` values; absent until the method is
    first called) and ``_exclude_from_weight_decay_pattern`` (a compiled regex or ``None``),
    calls the public method with ``variables`` and the old pattern's source (it compiles
    ``"|".join(var_names)``, so one name gives back the same pattern), then puts the old keys
    back into the new set. The keys are thus computed by Keras's own ``_var_key`` (``id`` on
    JAX and torch, the unwrapped ``tf.Variable``'s ``_unique_id`` on TensorFlow).
    ``_use_weight_decay`` reads both attributes when the train step is traced.
    """
    keys = set(getattr(optimizer, "_exclude_from_weight_decay", None) or ())
    pattern = getattr(optimizer, "_exclude_from_weight_decay_pattern", None)
    optimizer.exclude_from_weight_decay(
        var_list=list(variables), var_names=[pattern.pattern] if pattern is not None else None
    )
    optimizer._exclude_from_weight_decay.update(keys)


# ---------------------------------------------------------------------------- metrics
def metric_direction(model, name: str) -> Optional[str]:
    """``"max"``/``"min"`` for a compiled metric called ``name`` that knows its direction.

    Relies on the containers Keras's ``compile`` puts in ``model.metrics``
    (``CompileMetrics``, ``MetricsList``) and on metrics' ``_direction`` (``"up"`` or
    ``"down"``): exactly what ``keras.callbacks.MonitorCallback`` reads.
    """
    from keras.src.trainers.compile_utils import CompileMetrics, MetricsList

    direction = None
    for container in getattr(model, "metrics", None) or []:
        if isinstance(container, (CompileMetrics, MetricsList)):
            for metric in container.metrics:
                if metric.name == name and hasattr(metric, "_direction"):
                    direction = "max" if metric._direction == "up" else "min"
    return direction


# ----------------------------------------------------------------------------- random
def draw_seed(seed):
    """The seed tensor for one random op: ``seed.next()`` for a generator, else Keras's rule.

    Relies on ``keras.src.random.seed_generator.draw_seed`` (ints, ``None`` and generators).
    """
    from keras.src.random.seed_generator import draw_seed as keras_draw_seed

    return keras_draw_seed(seed)


def jax_draw_seed(seed):
    """A JAX PRNG key for ``seed``; relies on ``keras.src.backend.jax.random.jax_draw_seed``."""
    from keras.src.backend.jax.random import jax_draw_seed as keras_jax_draw_seed

    return keras_jax_draw_seed(seed)


def tf_in_xla_context() -> bool:
    """Whether TensorFlow code is being traced into an XLA cluster (``jit_compile=True``).

    Relies on ``tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext``. Callers
    only choose a faster kernel with the answer, so if the helper ever disappears the
    answer is ``False``: speed may change, numbers do not.
    """
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph()))
    except (ImportError, AttributeError):
        return False


# ------------------------------------------------------------------------ model.fit
#: What Keras's ``fit`` calls on the ``CallbackList`` it builds, looked up at every call.
FIT_CALLBACK_LIST_HOOKS = (
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_train_end",
)
#: What Keras's ``fit`` calls on the model at every step or epoch, looked up at every call: the
#: compiled step, the validation pass, and the per-epoch metric reset and read-out (a private
#: method). ``keras_regkit.callbacks._fit_guard`` shadows them with instance attributes.
FIT_MODEL_HOOKS = ("train_function", "evaluate", "reset_metrics", "_get_metrics_result_or_logs")


def jax_state_sync(model) -> None:
    """On JAX, writes the state ``fit`` keeps outside the variables back into them.

    Relies on the JAX trainer's ``jax_state_sync`` (absent on other backends: no-op).
    """
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def jax_fit_values(model, variables) -> Optional[list]:
    """On JAX inside ``fit``, the current values of ``variables`` without a state sync.

    The JAX trainer keeps the training state outside the variables between steps (and
    empties the variables meanwhile); ``jax_state_sync`` writes it back, after which the next
    step re-reads every variable. A callback that only reads weights at every step can look
    at the state instead. Relies on the trainer's ``_jax_state`` dict, whose
    ``"trainable_variables"``/``"non_trainable_variables"`` lists follow
    ``model.trainable_variables``/``model.non_trainable_variables``, and on
    ``_jax_state_synced``. Returns ``None`` when there is no such unsynced state (other
    backends, outside ``fit``, or already synced): the variables then hold the values.
    """
    state = getattr(model, "_jax_state", None)
    if not state or getattr(model, "_jax_state_synced", True):
        return None
    by_id = {}
    for key, owners in (("trainable_variables", model.trainable_variables),
                        ("non_trainable_variables", model.non_trainable_variables)):
        values = state.get(key) or ()
        by_id.update((id(v), value) for v, value in zip(owners, values))
    if not all(id(v) in by_id for v in variables):
        return None
    return [by_id[id(v)] for v in variables]


def find_in_callers(pick: Callable[[dict], Any], skip: int = 0, depth: int = 10) -> Any:
    """The first non-``None`` ``pick(frame.f_locals)`` among the calling frames, or ``None``.

    A callback only meets the objects ``fit`` built for it (its ``CallbackList``, its data
    adapter) through the frames that call it. Relies on ``sys._getframe`` (CPython).

    Args:
        pick: reads a frame's local variables; returns ``None`` when they hold nothing.
        skip: frames to skip: 0 starts at the caller of this function.
        depth: frames to look at.
    """
    frame = sys._getframe(1 + skip)
    for _ in range(depth):
        if frame is None:
            return None
        found = pick(frame.f_locals)
        if found is not None:
            return found
        frame = frame.f_back
    return None


def fit_callback_list(callback):
    """The ``CallbackList`` that the running ``fit`` built around ``callback``, or ``None``.

    Relies on ``fit`` calling ``CallbackList.on_train_begin``, whose frame has the list as
    ``self`` (see :func:`find_in_callers`).
    """

    def pick(local_vars):
        owner = local_vars.get("self")
        if isinstance(owner, keras.callbacks.CallbackList) and any(
            c is callback for c in owner.callbacks
        ):
            return owner
        return None

    return find_in_callers(pick, skip=1, depth=6)


def fit_sample_count() -> Optional[int]:
    """The number of training samples of the running ``fit`` (array inputs), or ``None``.

    Relies on ``fit``'s local ``epoch_iterator`` and its array data adapter's
    ``_num_samples`` (see :func:`find_in_callers`).
    """

    def pick(local_vars):
        adapter = getattr(local_vars.get("epoch_iterator"), "data_adapter", None)
        samples = getattr(adapter, "_num_samples", None)
        return samples if isinstance(samples, int) else None

    return find_in_callers(pick, skip=1, depth=10)


def called_from(function_name: str) -> bool:
    """Whether the caller of this function's caller is a function called ``function_name``.

    Used to tell that JAX's ``fit`` is running its ``finally:`` clause. Relies on
    ``sys._getframe`` (CPython).
    """
    frame = sys._getframe(2)
    return frame is not None and frame.f_code.co_name == function_name
