"""Federated analytics: per-column statistics of the pooled data from per-site sums.

Every figure is built from additive parts (counts, sums, sums of squares, histogram bin
counts), so the merge is a plain sum and secure aggregation can carry it: the aggregator
then learns the totals, never one site's table. Quantiles are read from the merged
histogram, so their precision is one bin. Minimum and maximum are the exception: they are
not sums, and they serve only to agree the bin edges in a first pass when the definition
declares none. Under the secure modes the edges of every column are declared (definition
validation), that pass is skipped, the summaries go through secure aggregation without
the sites' ``min``/``max``, and the reported range is the outermost non-empty bins
(:func:`histogram_range`).

The flow: sites run :func:`local_range` (only when edges must be agreed), the aggregator
:func:`merge_ranges` and :func:`agree_edges`; sites run :func:`local_summary` with those
edges, the aggregator :func:`merge_summaries` and :func:`finalize`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Summary = dict[str, np.ndarray]


def _columns(x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"analytics works on a table (rows x columns), got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError("the table holds infinite values; analytics counts NaN as missing but refuses infinities")
    return arr


def local_range(x: np.ndarray) -> Summary:
    """Per column ``min`` and ``max`` over present (non-NaN) cells; +inf/-inf where a column is empty."""
    arr = _columns(x)
    present = ~np.isnan(arr)
    lo = np.where(present, arr, np.inf).min(axis=0, initial=np.inf)
    hi = np.where(present, arr, -np.inf).max(axis=0, initial=-np.inf)
    return {"min": lo, "max": hi}


def merge_ranges(parts: Sequence[Mapping[str, np.ndarray]]) -> Summary:
    """The global range: the smallest minimum and largest maximum of every column."""
    if not parts:
        raise ValueError("no ranges to merge")
    _same_shapes(parts, ("min", "max"))
    return {"min": np.min([p["min"] for p in parts], axis=0), "max": np.max([p["max"] for p in parts], axis=0)}


def agree_edges(
    ranges: Mapping[str, np.ndarray], bins: int, declared: Mapping[int, Sequence[float]] | None = None
) -> list[np.ndarray]:
    """Bin edges per column: the declared ones, else ``bins`` equal bins over the global range.

    A constant column gets one bin of width 1 around its value; a column without any
    value gets edges [0, 1] (its histogram stays empty).
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    declared = declared or {}
    out = []
    for j, (lo, hi) in enumerate(zip(np.asarray(ranges["min"]), np.asarray(ranges["max"]))):
        if j in declared:
            e = np.asarray(declared[j], dtype=np.float64)
            if e.ndim != 1 or len(e) < 2 or not np.isfinite(e).all() or (np.diff(e) <= 0).any():
                raise ValueError(f"edges of column {j} must be at least two finite, increasing numbers")
            out.append(e)
        elif not np.isfinite(lo):
            out.append(np.array([0.0, 1.0]))
        elif hi <= lo:
            out.append(np.array([lo - 0.5, lo + 0.5]))
        else:
            out.append(np.linspace(lo, hi, bins + 1))
    return out


def local_summary(x: np.ndarray, edges: Sequence[np.ndarray]) -> Summary:
    """One site's additive parts per column, for :func:`merge_summaries`.

    ``count`` and ``missing`` (NaN cells), ``sum`` and ``sumsq`` of the values shifted by
    the column's first edge (a public figure, which keeps the sums of squares well
    conditioned), and ``hist.<j>``: counts per bin with an extra bin below the first edge
    and one above the last, so no value is ever lost. ``min``/``max`` are local and only
    merged in open mode.
    """
    arr = _columns(x)
    if len(edges) != arr.shape[1]:
        raise ValueError(f"{len(edges)} sets of edges for {arr.shape[1]} columns")
    present = ~np.isnan(arr)
    shift = np.array([float(e[0]) for e in edges])
    centred = np.where(present, arr - shift, 0.0)
    out: Summary = {
        "count": present.sum(axis=0).astype(np.float64),
        "missing": (~present).sum(axis=0).astype(np.float64),
        "sum": centred.sum(axis=0),
        "sumsq": (centred * centred).sum(axis=0),
        **local_range(arr),
    }
    for j, e in enumerate(edges):
        col = arr[present[:, j], j]
        inner = np.histogram(col, bins=np.asarray(e, dtype=np.float64))[0].astype(np.float64)
        out[f"hist.{j}"] = np.concatenate([[np.sum(col < e[0])], inner, [np.sum(col > e[-1])]]).astype(np.float64)
    return out


def _same_shapes(parts: Sequence[Mapping[str, np.ndarray]], keys: Sequence[str]) -> None:
    for k in keys:
        shapes = {np.shape(p[k]) if k in p else None for p in parts}
        if len(shapes) != 1 or None in shapes:
            raise ValueError(f"sites report {k!r} in different shapes: {sorted(map(str, shapes))}")


