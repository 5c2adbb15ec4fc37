"""Federated standardisation: global feature mean and deviation from per-site sums.

Each site shares only per-feature sums, sums of squares and counts, never rows; the
combined statistics equal those of the pooled data, so every site scales its features
identically, as a centralised pipeline would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Deviations below this are constant features; dividing by them would blow up noise.
MIN_STD = 1e-8


def local_moments(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-feature ``sum``, ``sumsq`` and ``count`` (float64) over the flattened sample dims."""
    flat = np.asarray(x).reshape(len(x), int(np.prod(np.shape(x)[1:]))).astype(np.float64, copy=False)
    return {
        "sum": flat.sum(axis=0),
        "sumsq": np.einsum("ij,ij->j", flat, flat),
        "count": np.full(flat.shape[1], float(len(flat))),
    }


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
