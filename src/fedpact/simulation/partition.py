"""How one dataset is dealt out to virtual participants: index lists, never copies.

A simulation of 10,000 participants must not hold 10,000 datasets: each participant is
only the list of sample indices it owns, and a worker cuts its data out of the shared pool
when it trains. When there are more participants than samples, the pool is the dataset
repeated as often as needed (each repetition shuffled apart by the partitioner), so every
participant still gets at least one sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedpact.common.errors import FedpactError


class PartitionError(FedpactError, ValueError):
    """A partition spec that cannot be applied to the data."""


@dataclass(frozen=True)
class PartitionSpec:
    """A parsed ``--partition`` value: ``iid``, ``dirichlet:ALPHA``, ``shards:K`` or ``column:NAME``."""

    kind: str
    alpha: float = 0.0
    shards: int = 0
    column: str = ""

    @classmethod
    def parse(cls, text: str) -> PartitionSpec:
        kind, _, arg = text.strip().partition(":")
        if kind == "iid" and not arg:
            return cls("iid")
        if kind == "dirichlet":
            try:
                alpha = float(arg)
            except ValueError:
                raise PartitionError(f"partition {text!r}: dirichlet needs a number, e.g. dirichlet:0.3") from None
            if not (alpha > 0 and math.isfinite(alpha)):
                raise PartitionError(f"partition {text!r}: the Dirichlet alpha must be a finite number > 0")
            return cls("dirichlet", alpha=alpha)
        if kind == "shards":
            if not arg.isdigit() or int(arg) < 1:
                raise PartitionError(f"partition {text!r}: shards needs a whole number >= 1, e.g. shards:2")
            return cls("shards", shards=int(arg))
        if kind == "column" and arg:
            return cls("column", column=arg)
        raise PartitionError(f"unknown partition {text!r}: use iid, dirichlet:ALPHA, shards:K, column:NAME, "
                             "or a directory or glob of files (one per participant)")


def pool_indices(n_samples: int, n_participants: int) -> np.ndarray:
    """The sample indices partitioners deal out: the dataset, repeated until every participant can get one."""
    if n_samples < 1:
        raise PartitionError("the data has no samples to partition")
    if n_participants < 1:
        raise PartitionError(f"need at least 1 participant, got {n_participants}")
    copies = max(1, -(-n_participants // n_samples))
    return np.tile(np.arange(n_samples, dtype=np.int64), copies)


def partition(spec: PartitionSpec, labels: np.ndarray, n: int, seed: int,
              column: np.ndarray | None = None) -> list[np.ndarray]:
    """Each participant's sample indices into the data whose labels are ``labels``."""
    labels = np.asarray(labels)
    pool = pool_indices(len(labels), n)
    rng = np.random.default_rng([seed, 0x51A])
    if spec.kind == "iid":
        parts = np.array_split(rng.permutation(pool), n)
    elif spec.kind == "dirichlet":
        parts = _dirichlet(pool, labels[pool], n, spec.alpha, rng)
    elif spec.kind == "shards":
        parts = _shards(pool, labels[pool], n, spec.shards, rng)
    elif spec.kind == "column":
        if column is None:
            raise PartitionError(f"partition column:{spec.column}: the data has no column {spec.column!r}")
        parts = _by_value(np.arange(len(labels), dtype=np.int64), np.asarray(column), n)
    else:  # PartitionSpec.parse admits nothing else
        raise PartitionError(f"unknown partition kind {spec.kind!r}")
    return [np.sort(p).astype(np.int64) for p in parts]


def _fill_empty(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Give every empty part one sample from the largest part (a participant needs data to train)."""
    sizes = np.array([len(p) for p in parts])
    for i in np.flatnonzero(sizes == 0):
        donor = int(np.argmax(sizes))
        parts[i], parts[donor] = parts[donor][-1:], parts[donor][:-1]
        sizes[i], sizes[donor] = 1, sizes[donor] - 1
    return parts


def _dirichlet(pool: np.ndarray, y: np.ndarray, n: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Label skew: each class is spread over participants by Dirichlet(alpha) shares (small alpha: few classes each)."""
    chunks: list[list[np.ndarray]] = [[] for _ in range(n)]
    for c in np.unique(y):
        members = rng.permutation(pool[y == c])
        shares = rng.dirichlet(np.full(n, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for i, chunk in enumerate(np.split(members, cuts)):
            if chunk.size:
                chunks[i].append(chunk)
    parts = [np.concatenate(c) if c else np.empty(0, np.int64) for c in chunks]
    return _fill_empty(parts)


def _shards(pool: np.ndarray, y: np.ndarray, n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The FedAvg paper's pathological split: sort by label, cut into n*k shards, deal k to each participant."""
    if n * k > len(pool):
        raise PartitionError(f"partition shards:{k}: {n} participants x {k} shards need {n * k} samples, "
                             f"the data has {len(pool)}")
    order = pool[np.lexsort((rng.random(len(pool)), y))]
    shards = np.array_split(order, n * k)
    deal = rng.permutation(n * k)
    return [np.concatenate([shards[j] for j in deal[i * k:(i + 1) * k]]) for i in range(n)]


def _by_value(idx: np.ndarray, values: np.ndarray, n: int) -> list[np.ndarray]:
    """The natural split: one participant per distinct value of a column (a hospital, a region)."""
    keys = np.unique(values)
    if len(keys) != n:
        raise PartitionError(f"the column has {len(keys)} distinct values, so it splits the data into {len(keys)} "
                             f"participants, not {n}: pass --participants {len(keys)}")
    return [idx[values == k] for k in keys]
