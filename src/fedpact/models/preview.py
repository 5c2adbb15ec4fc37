"""A small picture of what a clustering or regression model learnt, for the final model's metadata.

The dashboard draws it (docs/algorithms.md, "Model preview"): clusters as a scatter plot on
the first two principal components, or predicted against true values. It is built only
from the aggregator's own evaluation data, so no participant's row ever reaches it, and it
is capped at a few hundred points so the metadata stays small.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedpact.models.base import Model
from fedpact.models.kmeans import KMeans

MAX_POINTS = 300


def _sample(n: int, max_points: int, seed: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def _round(values: np.ndarray) -> list[Any]:
    return np.round(np.asarray(values, dtype=np.float64), 4).tolist()


def principal_axes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, the first two principal directions (2, d) and their shares of the variance."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    mean = flat.mean(axis=0)
    _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    var = s**2
    share = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    axes = np.zeros((2, flat.shape[1]))
    k = min(2, len(vt))
    axes[:k] = vt[:k]
    shares = np.zeros(2)
    shares[:k] = share[:k]
    return mean, axes, shares


def clustering_preview(model: KMeans, x: np.ndarray, *, max_points: int = MAX_POINTS, seed: int = 0) -> dict[str, Any]:
    """Points and centroids on the evaluation data's first two principal components."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if len(flat) < 2:
        raise ValueError("a clustering preview needs at least two evaluation points")
    mean, axes, shares = principal_axes(flat)
    idx = _sample(len(flat), max_points, seed)
    proj = (flat[idx] - mean) @ axes.T
    labels = model.predict(flat[idx])
    centroids = (model.resolved_centroids() - mean) @ axes.T
    return {
        "kind": "clustering",
        "axes": [f"PC{i + 1} ({shares[i]:.0%})" for i in range(2)],
        "points": [[*_round(p), int(c)] for p, c in zip(proj, labels)],
        "centroids": [_round(c) for c in centroids],
        "total": len(flat),
    }


def regression_preview(y_true: np.ndarray, y_pred: np.ndarray, *, label: str = "target",
                       max_points: int = MAX_POINTS, seed: int = 0) -> dict[str, Any]:
    """Pairs of true and predicted target values (in the target's own unit)."""
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape or not len(t):
        raise ValueError(f"a regression preview needs as many predictions as true values, got {p.size} and {t.size}")
    idx = _sample(len(t), max_points, seed)
    return {"kind": "regression", "axes": [f"true {label}", f"predicted {label}"],
            "points": [_round(pair) for pair in np.column_stack([t[idx], p[idx]])], "total": len(t)}


def build_preview(model: Model, x: np.ndarray, y: np.ndarray | None, *, task: str, label: str | None = None,
                  target_scale: tuple[float, float] | None = None, seed: int = 0) -> dict[str, Any] | None:
    """The ``preview`` metadata of a final model, or None for task kinds without one.

    ``x`` is already prepared as the model expects (standardised when the task is);
    ``target_scale`` (mean, std) maps standardised regression predictions back to the
    target's unit.
    """
    if task == "clustering" and isinstance(model, KMeans):
        return clustering_preview(model, x, seed=seed)
    if task == "regression" and y is not None:
        pred = np.asarray(model.predict(x), dtype=np.float64)
        if target_scale is not None:
            pred = pred * target_scale[1] + target_scale[0]
        return regression_preview(y, pred, label=label or "target", seed=seed)
    return None
