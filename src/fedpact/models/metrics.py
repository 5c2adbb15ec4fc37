"""Evaluation metrics of regression and clustering, as sums that add up across sites.

A federated R2 or inertia is not the average of the sites' figures: R2 needs the pooled
variance of the target and inertia is a total. Each site therefore reports the sums below,
the aggregator (or the secure sum) adds them, and :func:`regression_metrics` and
:func:`clustering_metrics` turn the totals into the figures a pooled evaluation would give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: The per-site sums a regression evaluation reports.
REGRESSION_SUMS: tuple[str, ...] = ("n", "sse", "sae", "sum_y", "sum_y2")


def regression_sums(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Count, squared and absolute error sums, and the target's first two moments."""
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true values but {p.size} predictions")
    err = p - t
    return {"n": float(t.size), "sse": float(err @ err), "sae": float(np.abs(err).sum()),
            "sum_y": float(t.sum()), "sum_y2": float(t @ t)}


def add_sums(parts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise totals; every part must report the same keys."""
    if not parts:
        raise ValueError("no sums to add")
    keys = set(parts[0])
    for p in parts[1:]:
        if set(p) != keys:
            raise ValueError(f"sums with different keys: {sorted(keys)} and {sorted(p)}")
    return {k: float(sum(float(p[k]) for p in parts)) for k in parts[0]}


def regression_metrics(sums: Mapping[str, float]) -> dict[str, float]:
    """MSE, MAE and R2 of the pooled data from (added) :func:`regression_sums`.

    R2 is 0.0 when the target is constant (no variance to explain), as scikit-learn
    reports for a perfect fit there would be undefined.
    """
    n = float(sums["n"])
    if n <= 0:
        return {"mse": 0.0, "mae": 0.0, "r2": 0.0, "loss": 0.0, "num_samples": 0}
    sst = float(sums["sum_y2"]) - float(sums["sum_y"]) ** 2 / n
    mse = float(sums["sse"]) / n
    r2 = 1.0 - float(sums["sse"]) / sst if sst > 1e-12 * max(1.0, float(sums["sum_y2"])) else 0.0
    return {"mse": mse, "mae": float(sums["sae"]) / n, "r2": r2, "loss": mse, "num_samples": int(n)}


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each point and its squared distance."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    d2 = (x * x).sum(axis=1)[:, None] - 2.0 * x @ c.T + (c * c).sum(axis=1)[None, :]
    d2 = np.maximum(d2, 0.0)
    idx = d2.argmin(axis=1)
    return idx.astype(np.int64), d2[np.arange(len(x)), idx]


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum of squared distances to the nearest centroid (a total: add it across sites)."""
    if len(x) == 0:
        return 0.0
    return float(assign(x, centroids)[1].sum())


def silhouette(x: np.ndarray, labels: np.ndarray, *, max_points: int = 2000, seed: int = 0) -> float:
    """Mean silhouette coefficient of one site's points (exact up to ``max_points``, else a sample).

    Needs every pairwise distance, so it is a local figure: sites report it with their
    sample count and the federation reports the count-weighted mean (see docs/algorithms.md).
    Points in singleton clusters score 0, as in scikit-learn.
    """
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if len(x) != len(labels):
        raise ValueError(f"{len(x)} points but {len(labels)} labels")
    if len(x) > max_points:
        keep = np.random.default_rng(seed).choice(len(x), max_points, replace=False)
        x, labels = x[keep], labels[keep]
    ids = np.unique(labels)
    if len(ids) < 2:
        return 0.0
    sq = (x * x).sum(axis=1)
    dist = np.sqrt(np.maximum(sq[:, None] - 2.0 * x @ x.T + sq[None, :], 0.0))
    np.fill_diagonal(dist, 0.0)
    member = labels[:, None] == ids[None, :]
    sums = dist @ member
    sizes = member.sum(axis=0).astype(np.float64)
    own = member.argmax(axis=1)
    own_size = sizes[own]
    a = np.where(own_size > 1, sums[np.arange(len(x)), own] / np.maximum(own_size - 1, 1), 0.0)
    other = sums / sizes[None, :]
    other[np.arange(len(x)), own] = np.inf
    b = other.min(axis=1)
    s = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


def clustering_metrics(parts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Federated inertia (the sum) and silhouette (count-weighted mean) from per-site reports.

    Each part holds ``inertia``, ``silhouette`` and ``num_samples`` of one site.
    """
    n = sum(float(p["num_samples"]) for p in parts)
    if n <= 0:
        return {"inertia": 0.0, "silhouette": 0.0, "num_samples": 0}
    return {
        "inertia": float(sum(float(p["inertia"]) for p in parts)),
        "silhouette": float(sum(float(p["silhouette"]) * float(p["num_samples"]) for p in parts) / n),
        "num_samples": int(n),
    }
