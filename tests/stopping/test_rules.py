"""Direction, BestTracker and the patience/threshold/non-finite rules."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_regkit.stopping import (
    BestTracker,
    Direction,
    DivergenceThreshold,
    NonFinite,
    Patience,
    StoppingThreshold,
)

finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=25, deadline=None)
@given(finite, finite, st.sampled_from([0.0, 1e-8, 0.01, -0.5]), st.sampled_from(["min", "max"]))
def test_is_improvement_matches_keras_ops(value, reference, min_delta, mode):
    """Keras compares `value - min_delta` with the reference through keras.ops (float32)."""
    delta = -abs(min_delta) if mode == "min" else abs(min_delta)
    op = keras.ops.less if mode == "min" else keras.ops.greater
    expected = bool(op(value - delta, reference))
    assert Direction(mode, min_delta).is_improvement(value, reference) == expected


def test_float32_ties_are_not_improvements():
    # 0.3 and 0.30000001 are the same float32: Keras sees no improvement.
    assert not Direction("min").is_improvement(0.3, 0.30000001)
    assert Direction("min").is_improvement(0.29, 0.3)
    assert Direction("min").is_improvement(1.0, None)
    assert not Direction("max").better(float("nan"), 0.0)


def test_tracker_counts_like_keras_with_baseline():
    tracker = BestTracker(Direction("min"), baseline=0.5)
    observed = [tracker.update(e, v, {}) for e, v in enumerate([1.0, 0.8, 0.9, 0.4, 0.6])]
    assert [o.improved for o in observed] == [True, True, False, True, False]
    # wait is reset only by improvements that also beat the baseline (0.4 here)
    assert [o.wait for o in observed] == [1, 2, 3, 0, 1]
    assert (tracker.best, tracker.best_epoch) == (0.4, 3)


def test_tracker_never_takes_non_finite_as_best():
    tracker = BestTracker(Direction("max"))
    obs = tracker.update(0, float("inf"), {})
    assert not obs.improved and tracker.best is None and obs.wait == 1


def observe(rule, values, mode="min"):
    direction = Direction(mode)
    rule.reset(direction)
    tracker = BestTracker(direction)
    for epoch, value in enumerate(values):
        reason = rule.update(tracker.update(epoch, value, {}))
        if reason is not None:
            return epoch, reason
    return None


def test_patience_rule():
    assert observe(Patience(2), [3.0, 2.0, 2.5, 2.6, 1.0]) == (
        3, "no improvement for 2 epochs (patience 2)"
    )
    assert observe(Patience(0), [3.0]) is None  # never at epoch 0
    assert observe(Patience(0), [3.0, 2.0, 1.0]) is None  # never on an improvement


def test_threshold_rules():
    assert observe(StoppingThreshold(1.0), [3.0, 1.0, 0.99])[0] == 2
    assert observe(StoppingThreshold(0.9), [0.5, 0.91], mode="max")[0] == 1
    assert observe(DivergenceThreshold(5.0), [3.0, 5.0, 5.01])[0] == 2
    assert observe(DivergenceThreshold(0.2), [0.5, 0.1], mode="max")[0] == 1
    assert observe(NonFinite(), [1.0, 2.0, float("nan")]) == (2, "value is nan")


@pytest.mark.parametrize(
    "rule", [Patience(3), StoppingThreshold(0.5), DivergenceThreshold(2.0), NonFinite()]
)
def test_rule_serialization(rule):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(rule))
    assert type(restored) is type(rule) and restored.get_config() == rule.get_config()


def test_bad_arguments():
    with pytest.raises(ValueError, match="Patience: patience must be an integer >= 0, got -1"):
        Patience(-1)
    with pytest.raises(ValueError, match="Direction: mode must be one of 'min', 'max', got 'up'"):
        Direction("up")
    with pytest.raises(TypeError, match="StoppingThreshold: threshold must be a real number"):
        StoppingThreshold("1")
    assert np.isfinite(StoppingThreshold(1).threshold)
