"""Pure functions on tensors, written with ``keras.ops``: the math behind every layer.

Nothing here owns state or imports from the rest of the package.
"""

from keras_regkit.ops.drop_block import drop_block_2d, drop_block_gamma
# The module `dropout` keeps its name; its function is `keras_regkit.ops.dropout.dropout`.
from keras_regkit.ops.dropout import alpha_dropout, drop_path, gaussian_dropout, gaussian_noise
from keras_regkit.ops.random_bits import keep_mask
