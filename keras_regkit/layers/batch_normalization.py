"""BatchNormalization: a drop-in superset of ``keras.layers.BatchNormalization``."""

from __future__ import annotations

from typing import Any, Optional

import keras
from keras import constraints, initializers, ops, regularizers

from keras_regkit import _validation as check
from keras_regkit._distribution import replica_sum
from keras_regkit.layers._twin import twin_config
from keras_regkit.ops import normalization as bn

_RENORM_CLIPPING_KEYS = ("rmax", "rmin", "dmax")


@keras.saving.register_keras_serializable(package="keras_regkit")
class BatchNormalization(keras.layers.Layer):
    """Batch normalization, a drop-in superset of ``keras.layers.BatchNormalization``.

    With its default arguments this layer computes exactly what Keras 3's layer
    computes (same arguments, defaults, weight names and order, config, and numbers
    to float32 round-off; the extensions below enter ``get_config()`` only when
    they are not at their defaults): in training, each feature is normalized with the batch
    mean and biased variance, and the moving statistics are updated as
    ``moving = moving * momentum + batch * (1 - momentum)``; in inference (the
    default when ``training`` is not given, and always when ``trainable`` is
    False), the moving statistics are used.

    Beyond Keras:

    * ``virtual_batch_size`` (ghost batch normalization): each group of that many
      consecutive examples is normalized with its own moments; the moving
      statistics move towards the average of the groups' moments. A batch that
      the group size does not divide is not an error: its last, smaller group is
      normalized with its own moments, and the average is weighted by group size
      (so a divisible batch averages the groups equally).
    * ``unbiased_variance=True`` updates the moving variance with the paper's
      unbiased estimate ``m / (m - 1) * sigma_B^2`` (Algorithm 2), where ``m``
      is the number of values each moment is taken over (per group with ghost
      batches). Off by default so that the numbers stay Keras's.
    * ``synchronized=True`` also works on the JAX backend, where arrays
      distributed with ``keras.distribution`` are global and moments already span
      every device. On TensorFlow, under a ``tf.distribute`` strategy, the sums
      are all-reduced across replicas in two passes (mean, then squared
      deviations), which is more accurate than ``E[x^2] - E[x]^2``. With
      ``synchronized=False`` each replica normalizes with its own batch and the
      moving statistics become the mean of the replicas' updates (Keras's
      variables would let the replicas' copies drift apart). On JAX a batch
      distributed with ``keras.distribution.DataParallel`` is one global array,
      so the moments span the global batch with either setting (as in Keras).
    * ``fused``: on the TensorFlow backend, inputs of any rank with the channels
      last (viewed as ``(1, M, 1, C)``), and 3-D/4-D channels-first inputs, use
      TensorFlow's fused kernel when there is no renorm, no ghost batching, no
      synchronization and no mask; its Bessel-corrected variance is converted
      back to Keras's biased variance. ``None`` (default) uses it wherever it
      applies (in inference only on 4-D inputs, where it is faster), ``False``
      never does, ``True`` always does.

    Args:
        axis: Integer, the features axis (usually ``-1``; ``1`` for
            channels-first inputs).
        momentum: Momentum of the moving averages, in ``[0, 1]`` (1 freezes them).
        epsilon: Positive float added to the variance.
        center: If True, add the learned offset ``beta``.
        scale: If True, multiply by the learned ``gamma``.
        beta_initializer, gamma_initializer, moving_mean_initializer,
            moving_variance_initializer: Initializers of the four weights.
        beta_regularizer, gamma_regularizer: Optional regularizers.
        beta_constraint, gamma_constraint: Optional constraints.
        renorm: Whether to use batch renormalization (Ioffe 2017).
        renorm_clipping: Dict with optional keys ``"rmax"``, ``"rmin"``,
            ``"dmax"`` bounding the renorm corrections.
        renorm_momentum: Momentum of the renorm moving statistics, in ``[0, 1]``.
        synchronized: Compute the batch moments over all replicas.
        virtual_batch_size: Positive integer size of the ghost batches, or None.
        unbiased_variance: Update the moving variance with ``m/(m-1)`` times the
            batch variance.
        fused: None (auto), True or False; see above. True raises at build time
            if the fused kernel cannot be used.
        **kwargs: Base layer keyword arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: Input tensor of any rank.
        training: Python boolean; True normalizes with the batch statistics and
            updates the moving statistics. Defaults to inference.
        mask: Optional boolean tensor of rank ``rank(inputs) - 1`` marking the
            positions that enter the batch moments.

    Returns:
        A tensor of the input's shape, in the layer's compute dtype.

    Raises:
        ValueError: For an axis out of range, momentum or renorm_momentum
            outside ``[0, 1]``, epsilon <= 0, unknown ``renorm_clipping`` keys or
            ``rmax < rmin``, a non-positive ``virtual_batch_size``, ``fused=True``
            where the fused kernel does not apply, or a mask of the wrong rank.

    Reference:
        Ioffe & Szegedy, ICML 2015; Ioffe, NeurIPS 2017 (renorm); Hoffer et al.,
        NeurIPS 2017 (ghost batches).
    """

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        moving_mean_initializer: Any = "zeros",
        moving_variance_initializer: Any = "ones",
        beta_regularizer: Any = None,
        gamma_regularizer: Any = None,
        beta_constraint: Any = None,
        gamma_constraint: Any = None,
        renorm: bool = False,
        renorm_clipping: Optional[dict] = None,
        renorm_momentum: float = 0.99,
        synchronized: bool = False,
        virtual_batch_size: Optional[int] = None,
        unbiased_variance: bool = False,
        fused: Optional[bool] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = "BatchNormalization"
        self.axis = check.check_int(owner, "axis", axis)
        self.momentum = check.check_range(owner, "momentum", momentum, 0.0, 1.0)
        self.epsilon = check.check_range(owner, "epsilon", epsilon, 0.0, None, low_inclusive=False)
        self.renorm_momentum = check.check_range(owner, "renorm_momentum", renorm_momentum, 0.0, 1.0)
        if virtual_batch_size is not None:
            virtual_batch_size = check.check_int(owner, "virtual_batch_size", virtual_batch_size, 1)
        self.virtual_batch_size = virtual_batch_size
        check.check_choice(owner, "fused", fused, (None, True, False))
        self.fused = fused
        self.center = bool(center)
        self.scale = bool(scale)
        self.renorm = bool(renorm)
        self.synchronized = bool(synchronized)
        self.unbiased_variance = bool(unbiased_variance)
        self.renorm_clipping = self._check_clipping(renorm_clipping) if renorm else renorm_clipping
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.supports_masking = True
        self.gamma = self.beta = None
        self._channel_axis = None

    @staticmethod
    def _check_clipping(clipping: Optional[dict]) -> dict:
        owner = "BatchNormalization"
        clipping = dict(clipping or {})
        unknown = sorted(set(clipping) - set(_RENORM_CLIPPING_KEYS))
        if unknown:
            raise ValueError(
                f"{owner}: renorm_clipping keys must be among {list(_RENORM_CLIPPING_KEYS)}, "
                f"got unknown keys {unknown} in {clipping!r}"
            )
        for key, value in clipping.items():
            if value is not None:
                check.check_number(owner, f"renorm_clipping['{key}']", value)
        rmin, rmax, dmax = clipping.get("rmin"), clipping.get("rmax"), clipping.get("dmax")
        if rmin is not None and rmax is not None and rmax < rmin:
            raise ValueError(f"{owner}: renorm_clipping needs rmax >= rmin, got rmax={rmax}, rmin={rmin}")
        if dmax is not None and dmax < 0:
            raise ValueError(f"{owner}: renorm_clipping['dmax'] must be >= 0, got {dmax}")
        return clipping

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        rank = len(input_shape)
        if not -rank <= self.axis < rank:
            raise ValueError(
                f"BatchNormalization: axis must be in [{-rank}, {rank - 1}] for inputs of rank "
                f"{rank} (shape {tuple(input_shape)}), got {self.axis}"
            )
        self._channel_axis = self.axis % rank
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"BatchNormalization: the features axis {self.axis} of input shape "
                f"{tuple(input_shape)} must have a known size"
            )
        shape = (channels,)

        def add(name, initializer, trainable, **extra):
            # Statistics are averaged over replicas when each replica updates them
            # (Keras's default "none" lets the replicas' copies silently diverge).
            aggregation = "none" if trainable else "mean"
            return self.add_weight(
                shape=shape, name=name, initializer=initializer, trainable=trainable, autocast=False,
                aggregation=aggregation, **extra
            )

        if self.scale:
            self.gamma = add("gamma", self.gamma_initializer, True,
                             regularizer=self.gamma_regularizer, constraint=self.gamma_constraint)
        if self.center:
            self.beta = add("beta", self.beta_initializer, True,
                            regularizer=self.beta_regularizer, constraint=self.beta_constraint)
        self.moving_mean = add("moving_mean", self.moving_mean_initializer, False)
        self.moving_variance = add("moving_variance", self.moving_variance_initializer, False)
        if self.renorm:
            variance_initializer = self.moving_variance_initializer

            def stddev_initializer(shape, dtype=None):
                fresh = initializers.get(initializers.serialize(variance_initializer))
                return ops.sqrt(fresh(shape, dtype=dtype))

            mean_config = initializers.serialize(self.moving_mean_initializer)
            self.moving_stddev = add("moving_stddev", stddev_initializer, False)
            self.renorm_mean = add("renorm_mean", initializers.get(mean_config), False)
            self.renorm_stddev = add("renorm_stddev", stddev_initializer, False)
        self._layout = self._fused_layout(tuple(input_shape))
        if self.fused and self._layout is None:
            raise ValueError(
                "BatchNormalization: fused=True needs the TensorFlow backend, no renorm, no "
                "virtual_batch_size, synchronized=False, and channels last or a 3-D/4-D input "
                f"with axis=1; got input shape {tuple(input_shape)} and axis={self.axis}"
            )
        self.input_spec = keras.layers.InputSpec(ndim=rank, axes={self.axis: channels})

    def _fused_layout(self, input_shape):
        if (
            self.fused is False
            or keras.backend.backend() != "tensorflow"
            or self.renorm
            or self.virtual_batch_size is not None
            or self.synchronized
        ):
            return None
        from keras_regkit.ops.fused_batch_norm import fused_layout

        return fused_layout(input_shape, self._channel_axis)

    def compute_output_shape(self, input_shape):
        rank = len(input_shape)
        if not -rank <= self.axis < rank:
            raise ValueError(
                f"BatchNormalization: axis must be in [{-rank}, {rank - 1}] for inputs of rank "
                f"{rank}, got {self.axis}"
            )
        return input_shape

    # ------------------------------------------------------------------- call
    def call(self, inputs, training=None, mask=None):
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError(
                "BatchNormalization: mask must have rank rank(inputs) - 1, got "
                f"mask.shape={tuple(mask.shape)} for inputs.shape={tuple(inputs.shape)}"
            )
        training = bool(training) and self.trainable
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        if self._use_fused(inputs, training, mask, compute_dtype):
            outputs = self._call_fused(inputs, training)
        else:
            outputs = self._call_generic(ops.cast(inputs, compute_dtype), training, mask)
        return ops.cast(outputs, self.compute_dtype)

    def _use_fused(self, inputs, training, mask, compute_dtype) -> bool:
        """The fused kernel wins in training, and in inference on 4-D inputs.

        On smaller-rank inputs in inference, the generic path's single
        multiply-add per element is as fast and has no reshape; under XLA the
        generic path compiles to faster code than XLA's expansion of the fused op.
        """
        if self._layout is None or compute_dtype != "float32":
            return False
        from keras_regkit.ops.fused_batch_norm import in_xla_context

        if in_xla_context():
            return False
        if training:
            return mask is None
        return self.fused is True or len(inputs.shape) == 4

    def _params(self, rank: int, dtype):
        """gamma and beta (in ``dtype``, or None) shaped to broadcast against the input."""
        shape = bn.broadcast_shape(rank, self._channel_axis, self.moving_mean.shape[0])

        def as_param(weight):
            if weight is None:
                return None
            weight = ops.cast(weight, dtype)
            # Channels last broadcast as they are: no reshape op on the hot path.
            return weight if self._channel_axis == rank - 1 else ops.reshape(weight, shape)

        return as_param(self.gamma), as_param(self.beta), shape

    def _call_generic(self, x, training, mask):
        rank = len(x.shape)
        gamma, beta, shape = self._params(rank, x.dtype)
        if not training:
            mean = ops.cast(self.moving_mean, x.dtype)
            variance = ops.cast(self.moving_variance, x.dtype)
            if self._channel_axis != rank - 1:
                mean, variance = ops.reshape(mean, shape), ops.reshape(variance, shape)
            return bn.normalize(x, mean, variance, beta, gamma, self.epsilon)
        if self.virtual_batch_size is None:
            mean, variance, count = self._batch_moments(x, mask)
            batch_mean, batch_variance = ops.reshape(mean, (-1,)), ops.reshape(variance, (-1,))
            update_variance = self._variance_for_update(variance, count)
            gamma, beta = self._apply_renorm(batch_mean, batch_variance, shape, gamma, beta)
            self._update_moving(batch_mean, batch_variance, ops.reshape(update_variance, (-1,)))
            return bn.normalize(x, mean, variance, beta, gamma, self.epsilon)
        return self._call_ghost(x, mask, gamma, beta, shape)

    def _batch_moments(self, x, mask):
        axes = [a for a in range(len(x.shape)) if a != self._channel_axis]
        all_reduce = replica_sum() if self.synchronized else None
        if mask is None:
            return bn.moments(x, axes, all_reduce)
        weights = ops.expand_dims(ops.cast(mask, x.dtype), -1)
        return bn.weighted_moments(x, weights, axes, all_reduce)

    def _call_ghost(self, x, mask, gamma, beta, shape):
        """Ghost batch normalization: moments per group of consecutive examples."""
        batch = ops.shape(x)[0]
        grouped, valid = bn.ghost_batches(x, self.virtual_batch_size)
        rank = len(grouped.shape)
        weights = ops.reshape(valid, ops.shape(valid) + (1,) * (rank - 2))
        if mask is not None:
            grouped_mask, _ = bn.ghost_batches(ops.cast(mask, x.dtype), self.virtual_batch_size)
            weights = weights * ops.expand_dims(grouped_mask, -1)
        axes = [a for a in range(1, rank) if a != self._channel_axis + 1]
        all_reduce = replica_sum() if self.synchronized else None
        mean, variance, count = bn.weighted_moments(grouped, weights, axes, all_reduce)
        # Moving statistics move towards the size-weighted average of the groups' moments.
        group_axes = [0] + axes
        total = ops.sum(count, axis=group_axes)
        batch_mean = ops.sum(count * mean, axis=group_axes) / total
        batch_variance = ops.sum(count * variance, axis=group_axes) / total
        update_variance = ops.sum(count * self._variance_for_update(variance, count), axis=group_axes) / total
        group_shape = [1] + shape
        gamma = None if gamma is None else ops.reshape(gamma, group_shape)
        beta = None if beta is None else ops.reshape(beta, group_shape)
        if self.renorm:
            gamma, beta = self._renorm_transform(mean, variance, group_shape, gamma, beta)
            self._update_renorm(batch_mean, batch_variance)
        self._update_moving(batch_mean, batch_variance, update_variance)
        return bn.ungroup(bn.normalize(grouped, mean, variance, beta, gamma, self.epsilon), batch)

    def _variance_for_update(self, variance, count):
        return bn.bessel_correction(variance, count) if self.unbiased_variance else variance

    def _renorm_transform(self, mean, variance, shape, gamma, beta):
        renorm_mean = ops.reshape(ops.cast(self.renorm_mean, mean.dtype), shape)
        renorm_stddev = ops.reshape(ops.cast(self.renorm_stddev, mean.dtype), shape)
        r, d = bn.renorm_correction(mean, variance, renorm_mean, renorm_stddev, self.epsilon, self.renorm_clipping)
        return bn.compose_renorm(r, d, gamma, beta)

    def _apply_renorm(self, batch_mean, batch_variance, shape, gamma, beta):
        if not self.renorm:
            return gamma, beta
        mean = ops.reshape(batch_mean, shape)
        variance = ops.reshape(batch_variance, shape)
        gamma, beta = self._renorm_transform(mean, variance, shape, gamma, beta)
        self._update_renorm(batch_mean, batch_variance)
        return gamma, beta

    def _update_renorm(self, batch_mean, batch_variance):
        stddev = ops.sqrt(batch_variance + self.epsilon)
        self.renorm_mean.assign(bn.moving_average(self.renorm_mean, batch_mean, self.renorm_momentum))
        self.renorm_stddev.assign(bn.moving_average(self.renorm_stddev, stddev, self.renorm_momentum))

    def _update_moving(self, batch_mean, batch_variance, update_variance):
        """Moves the inference statistics; renorm tracks the stddev, as Keras does."""
        # moving - (moving - batch) * (1 - momentum): Keras's update, one op shorter.
        self.moving_mean.assign_sub((self.moving_mean - batch_mean) * (1.0 - self.momentum))
        if not self.renorm:
            self.moving_variance.assign_sub((self.moving_variance - update_variance) * (1.0 - self.momentum))
            return
        stddev = ops.sqrt(update_variance + self.epsilon)
        new_stddev = bn.moving_average(self.moving_stddev, stddev, self.momentum)
        self.moving_stddev.assign(new_stddev)
        self.moving_variance.assign(ops.relu(new_stddev * new_stddev - self.epsilon))

    def _call_fused(self, inputs, training):
        from keras_regkit.ops.fused_batch_norm import fused_batch_norm

        channels = self.moving_mean.shape[0]
        gamma = ops.ones((channels,), "float32") if self.gamma is None else ops.cast(self.gamma, "float32")
        beta = ops.zeros((channels,), "float32") if self.beta is None else ops.cast(self.beta, "float32")
        if not training:
            y, _, _, _ = fused_batch_norm(
                inputs, gamma, beta, self.epsilon, self._channel_axis, self._layout,
                mean=ops.cast(self.moving_mean, "float32"),
                variance=ops.cast(self.moving_variance, "float32"),
                training=False,
            )
            return y
        y, mean, variance, count = fused_batch_norm(
            inputs, gamma, beta, self.epsilon, self._channel_axis, self._layout, training=True
        )
        self._update_moving(mean, variance, self._variance_for_update(variance, count))
        return y

    # ----------------------------------------------------------------- config
    def get_config(self):
        config = {
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
            "synchronized": self.synchronized,
            "renorm": self.renorm,
            "renorm_clipping": self.renorm_clipping,
            "renorm_momentum": self.renorm_momentum,
            "virtual_batch_size": self.virtual_batch_size,
            "unbiased_variance": self.unbiased_variance,
            "fused": self.fused,
        }
        return twin_config(self, {**super().get_config(), **config}, keras.layers.BatchNormalization)
