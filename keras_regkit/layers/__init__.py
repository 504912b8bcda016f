"""Keras layers: drop-in supersets of ``keras.layers`` regularization layers."""

from keras_regkit.layers.batch_normalization import BatchNormalization
from keras_regkit.layers.drop_block import DropBlock2D
from keras_regkit.layers.dropout import (
    Dropout,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
)
from keras_regkit.layers.instance_normalization import InstanceNormalization
from keras_regkit.layers.noise import AlphaDropout, GaussianDropout, GaussianNoise
from keras_regkit.layers.stochastic_depth import DropPath
from keras_regkit.layers.weight_noise import DropConnect, WeightNoise
from keras_regkit.layers.weight_standardization import WSConv1D, WSConv2D

__all__ = [
    "AlphaDropout",
    "BatchNormalization",
    "DropBlock2D",
    "DropConnect",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "GaussianNoise",
    "InstanceNormalization",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "WSConv1D",
    "WSConv2D",
    "WeightNoise",
]
