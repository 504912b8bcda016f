"""Keras callbacks for ``model.fit``."""

from keras_regkit.callbacks.dropout_schedule import DropoutSchedule
from keras_regkit.callbacks.early_stopping import EarlyStopping
from keras_regkit.callbacks.exponential_moving_average import ExponentialMovingAverage
from keras_regkit.callbacks.population_statistics import PopulationStatistics, recompute_batch_statistics
from keras_regkit.callbacks.stochastic_weight_averaging import StochasticWeightAveraging
from keras_regkit.callbacks.yao import (
    DiscrepancyStopping,
    SmoothedDiscrepancyStopping,
    YaoStepSchedule,
    YaoStoppingTime,
)

__all__ = [
    "DiscrepancyStopping",
    "DropoutSchedule",
    "EarlyStopping",
    "ExponentialMovingAverage",
    "PopulationStatistics",
    "SmoothedDiscrepancyStopping",
    "StochasticWeightAveraging",
    "YaoStepSchedule",
    "YaoStoppingTime",
    "recompute_batch_statistics",
]
