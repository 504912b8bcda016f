"""Prechelt's GL, PQ and UP criteria against hand-computed and NumPy reference values."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_regkit.stopping import (
    Direction,
    GeneralizationLoss,
    ProgressQuotient,
    UpStrips,
)
from keras_regkit.stopping.prechelt import generalization_loss, training_progress
from keras_regkit.stopping.rules import BestTracker


def run(rule, va, tr=None):
    """1-based epoch after which the rule stops, or None."""
    rule.reset(Direction("min"))
    tracker = BestTracker(Direction("min"))
    for epoch, value in enumerate(va):
        logs = {"val_loss": value}
        if tr is not None:
            logs["loss"] = tr[epoch]
        if rule.update(tracker.update(epoch, value, logs)) is not None:
            return epoch + 1
    return None


# NumPy references, written from the paper's formulas (vectorised, independent of the rules).
def ref_gl(va):
    va = np.asarray(va, dtype=np.float64)
    return 100.0 * (va / np.minimum.accumulate(va) - 1.0)


def ref_stop_gl(va, alpha):
    hits = np.flatnonzero(ref_gl(va) > alpha)
    return int(hits[0]) + 1 if hits.size else None


def ref_stop_pq(va, tr, alpha, k):
    gl = ref_gl(va)
    tr = np.asarray(tr, dtype=np.float64)
    for t in range(k, len(va) + 1, k):
        strip = tr[t - k:t]
        p = 1000.0 * (strip.sum() / (k * strip.min()) - 1.0)
        q = gl[t - 1] / p if p > 0 else (np.inf if gl[t - 1] > 0 else 0.0)
        if q > alpha:
            return t
    return None


def ref_stop_up(va, s, k):
    va = np.asarray(va, dtype=np.float64)
    ends = np.arange(k, len(va) + 1, k)  # 1-based strip ends
    rises = va[ends[1:] - 1] > va[ends[:-1] - 1]
    run_length = 0
    for t, rose in zip(ends[1:], rises):
        run_length = run_length + 1 if rose else 0
        if run_length >= s:
            return int(t)
    return None


def test_hand_computed_generalization_loss():
    # E_opt = 1, .8, .8, .8, .8 -> GL = 0, 0, 12.5, 6.25, 3.75 (percent)
    va = [1.0, 0.8, 0.9, 0.85, 0.83]
    rule = GeneralizationLoss(alpha=10.0)
    rule.reset(Direction("min"))
    assert [rule.gl(v) for v in va] == pytest.approx([0.0, 0.0, 12.5, 6.25, 3.75])
    assert run(GeneralizationLoss(10.0), va) == 3
    assert run(GeneralizationLoss(12.5), va) is None  # strictly greater
    assert generalization_loss(1.1, 1.0) == pytest.approx(10.0)


def test_hand_computed_progress_quotient():
    # strip 1: E_tr = 1.0, 0.9, 0.8, 0.7, 0.6 -> P_5 = 1000 * (4.0 / (5 * 0.6) - 1) = 333.33
    # strip 2: 0.59, 0.58, 0.57, 0.56, 0.55 -> P_5 = 1000 * (2.85 / 2.75 - 1) = 36.36
    tr = [1.0, 0.9, 0.8, 0.7, 0.6, 0.59, 0.58, 0.57, 0.56, 0.55]
    assert training_progress(tr[:5]) == pytest.approx(1000 * (4.0 / 3.0 - 1))
    assert training_progress(tr[5:]) == pytest.approx(1000 * (2.85 / 2.75 - 1))
    # E_va at t=5 is the minimum (GL=0); at t=10, 0.5 vs E_opt 0.4 -> GL = 25; 25/36.36 = 0.6875
    va = [0.9, 0.7, 0.6, 0.5, 0.4, 0.45, 0.5, 0.48, 0.49, 0.5]
    assert run(ProgressQuotient(alpha=0.6, strip=5), va, tr) == 10
    assert run(ProgressQuotient(alpha=0.7, strip=5), va, tr) is None


def test_hand_computed_up_strips():
    # strip ends (k=2) at t = 2, 4, 6, 8, 10 with E_va = 0.8, 0.6, 0.7, 0.9, 1.0
    va = [1.0, 0.8, 0.7, 0.6, 0.65, 0.7, 0.5, 0.9, 0.95, 1.0]
    assert run(UpStrips(s=1, strip=2), va) == 6
    assert run(UpStrips(s=3, strip=2), va) == 10
    assert run(UpStrips(s=4, strip=2), va) is None
    # compares with t-k, not t-k+1: at t=4, 0.45 < E_va(2) = 0.5 although 0.45 > E_va(3) = 0.4
    assert run(UpStrips(s=1, strip=2), [1.0, 0.5, 0.4, 0.45]) is None


positive = st.floats(0.05, 5.0, allow_nan=False)


@settings(max_examples=20, deadline=None)
@given(st.lists(positive, min_size=1, max_size=30), st.sampled_from([0.5, 2.0, 5.0, 20.0]))
def test_gl_matches_numpy_reference(va, alpha):
    assert run(GeneralizationLoss(alpha), va) == ref_stop_gl(va, alpha)


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.tuples(positive, positive), min_size=1, max_size=30),
    st.sampled_from([0.1, 0.5, 2.0]),
    st.sampled_from([2, 3, 5]),
)
def test_pq_matches_numpy_reference(pairs, alpha, k):
    va, tr = zip(*pairs)
    assert run(ProgressQuotient(alpha, strip=k), va, tr) == ref_stop_pq(va, tr, alpha, k)


@settings(max_examples=20, deadline=None)
@given(st.lists(positive, min_size=1, max_size=40), st.integers(1, 3), st.integers(1, 5))
def test_up_matches_numpy_reference(va, s, k):
    assert run(UpStrips(s, strip=k), va) == ref_stop_up(va, s, k)


def test_pq_flat_training_error():
    va = [1.0, 0.5, 0.6, 0.7]
    tr = [0.3, 0.3, 0.3, 0.3]
    assert run(ProgressQuotient(1.0, strip=2), va, tr) == 4  # P = 0 and GL > 0
    assert run(ProgressQuotient(1.0, strip=2), [1.0, 0.5, 0.4, 0.3], tr) is None  # GL = 0


def test_non_finite_values_are_skipped():
    nan = float("nan")
    assert run(GeneralizationLoss(5.0), [1.0, nan, 1.0, 1.2]) == 4
    assert run(UpStrips(1, strip=2), [1.0, 0.8, nan, 0.9, 1.0]) == 5  # nan does not count


def test_state_round_trip():
    va = [1.0, 0.9, 0.95, 0.97, 1.0, 1.1, 1.2, 1.3]
    tr = [1.0, 0.8, 0.7, 0.65, 0.6, 0.58, 0.57, 0.56]
    for make in (lambda: GeneralizationLoss(15.0), lambda: ProgressQuotient(0.3, 2),
                 lambda: UpStrips(2, 2)):
        expected = run(make(), va, tr)
        first = make()
        first.reset(Direction("min"))
        tracker = BestTracker(Direction("min"))
        for epoch in range(4):
            first.update(tracker.update(epoch, va[epoch], {"loss": tr[epoch]}))
        second = make()
        second.reset(Direction("min"))
        second.set_state(first.get_state())
        stop = None
        for epoch in range(4, len(va)):
            if second.update(tracker.update(epoch, va[epoch], {"loss": tr[epoch]})):
                stop = epoch + 1
                break
        assert stop == expected and expected is not None


@pytest.mark.parametrize("rule", [GeneralizationLoss(3.0), ProgressQuotient(0.75, 4, "train_err"),
                                  UpStrips(2, 4)])
def test_serialization_round_trip(rule):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(rule))
    assert type(restored) is type(rule) and restored.get_config() == rule.get_config()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: GeneralizationLoss(0.0),
         r"GeneralizationLoss: alpha must be in \(0, inf\), got 0.0"),
        (lambda: ProgressQuotient(0.5, strip=1),
         r"ProgressQuotient: strip must be an integer >= 2"),
        (lambda: UpStrips(0), r"UpStrips: s must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_missing_training_loss_raises():
    rule = ProgressQuotient()
    rule.reset(Direction("min"))
    obs = BestTracker(Direction("min")).update(0, 1.0, {"val_loss": 1.0})
    with pytest.raises(ValueError, match="train_monitor='loss' is not in the logs.*val_loss"):
        rule.update(obs)
