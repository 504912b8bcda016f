"""Shared machinery of the dropout-family layers: a schedulable ``rate`` and a seed generator."""

from __future__ import annotations

import keras

from keras_regkit import _validation
from keras_regkit._distribution import ReplicaSeedGenerator


def check_data_format(owner: str, data_format: str | None) -> str:
    """``data_format`` or, if ``None``, Keras's ``image_data_format()``; checked."""
    value = data_format or keras.config.image_data_format()
    allowed = ("channels_last", "channels_first")
    return _validation.check_choice(owner, "data_format", value, allowed)


class ScheduledRateMixin:
    """Keeps ``rate`` in a float32 non-trainable variable that traced graphs read.

    Assigning ``layer.rate = r`` (e.g. from ``keras_regkit.callbacks.DropoutSchedule``)
    changes the behaviour of an already compiled train step without retracing it.
    Layers with this mixin are recognised as dropout-family layers by
    ``keras_regkit.mc_predict``.
    """

    #: Marks a layer that ``keras_regkit.mc_predict`` keeps in training mode.
    regkit_stochastic = True

    def _init_rate(self, rate: float, seed) -> None:
        rate = _validation.check_range(type(self).__name__, "rate", rate, 0.0, 1.0)
        self.seed = seed
        self.seed_generator = ReplicaSeedGenerator(seed)
        self.rate_variable = self.add_weight(
            name="rate",
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(rate),
            trainable=False,
            autocast=False,
        )

    def load_own_variables(self, store):
        """Also loads weight files saved from the Keras layer this one replaces.

        Keras's dropout layers save no variables; with such a file (an empty ``store``) the
        constructor's ``rate`` is kept, so ``model.load_weights`` keeps working after swapping
        ``keras.layers.Dropout`` for this layer.
        """
        if len(store.keys()) == 0:
            return
        super().load_own_variables(store)

    @property
    def rate(self) -> float:
        """The current drop probability (a Python float; stored in ``rate_variable``)."""
        return float(keras.ops.convert_to_numpy(self.rate_variable.value))

    @rate.setter
    def rate(self, value: float) -> None:
        value = _validation.check_range(type(self).__name__, "rate", value, 0.0, 1.0)
        self.rate_variable.assign(value)
