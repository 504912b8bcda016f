"""Shared machinery of the dropout-family layers: a schedulable rate kept in the random state.

A Keras layer has two kinds of state. Its *weights* (``layer.weights``) are what weight files,
``get_weights``/``set_weights``, ``count_params`` and ``EarlyStopping`` see. Its other
*variables* (``layer.variables``: the seed generators' states) are read and updated by every
compiled step as well (on JAX they are passed in and out of the jitted function), but are
never saved or restored as weights. A drop rate that a schedule changes between epochs is
state of the second kind: a traced step must read its current value, yet it is not a learned
parameter, and a restore of the best weights must not rewind it. Keras offers no other slot of
that kind, so a schedulable layer's one seed generator carries the rate in its state variable:
``[seed, counter, round(rate * 2**30)]``. The layer then has exactly the weights (none), the
config and the number of seed generators of the Keras layer it replaces. As in Keras, a layer
constructed with ``rate=0`` draws nothing and has no random state: it is the identity, and
its rate cannot be scheduled.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_regkit import _compat, _validation
from keras_regkit._distribution import ReplicaSeedGenerator

#: The rate is stored as an integer multiple of 2**-RATE_BITS (finer than float32 near 1).
RATE_BITS = 30


def check_data_format(owner: str, data_format: str | None) -> str:
    """``data_format`` or, if ``None``, Keras's ``image_data_format()``; checked."""
    value = data_format or keras.config.image_data_format()
    allowed = ("channels_last", "channels_first")
    return _validation.check_choice(owner, "data_format", value, allowed)


def check_rate(owner: str, rate):
    """``rate`` checked to lie in [0, 1]; a Python number is returned as given (``0.35`` stays
    ``0.35``, as Keras stores it), anything else as a Python float."""
    checked = _validation.check_range(owner, "rate", rate, 0.0, 1.0)
    return rate if isinstance(rate, (int, float)) and not isinstance(rate, bool) else checked


def _encode(rate: float) -> int:
    return int(round(float(rate) * 2**RATE_BITS))


class RateSeedGenerator(ReplicaSeedGenerator):
    """A seed generator whose state also holds a drop rate: ``[seed, counter, rate * 2**30]``.

    ``next()`` reads and advances the first two entries exactly as ``keras.random.SeedGenerator``
    does (so the random stream is Keras's, and replicas still differ under ``tf.distribute``);
    :attr:`rate` reads the third as a float32 scalar tensor, so a traced step follows
    :meth:`set_rate` without retracing, on every backend.

    Args:
        seed: integer seed, or ``None`` for a random one.
        rate: the initial rate, in [0, 1].
        name: optional name.
    """

    def __init__(self, seed=None, rate: float = 0.0, name=None):
        super().__init__(seed, name=name)
        seed_state = self.state  # Keras's [seed, 0], extended by one entry
        initial = np.append(ops.convert_to_numpy(seed_state.value), _encode(rate))
        with keras.name_scope(self.name, caller=self):
            self.state = keras.Variable(
                initial.astype(seed_state.dtype),
                shape=(3,),
                dtype=seed_state.dtype,
                trainable=False,
                aggregation="none",
                name="seed_generator_state",
            )

    def _advance(self, ordered: bool):
        state = self.state.value
        seed = state[:2] * 1
        if ordered:  # Keras's counter step; the rate entry stays
            self.state.assign(ops.add(state, ops.convert_to_tensor([0, 1, 0], state.dtype)))
        else:  # Keras's unordered sequence on the seed entries
            self.state.assign(ops.concatenate([(seed + 1) * 5387 % 933199, state[2:]]))
        return seed

    @property
    def rate(self):
        """The current rate as a float32 scalar tensor (what traced steps read)."""
        return ops.cast(self.state.value[2], "float32") * (2.0**-RATE_BITS)

    def set_rate(self, rate: float) -> None:
        """Stores ``rate`` (in [0, 1]); call it between steps, e.g. in ``on_epoch_begin``."""
        state = ops.convert_to_numpy(self.state.value).copy()
        state[2] = _encode(rate)
        self.state.assign(state)


class ScheduledRateMixin:
    """A dropout-family layer whose ``rate`` a schedule can change without retracing.

    ``layer.rate`` is the Python number given to the constructor (or last assigned), which
    ``get_config`` returns unchanged. Assigning ``layer.rate = r`` (as
    ``keras_regkit.callbacks.DropoutSchedule`` does between epochs) also stores ``r`` in the
    layer's :class:`RateSeedGenerator`, which compiled steps read, so an already traced
    ``train_step`` (graph, XLA, JAX or torch) follows at once. The rate is not a weight:
    weight files, ``get_weights`` and ``EarlyStopping`` never see or rewind it. A layer
    constructed with ``rate=0`` has no random state (as Keras's): it is the identity and
    only accepts ``rate = 0``.
    Layers with this mixin are recognised as dropout-family layers by
    ``keras_regkit.mc_predict``.
    """

    #: Marks a layer that ``keras_regkit.mc_predict`` keeps in training mode.
    regkit_stochastic = True

    def _init_rate(self, rate, seed) -> None:
        self._rate = check_rate(type(self).__name__, rate)
        self.seed = seed
        if self._rate > 0:  # as Keras: no random state for a layer that never draws
            self.seed_generator = RateSeedGenerator(seed, rate=self._rate)

    @property
    def schedulable(self) -> bool:
        """Whether the layer has random state, i.e. was constructed with ``rate > 0``."""
        return isinstance(getattr(self, "seed_generator", None), RateSeedGenerator)

    @property
    def rate(self):
        """The drop probability, as given (a Python number)."""
        return self._rate

    @rate.setter
    def rate(self, value) -> None:
        value = check_rate(type(self).__name__, value)
        if self.schedulable:
            self.seed_generator.set_rate(value)
        elif value != 0:
            raise ValueError(
                f"{type(self).__name__}: rate can only change on a layer constructed with "
                f"rate > 0 (one constructed with rate=0 has no random state, as in Keras), "
                f"got rate={value!r} for layer {self.name!r}"
            )
        self._rate = value

    @property
    def rate_tensor(self):
        """The rate as a float32 scalar tensor read from the random state (for ``call``)."""
        return self.seed_generator.rate


def build_weightless(layer) -> None:
    """Marks a layer without weights as built at construction, as Keras's own are."""
    _compat.build_at_init(layer)
