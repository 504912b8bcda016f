"""Run a function when ``model.fit`` is left by an exception, without wrapping ``fit``.

Keras 3's ``fit`` has no ``except``/``finally`` that reaches the callbacks
(TensorFlow backend) or one that skips ``on_train_end`` on errors (JAX backend).
A callback only learns about the model inside ``fit``, so it cannot wrap the
call it is part of. Instead, for the duration of one ``fit``, the guard shadows
with instance attributes the few callables that ``fit`` looks up on every use:

* on the :class:`keras.callbacks.CallbackList` that ``fit`` built (found from
  the caller's frame in ``on_train_begin``, ``keras_regkit._compat.fit_callback_list``):
  ``on_epoch_begin/end``,
  ``on_train_batch_begin/end`` and ``on_train_end``;
* on the model: ``train_function`` (the compiled step), ``evaluate`` (the
  validation pass), ``reset_metrics`` and ``_get_metrics_result_or_logs`` (the
  start and end of each epoch) and, on JAX,
  ``jax_state_sync``, which ``fit`` calls in its ``finally`` clause and thus
  also sees errors raised in ``fit``'s own code.

Each shadow calls the original in ``try``/``except BaseException``, runs the
handler once, removes every shadow and re-raises the same exception object.
End-of-data signals (``StopIteration``, TensorFlow's ``OutOfRangeError``) are
control flow inside ``fit`` and pass through untouched.
"""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Callable

from keras_regkit import _compat

_CALLBACK_HOOKS = _compat.FIT_CALLBACK_LIST_HOOKS
_MODEL_HOOKS = _compat.FIT_MODEL_HOOKS


def _is_end_of_data(error: BaseException) -> bool:
    return isinstance(error, StopIteration) or type(error).__name__ == "OutOfRangeError"


class FitGuard:
    """Calls ``handler(exception)`` once if ``fit`` is left by an exception.

    Args:
        handler: called with the exception, before it propagates unchanged.
    """

    def __init__(self, handler: Callable[[BaseException], None]):
        self._handler = handler
        self._shadows: list[tuple[object, str, bool, object, object]] = []
        self._outer_error: BaseException | None = None

    @property
    def installed(self) -> bool:
        return bool(self._shadows)

    def install(self, model, callback_list=None) -> None:
        """Shadows the hooks of ``model`` and ``callback_list`` until :meth:`uninstall`."""
        self.uninstall()
        self._outer_error = sys.exc_info()[1]
        if callback_list is not None:
            for name in _CALLBACK_HOOKS:
                self._shadow(callback_list, name, self._guarded)
        for name in _MODEL_HOOKS:
            if callable(getattr(model, name, None)):
                self._shadow(model, name, self._guarded)
        if callable(getattr(model, "jax_state_sync", None)):
            self._shadow(model, "jax_state_sync", self._on_finally)

    def uninstall(self) -> None:
        """Puts every shadowed attribute back (unless someone replaced it since)."""
        while self._shadows:
            obj, name, had_own, original, shadow = self._shadows.pop()
            if obj.__dict__.get(name) is not shadow:
                continue
            if had_own:
                object.__setattr__(obj, name, original)
            else:
                object.__delattr__(obj, name)

    def _shadow(self, obj, name, make) -> None:
        original = getattr(obj, name)
        shadow = make(original)
        had_own = name in obj.__dict__
        object.__setattr__(obj, name, shadow)
        self._shadows.append((obj, name, had_own, original, shadow))

    def _fire(self, error: BaseException) -> None:
        if not self.installed:
            return
        self.uninstall()
        try:
            self._handler(error)
        except Exception as handler_error:  # never mask the user's exception
            warnings.warn(
                f"EarlyStopping could not restore the best weights after "
                f"{type(error).__name__}: {handler_error!r}",
                stacklevel=2,
            )

    def _guarded(self, fn):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except BaseException as error:
                if not _is_end_of_data(error):
                    self._fire(error)
                raise

        return guarded

    def _on_finally(self, fn):
        # JAX's fit calls jax_state_sync() in its `finally:`; an exception in
        # flight there (other than one already active when fit began) means
        # fit is being left by it.
        @functools.wraps(fn)
        def sync(*args, **kwargs):
            result = fn(*args, **kwargs)
            error = sys.exc_info()[1]
            if (
                error is not None
                and error is not self._outer_error
                and _compat.called_from("fit")
            ):
                self._fire(error)
            return result

        return sync
