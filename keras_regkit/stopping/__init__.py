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
from keras_regkit.stopping.kernel_gd import (
    KernelGradientDescent,
    checkpoint_grid,
    eigenvalue_decay,
    estimate_noise_level,
    smoothing_power,
)
from keras_regkit.stopping.kernels import (
    FeatureMapKernel,
    GaussianKernel,
    LaplacianKernel,
    SobolevTorusKernel,
)
from keras_regkit.stopping.yao import (
    capacity_optimal_rate_exponent,
    capacity_optimal_stopping_time,
    yao_rate,
    yao_rate_exponent,
    yao_step_size,
    yao_stopping_time,
)
