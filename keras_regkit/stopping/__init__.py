"""Stopping rules as small objects, and the theory of early stopping for gradient descent."""
from keras_regkit.stopping.prechelt import GeneralizationLoss, ProgressQuotient, UpStrips
from keras_regkit.stopping.rules import (
    BestTracker,
    Direction,
    DivergenceThreshold,
    NonFinite,
    Observation,
    Patience,
    StoppingRule,
    StoppingThreshold,
)
