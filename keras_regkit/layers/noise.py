"""Gaussian dropout, Gaussian noise and alpha dropout: drop-in replacements for Keras 3.

Reference:
    Srivastava et al., JMLR 15 (2014), section 10 (multiplicative Gaussian noise);
    Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017 (alpha dropout).
"""

from __future__ import annotations

from typing import Sequence

import keras

from keras_regkit import _validation
from keras_regkit._distribution import ReplicaSeedGenerator
from keras_regkit.layers._stochastic import build_weightless, check_rate
from keras_regkit.layers.dropout import check_noise_shape
from keras_regkit.ops import dropout as dropout_ops


class _NoiseLayer(keras.layers.Layer):
    """A weightless noise layer with Keras's state: a seed generator only when it draws."""

    regkit_stochastic = True

    def _init_noise(self, seed, active: bool) -> None:
        self.seed = seed
        if active:  # as Keras: no random state for a layer that never draws
            self.seed_generator = ReplicaSeedGenerator(seed)
        self.supports_masking = True
        build_weightless(self)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_regkit")
class GaussianDropout(_NoiseLayer):
    """Multiplies by ``N(1, rate / (1 - rate))`` noise in training, as Keras's ``GaussianDropout``.

    Args:
        rate: float in [0, 1], the equivalent drop probability (``1`` returns zeros).
        seed: int seed.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: tensor of any rank.
        training: Python bool; identity unless ``True``.

    Returns:
        A tensor of the input's shape.

    Raises:
        ValueError: ``rate`` outside [0, 1].

    Reference:
        Srivastava et al., JMLR 15 (2014), section 10.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate("GaussianDropout", rate)
        self._init_noise(seed, self.rate > 0)

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            return dropout_ops.gaussian_dropout(inputs, self.rate, seed=self.seed_generator)
        return inputs

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_regkit")
class GaussianNoise(_NoiseLayer):
    """Adds ``N(0, stddev**2)`` noise in training, as ``keras.layers.GaussianNoise``.

    Keras 3 rejects ``stddev > 1``; here any ``stddev >= 0`` is accepted (a superset).

    Args:
        stddev: float >= 0, standard deviation of the noise.
        seed: int seed.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: tensor of any rank.
        training: Python bool; identity unless ``True``.

    Returns:
        A tensor of the input's shape.

    Raises:
        ValueError: ``stddev`` negative or NaN.

    Reference:
        Bishop, "Training with Noise is Equivalent to Tikhonov Regularization",
        Neural Computation 7 (1995).
    """

    def __init__(self, stddev: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        checked = _validation.check_range("GaussianNoise", "stddev", stddev, 0.0, None)
        self.stddev = stddev if isinstance(stddev, (int, float)) else checked
        self._init_noise(seed, self.stddev > 0)

    def call(self, inputs, training=False):
        if training and self.stddev > 0:
            return dropout_ops.gaussian_noise(inputs, self.stddev, seed=self.seed_generator)
        return inputs

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_regkit")
class AlphaDropout(_NoiseLayer):
    """Alpha dropout for SELU networks, as ``keras.layers.AlphaDropout``.

    Dropped units are set to SELU's negative saturation ``-scale * alpha``, then an affine map
    restores zero mean and unit variance (``keras_regkit.ops.dropout.alpha_dropout_affine``).

    Args:
        rate: float in [0, 1] (``1`` returns zeros; Keras raises ``ZeroDivisionError``).
        noise_shape: shape of the mask, broadcast against the input.
        seed: int seed.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: tensor of any rank.
        training: Python bool; identity unless ``True``.

    Returns:
        A tensor of the input's shape.

    Raises:
        ValueError: ``rate`` outside [0, 1], a ``noise_shape`` that is not a tuple of
            positive ints and ``None``s (Keras does not check it).
        TypeError: ``rate`` not a real number.

    Reference:
        Klambauer et al., NeurIPS 2017.
    """

    def __init__(
        self,
        rate: float,
        noise_shape: Sequence[int | None] | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rate = check_rate("AlphaDropout", rate)
        self._noise_shape = check_noise_shape("AlphaDropout", noise_shape)
        self.noise_shape = noise_shape  # as given, as Keras stores it
        self._init_noise(seed, self.rate > 0)

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            return dropout_ops.alpha_dropout(
                inputs, self.rate, noise_shape=self._noise_shape, seed=self.seed_generator
            )
        return inputs

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "noise_shape": self.noise_shape,
            "seed": self.seed,
        }
