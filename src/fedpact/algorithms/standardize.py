"""Federated standardisation: global feature (and regression target) mean and deviation from per-site sums.

Each site shares only per-feature sums, sums of squares and counts, never rows; the
combined statistics equal those of the pooled data, so every site scales its features
identically, as a centralised pipeline would. A regression target is scaled the same way
(its moments travel under ``y_sum``, ``y_sumsq`` and ``y_count``), so one learning rate
suits targets in any unit; predictions are mapped back with :func:`unstandardize_target`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Deviations below this are constant features; dividing by them would blow up noise.
MIN_STD = 1e-8


def local_moments(x: np.ndarray, y: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-feature ``sum``, ``sumsq`` and ``count`` (float64) over the flattened sample dims.

    With a regression target ``y`` the same three figures of the target are added under
    ``y_sum``, ``y_sumsq`` and ``y_count`` (each of shape (1,)).
    """
    flat = np.asarray(x).reshape(len(x), int(np.prod(np.shape(x)[1:]))).astype(np.float64, copy=False)
    out = {
        "sum": flat.sum(axis=0),
        "sumsq": np.einsum("ij,ij->j", flat, flat),
        "count": np.full(flat.shape[1], float(len(flat))),
    }
    if y is not None:
        t = np.asarray(y, dtype=np.float64).reshape(-1)
        if len(t) != len(flat):
            raise ValueError(f"{len(flat)} samples but {len(t)} target values")
        out.update({"y_sum": np.array([t.sum()]), "y_sumsq": np.array([t @ t]), "y_count": np.array([float(len(t))])})
    return out


def combine_moments(moments: Sequence[Mapping[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Global (mean, std) per feature; constant features get std 1.0 so they pass through."""
    if not moments:
        raise ValueError("no moments to combine")
    sizes = {np.asarray(m["sum"]).shape for m in moments}
    if len(sizes) != 1:
        raise ValueError(f"sites report different feature counts: {sorted(sizes)}")
    total = np.sum([np.asarray(m["sum"], dtype=np.float64) for m in moments], axis=0)
    total_sq = np.sum([np.asarray(m["sumsq"], dtype=np.float64) for m in moments], axis=0)
    count = np.sum([np.asarray(m["count"], dtype=np.float64) for m in moments], axis=0)
    if (count <= 0).any():
        raise ValueError("no samples to compute statistics from")
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, 0.0)
    std = np.sqrt(var)
    std[std < MIN_STD] = 1.0
    return mean, std


def apply_standardization(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per feature as float32, in ``x``'s shape."""
    x = np.asarray(x)
    flat = x.reshape(len(x), int(np.prod(x.shape[1:])))
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    if flat.shape[1] != mean.size or mean.size != std.size:
        raise ValueError(f"statistics cover {mean.size} features, the data has {flat.shape[1]}")
    scaled = (flat - mean.astype(np.float32)) / std.astype(np.float32)
    return scaled.astype(np.float32, copy=False).reshape(x.shape)


def combine_target_moments(moments: Sequence[Mapping[str, np.ndarray]]) -> tuple[float, float]:
    """Global (mean, std) of the regression target from every site's ``y_*`` moments."""
    missing = [i for i, m in enumerate(moments) if not {"y_sum", "y_sumsq", "y_count"} <= set(m)]
    if not moments or missing:
        raise ValueError(f"target moments missing from site(s) {missing}" if moments else "no moments to combine")
    renamed = [{"sum": m["y_sum"], "sumsq": m["y_sumsq"], "count": m["y_count"]} for m in moments]
    mean, std = combine_moments(renamed)
    return float(mean[0]), float(std[0])


def standardize_target(y: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(y - mean) / std`` as float64, the target a regression model trains on."""
    if not std > 0:
        raise ValueError(f"target deviation must be > 0, got {std}")
    return (np.asarray(y, dtype=np.float64) - mean) / std


def unstandardize_target(pred: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Predictions in the target's own unit again: ``pred * std + mean``."""
    return np.asarray(pred, dtype=np.float64) * std + mean