def merge_summaries(parts: Sequence[Mapping[str, np.ndarray]]) -> Summary:
    """Add the sites' summaries (what secure aggregation computes) and merge their ranges."""
    if not parts:
        raise ValueError("no summaries to merge")
    keys = sorted(k for k in parts[0] if k not in ("min", "max"))
    _same_shapes(parts, keys)
    merged: Summary = {k: np.sum([np.asarray(p[k], dtype=np.float64) for p in parts], axis=0) for k in keys}
    if all("min" in p and "max" in p for p in parts):
        merged.update(merge_ranges(parts))
    return merged


def histogram_range(hist: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """The range a merged histogram (with its outer bins) vouches for, when no site's extremes are known.

    The lower edge of the first non-empty bin and the upper edge of the last: the true
    minimum and maximum lie inside those bins. With values below the first edge (or above
    the last) the bound on that side is -inf (+inf): unknown beyond the declared edges.
    NaN for a column without values.
    """
    counts = np.asarray(hist, dtype=np.float64)
    nonempty = np.flatnonzero(counts[1:-1])
    if counts.sum() == 0:
        return float("nan"), float("nan")
    lo = float("-inf") if counts[0] > 0 else float(edges[nonempty[0]])
    hi = float("inf") if counts[-1] > 0 else float(edges[nonempty[-1] + 1])
    return lo, hi


def _quantile(hist: np.ndarray, edges: np.ndarray, q: float) -> float:
    """Linear interpolation inside the bin where the cumulative count crosses ``q`` of the total."""
    inner = hist[1:-1]
    total = hist.sum()
    target = q * total
    below = hist[0]
    if target <= below:
        return float(edges[0])
    cum = below + np.cumsum(inner)
    b = int(np.searchsorted(cum, target))
    if b >= len(inner):
        return float(edges[-1])
    start = cum[b] - inner[b]
    frac = (target - start) / inner[b] if inner[b] > 0 else 0.0
    return float(edges[b] + frac * (edges[b + 1] - edges[b]))


def finalize(
    merged: Mapping[str, np.ndarray], edges: Sequence[np.ndarray], quantiles: Sequence[float], names: Sequence[str]
) -> dict[str, dict[str, object]]:
    """Per column: count, missing, mean, variance (population, as ``numpy.var``), std, min, max,
    the histogram (edges and counts, with the counts below and above them) and the quantiles.

    Without the sites' ranges in ``merged`` (secure aggregation sums only), min and max are
    the bounds of the outermost non-empty bins (:func:`histogram_range`) and ``range_from``
    says ``histogram`` instead of ``data``.
    """
    if len(names) != len(edges):
        raise ValueError(f"{len(names)} names for {len(edges)} columns")
    report: dict[str, dict[str, object]] = {}
    for j, name in enumerate(names):
        n = float(merged["count"][j])
        e = np.asarray(edges[j], dtype=np.float64)
        hist = np.asarray(merged[f"hist.{j}"], dtype=np.float64)
        mean_c = float(merged["sum"][j]) / n if n else float("nan")
        var = max(float(merged["sumsq"][j]) / n - mean_c * mean_c, 0.0) if n else float("nan")
        if "min" in merged:
            lo, hi = float(merged["min"][j]), float(merged["max"][j])
        else:
            lo, hi = histogram_range(hist, e)
        report[name] = {
            "count": int(n),
            "missing": int(merged["missing"][j]),
            "mean": mean_c + float(e[0]),
            "variance": var,
            "std": float(np.sqrt(var)),
            "min": lo,
            "max": hi,
            "range_from": "data" if "min" in merged else "histogram",
            "histogram": {"edges": e.tolist(), "counts": hist[1:-1].astype(int).tolist(),
                          "below": int(hist[0]), "above": int(hist[-1])},
            "quantiles": {str(q): (_quantile(hist, e, q) if n else float("nan")) for q in quantiles},
        }
    return report


def column_medians(merged: Mapping[str, np.ndarray], edges: Sequence[np.ndarray]) -> np.ndarray:
    """The federated median of every column, read from the merged histograms (NaN where empty)."""
    out = np.full(len(edges), np.nan)
    for j, e in enumerate(edges):
        hist = np.asarray(merged[f"hist.{j}"], dtype=np.float64)
        if hist.sum() > 0:
            out[j] = _quantile(hist, np.asarray(e, dtype=np.float64), 0.5)
    return out


def column_means(merged: Mapping[str, np.ndarray], edges: Sequence[np.ndarray]) -> np.ndarray:
    """The federated mean of every column (NaN where no site has a value)."""
    n = np.asarray(merged["count"], dtype=np.float64)
    shift = np.array([float(e[0]) for e in edges])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.asarray(merged["sum"]) / np.where(n > 0, n, 1.0) + shift, np.nan)
