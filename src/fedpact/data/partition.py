"""Splitting one dataset across simulated participants, for experiments on one machine."""

from __future__ import annotations

import numpy as np

from fedpact.data.dataset import Dataset


def _check_parts(ds: Dataset, n: int) -> None:
    if n < 1:
        raise ValueError(f"need at least 1 participant, got {n}")
    if n > len(ds):
        raise ValueError(f"cannot give {n} participants at least one sample each from {len(ds)} samples")


def split_iid(ds: Dataset, n: int, seed: int) -> list[Dataset]:
    """Shuffle and deal out near-equal shards: the idealised case every paper starts from."""
    _check_parts(ds, n)
    perm = np.random.default_rng(seed).permutation(len(ds))
    return [ds.subset(np.sort(part)) for part in np.array_split(perm, n)]


def split_dirichlet(ds: Dataset, n: int, alpha: float, seed: int) -> list[Dataset]:
    """Label-skewed shards: each class is spread over participants by Dirichlet(alpha) shares.

    Small ``alpha`` gives each participant few classes, the non-IID setting where FedAvg
    struggles. Every part is non-empty: samples are moved from the largest part if needed.
    """
    _check_parts(ds, n)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(n)]
    for c in np.unique(ds.y):
        members = rng.permutation(np.flatnonzero(ds.y == c))
        shares = rng.dirichlet(np.full(n, float(alpha)))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for i, chunk in enumerate(np.split(members, cuts)):
            parts[i].append(chunk)
    idx = [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]
    for i in range(n):
        if idx[i].size == 0:
            donor = int(np.argmax([len(p) for p in idx]))
            idx[i], idx[donor] = idx[donor][-1:], idx[donor][:-1]
    return [ds.subset(np.sort(p)) for p in idx]
