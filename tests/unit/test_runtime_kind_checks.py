"""The checks on statistics replies and kind evaluation reports: every impossible value refused, precisely."""

from __future__ import annotations

import numpy as np
import pytest

from fedpact.runtime.checks import MessageRejected, kind_report, statistics_reply

SHAPES = {"count": (3,), "sum": (3,), "sumsq": (3,), "min": (3,), "max": (3,), "hist.0": (4,)}


def _good() -> dict[str, np.ndarray]:
    return {"count": np.array([2.0, 0.0, 5.0]), "sum": np.array([1.0, 0.0, -3.0]), "sumsq": np.array([1.0, 0.0, 9.0]),
            "min": np.array([0.0, np.inf, -2.0]), "max": np.array([1.0, -np.inf, 1.0]), "hist.0": np.array([0, 1, 1, 0])}


def _check(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return statistics_reply(t, SHAPES, counts=("count",), nonnegative=("sumsq",), infinite_ok=("min", "max"))


def test_a_clean_summary_passes_as_float64() -> None:
    out = _check(_good())
    assert set(out) == set(SHAPES) and all(v.dtype == np.float64 for v in out.values())
    assert out["count"].tolist() == [2.0, 0.0, 5.0]


@pytest.mark.parametrize(("change", "reason"), [
    ({"extra": np.zeros(3)}, "must hold the tensors"),
    ({"sum": np.zeros(4)}, "'sum' must be numbers of shape (3,)"),
    ({"sum": np.array([1.0, np.nan, 0.0])}, "'sum' holds NaN or infinite"),
    ({"sum": np.array([1.0, np.inf, 0.0])}, "'sum' holds NaN or infinite"),
    ({"min": np.array([np.nan, 0.0, 0.0])}, "'min' holds NaN"),
    ({"count": np.array([-1.0, 0.0, 0.0])}, "'count' must be whole counts"),
    ({"count": np.array([0.5, 0.0, 0.0])}, "'count' must be whole counts"),
    ({"count": np.array([1e13, 0.0, 0.0])}, "'count' must be whole counts"),
    ({"hist.0": np.array([0, -1, 1, 0])}, "'hist.0' must be whole counts"),
    ({"sumsq": np.array([-1.0, 0.0, 0.0])}, "'sumsq' must be >= 0"),
    ({"sum": np.array(["a", "b", "c"])}, "'sum' must be numbers"),
])
def test_an_impossible_summary_is_refused_with_the_reason(change: dict, reason: str) -> None:
    bad = _good() | change
    with pytest.raises(MessageRejected, match=reason.replace("(", r"\(").replace(")", r"\)")):
        _check(bad)


def test_seed_points_any_rows_up_to_the_cap() -> None:
    shapes = {"points": (-1, 2)}
    assert statistics_reply({"points": np.zeros((5, 2))}, shapes, max_rows=5)["points"].shape == (5, 2)
    with pytest.raises(MessageRejected, match="shape"):
        statistics_reply({"points": np.zeros((6, 2))}, shapes, max_rows=5)
    with pytest.raises(MessageRejected, match="shape"):
        statistics_reply({"points": np.zeros((5, 3))}, shapes, max_rows=5)


def test_kind_reports() -> None:
    reg = {"n": 4.0, "sse": 2.0, "sae": 2.0, "sum_y": 10.0, "sum_y2": 30.0, "num_samples": 4.0}
    assert kind_report("regression", reg) == reg
    assert kind_report("regression", {}) == {}
    assert kind_report("classification", {"accuracy": 0.5}) == {"accuracy": 0.5}
    with pytest.raises(MessageRejected, match="missing sae"):
        kind_report("regression", {k: v for k, v in reg.items() if k != "sae"})
    with pytest.raises(MessageRejected, match="sse, sae and sum_y2 must be >= 0"):
        kind_report("regression", reg | {"sse": -1.0})
    with pytest.raises(MessageRejected, match="n equal num_samples"):
        kind_report("regression", reg | {"n": 3.0})
    with pytest.raises(MessageRejected, match="whole number"):
        kind_report("regression", reg | {"n": 2.5, "num_samples": 2.5})
    km = {"inertia": 3.0, "silhouette": 0.4, "num_samples": 10.0}
    assert kind_report("clustering", km) == km
    with pytest.raises(MessageRejected, match="silhouette within"):
        kind_report("clustering", km | {"silhouette": 3.0})
