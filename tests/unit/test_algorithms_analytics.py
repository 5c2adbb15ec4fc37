"""Federated analytics: per-site summaries merged by summing equal NumPy's figures on the pooled table."""

from __future__ import annotations

import numpy as np
import pytest

from fedpact.algorithms.analytics import (
    agree_edges,
    column_medians,
    finalize,
    histogram_range,
    local_range,
    local_summary,
    merge_ranges,
    merge_summaries,
)


def _sites(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = (40, 300, 121)
    sites = []
    for i, n in enumerate(sizes):
        t = np.column_stack([rng.normal(50 + 10 * i, 8, n), rng.exponential(2.0, n), rng.integers(0, 4, n)])
        t[rng.random((n, 3)) < 0.1] = np.nan
        sites.append(t)
    return sites


def _run(sites: list[np.ndarray], bins: int, declared: dict[int, list[float]] | None = None,
         secure: bool = False) -> tuple[dict[str, dict[str, object]], list[np.ndarray]]:
    edges = agree_edges(merge_ranges([local_range(s) for s in sites]), bins, declared)
    parts = [local_summary(s, edges) for s in sites]
    if secure:  # secure aggregation only adds: drop the non-additive ranges
        parts = [{k: v for k, v in p.items() if k not in ("min", "max")} for p in parts]
    merged = merge_summaries(parts)
    return finalize(merged, edges, [0.1, 0.5, 0.9], ["a", "b", "c"]), edges


def test_statistics_equal_numpy_on_the_pooled_table() -> None:
    sites = _sites()
    pooled = np.concatenate(sites)
    report, edges = _run(sites, bins=200)
    for j, name in enumerate("abc"):
        col = pooled[:, j][~np.isnan(pooled[:, j])]
        r = report[name]
        assert r["count"] == col.size and r["missing"] == int(np.isnan(pooled[:, j]).sum())
        assert r["mean"] == pytest.approx(col.mean(), rel=1e-12)
        assert r["variance"] == pytest.approx(col.var(), rel=1e-9)
        assert r["min"] == col.min() and r["max"] == col.max()
        hist = r["histogram"]
        assert isinstance(hist, dict)
        assert hist["counts"] == np.histogram(col, bins=edges[j])[0].tolist()
        assert hist["below"] == 0 and hist["above"] == 0
        width = float(edges[j][1] - edges[j][0])
        quantiles = r["quantiles"]
        assert isinstance(quantiles, dict)
        for q in (0.1, 0.5, 0.9):
            assert abs(quantiles[str(q)] - np.quantile(col, q)) <= width


def test_declared_edges_skip_the_range_pass_and_keep_outliers() -> None:
    sites = _sites(1)
    pooled = np.concatenate(sites)
    edges = agree_edges({"min": np.zeros(3), "max": np.ones(3)}, 4, {0: [40, 50, 60, 70], 1: [0, 1, 2], 2: [0, 1, 2, 3]})
    parts = [{k: v for k, v in local_summary(s, edges).items() if k not in ("min", "max")} for s in sites]
    report = finalize(merge_summaries(parts), edges, [0.5], ["a", "b", "c"])
    col = pooled[:, 1][~np.isnan(pooled[:, 1])]
    hist = report["b"]["histogram"]
    assert isinstance(hist, dict)
    assert hist["below"] == 0 and hist["above"] == int((col > 2).sum())
    assert sum(hist["counts"]) + hist["above"] == col.size
    # without the sites' ranges (secure): the outermost non-empty bins, unbounded where values overflow
    assert report["b"]["min"] == 0.0 and report["b"]["max"] == float("inf")
    assert report["b"]["range_from"] == "histogram"
    c = pooled[:, 2][~np.isnan(pooled[:, 2])]
    assert report["c"]["min"] == 0.0 and report["c"]["max"] == 3.0 and c.max() == 3.0  # 3 sits in the last bin
    a = pooled[:, 0][~np.isnan(pooled[:, 0])]
    assert report["a"]["min"] == (float("-inf") if (a < 40).any() else 40.0)


def test_histogram_range_bounds_the_true_extremes() -> None:
    e = np.array([0.0, 1.0, 2.0, 3.0])
    assert histogram_range(np.array([0, 0, 4, 1, 0]), e) == (1.0, 3.0)
    assert histogram_range(np.array([2, 0, 4, 0, 0]), e) == (float("-inf"), 2.0)
    assert histogram_range(np.array([0, 1, 0, 0, 5]), e) == (0.0, float("inf"))
    lo, hi = histogram_range(np.zeros(5), e)
    assert np.isnan(lo) and np.isnan(hi)


def test_median_from_merged_histograms_is_within_one_bin() -> None:
    sites = _sites(2)
    pooled = np.concatenate(sites)
    edges = agree_edges(merge_ranges([local_range(s) for s in sites]), 512)
    med = column_medians(merge_summaries([local_summary(s, edges) for s in sites]), edges)
    for j in range(3):
        assert abs(med[j] - np.nanmedian(pooled[:, j])) <= edges[j][1] - edges[j][0]


def test_bad_inputs_are_refused() -> None:
    sites = _sites()
    edges = agree_edges(merge_ranges([local_range(s) for s in sites]), 10)
    with pytest.raises(ValueError, match="3 columns"):
        local_summary(sites[0], edges[:2])
    with pytest.raises(ValueError, match="infinite"):
        local_range(np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="rows x columns"):
        local_range(np.zeros(3))
    a = local_summary(sites[0], edges)
    b = local_summary(sites[1][:, :2], edges[:2])
    with pytest.raises(ValueError, match="different shapes"):
        merge_summaries([a, b])
    with pytest.raises(ValueError, match="increasing"):
        agree_edges({"min": np.zeros(1), "max": np.ones(1)}, 5, {0: [1.0, 0.5]})
    with pytest.raises(ValueError, match="no summaries"):
        merge_summaries([])


def test_constant_and_empty_columns() -> None:
    t = np.array([[3.0, np.nan], [3.0, np.nan]])
    edges = agree_edges(local_range(t), 10)
    report = finalize(merge_summaries([local_summary(t, edges)]), edges, [0.5], ["const", "empty"])
    assert report["const"]["mean"] == 3.0 and report["const"]["variance"] == 0.0
    assert report["empty"]["count"] == 0 and report["empty"]["missing"] == 2
    assert np.isnan(report["empty"]["mean"])  # type: ignore[arg-type]
