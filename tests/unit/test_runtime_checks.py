"""Checks on what participants send: arbitrary input is either a clean value or a precise refusal."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpact.common.definition import MAX_SAMPLES
from fedpact.runtime import checks
from fedpact.runtime.checks import MessageRejected

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=70), inner, max_size=40),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_metrics_accept_only_bounded_finite_numbers_under_sane_names(value) -> None:
    try:
        clean = checks.metrics(value)
    except MessageRejected as exc:
        assert str(exc)
        return
    assert len(clean) <= checks.MAX_METRICS
    assert all(math.isfinite(v) and abs(v) <= checks.MAX_METRIC_VALUE for v in clean.values())
    json.dumps(clean, allow_nan=False)  # always serialisable in the round record


@settings(max_examples=300, deadline=None)
@given(json_values | st.integers(min_value=-(10**500), max_value=10**500), st.none() | st.integers(1, MAX_SAMPLES))
def test_num_samples_is_a_bounded_positive_integer_clipped_to_the_cap(value, cap) -> None:
    try:
        n, note = checks.num_samples(value, cap)
    except MessageRejected as exc:
        assert "num_samples" in str(exc) and len(str(exc)) < 200
        return
    assert isinstance(n, int) and 1 <= n <= (cap or MAX_SAMPLES)
    assert (note is not None) == (n != value)


def test_the_overflowing_inputs_of_the_report_are_refused_or_bounded() -> None:
    with pytest.raises(MessageRejected, match=r"train.loss must be finite and within \+-1e\+12, got 1e\+308"):
        checks.metrics({"loss": 1e308}, "train")
    with pytest.raises(MessageRejected, match="num_samples must be in"):
        checks.num_samples(10**400, None)
    with pytest.raises(MessageRejected, match="must be a positive integer, got True"):
        checks.num_samples(True, None)
    assert checks.num_samples(10**9, 5000) == (5000, "num_samples 1000000000 clipped to max_samples_per_participant 5000")
    worst = {f"p{i}": (MAX_SAMPLES, {"loss": checks.MAX_METRIC_VALUE}) for i in range(1000)}
    assert checks.weighted_means(worst, "train_") == {"train_loss": pytest.approx(checks.MAX_METRIC_VALUE)}
    mixed = {"a": (10, {"loss": 1.0}), "b": (30, {"loss": 3.0, "num_samples": 10.0})}
    assert checks.weighted_means(mixed, "val_") == {"val_loss": pytest.approx(2.0)}
