"""The configs of Keras twins: the keys the Keras class takes, plus the extensions in use.

A twin's ``get_config`` starts from its full config and drops every extension argument that
is at its default and that the installed Keras class does not take. For arguments Keras
knows, the config is then Keras's own (same keys, same values), so a ``.keras`` file moves
between a Keras model and the same model built with twins in both directions; an extension in
use stays in the config, where Keras's class would rightly refuse it.
"""

from __future__ import annotations

import inspect

#: What every Keras layer takes through ``**kwargs``, and the base defaults that matter here.
_BASE_ARGUMENTS = frozenset({"name", "trainable", "dtype"})
_BASE_DEFAULTS = {"trainable": True}


def keras_arguments(keras_class) -> frozenset:
    """The keyword arguments ``keras_class`` takes (its own, plus the base ones via kwargs)."""
    parameters = inspect.signature(keras_class.__init__).parameters.values()
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    named.discard("self")
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        named |= _BASE_ARGUMENTS
    return frozenset(named)


def own_defaults(cls) -> dict:
    """The defaults of ``cls.__init__``'s keyword arguments, plus the base layer's."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    own = {p.name: p.default for p in parameters if p.default is not p.empty}
    return {**_BASE_DEFAULTS, **own}


def twin_config(layer, config: dict, keras_class) -> dict:
    """``config`` without the extensions that are at their default and unknown to Keras."""
    accepted = keras_arguments(keras_class)
    defaults = own_defaults(type(layer))
    return {
        key: value
        for key, value in config.items()
        if key in accepted or key not in defaults or value != defaults[key]
    }
