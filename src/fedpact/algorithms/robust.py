"""Robust aggregation: a minority of poisoned updates cannot move the global model freely.

Every strategy here needs each participant's update on its own, so it runs in open mode
only (the definition refuses it elsewhere). Sample counts are ignored on purpose: a
poisoner can claim any number, and a robust rule that weighted by claims would hand it the
average again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedpact.algorithms.strategies import Aggregator, Update, Weights, check_updates, delta_of, register
from fedpact.common.algorithms import CATALOG


class _Robust(Aggregator):
    """Robust combination of the deltas, then the plain server step ``global + delta``."""

    def aggregate(self, global_weights: Mapping[str, np.ndarray], updates: Sequence[Update]) -> Weights:
        check_updates(global_weights, updates)
        deltas = [delta_of(global_weights, w) for w, _ in updates]
        return self.server_step(global_weights, self.combine(deltas))

    def combine(self, deltas: Sequence[Weights]) -> Weights:
        raise NotImplementedError


class Median(_Robust):
    """Coordinate-wise median of the deltas."""

    info = CATALOG["median"]

    def combine(self, deltas: Sequence[Weights]) -> Weights:
        return {k: np.median(np.stack([d[k] for d in deltas]), axis=0) for k in deltas[0]}


class TrimmedMean(_Robust):
    """Per coordinate, the mean after dropping the ``beta`` fraction highest and lowest values."""

    info = CATALOG["trimmed_mean"]

    def __init__(self, beta: float) -> None:
        self.beta = float(beta)

    def combine(self, deltas: Sequence[Weights]) -> Weights:
        n = len(deltas)
        cut = min(int(self.beta * n), (n - 1) // 2)
        out: Weights = {}
        for k in deltas[0]:
            values = np.sort(np.stack([d[k] for d in deltas]), axis=0)
            out[k] = values[cut : n - cut].mean(axis=0)
        return out


def krum_scores(deltas: Sequence[Weights], f: int) -> np.ndarray:
    """Each delta's Krum score: the summed squared distances to its ``n - f - 2`` nearest others."""
    n = len(deltas)
    neighbours = n - f - 2
    if n < 2 * f + 3:  # Blanchard et al.'s condition for the guarantee
        raise ValueError(f"Krum with f={f} needs at least 2f + 3 = {2 * f + 3} updates, the round has {n}")
    flat = np.stack([np.concatenate([d[k].ravel() for k in sorted(d)]) for d in deltas])
    sq = np.einsum("ij,ij->i", flat, flat)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    return np.sort(dist, axis=1)[:, :neighbours].sum(axis=1)


class MultiKrum(_Robust):
    """The mean of the ``m`` deltas with the lowest Krum scores (``m = 1``: Krum)."""

    info = CATALOG["multi_krum"]

    def __init__(self, f: int, m: int | None) -> None:
        self.f = int(f)
        self.m = m
        #: Positions (in the round's update order) of the deltas chosen in the last round.
        self.selected: list[int] = []

    def combine(self, deltas: Sequence[Weights]) -> Weights:
        scores = krum_scores(deltas, self.f)
        m = self.m if self.m is not None else len(deltas) - self.f
        m = max(1, min(m, len(deltas)))
        self.selected = sorted(int(i) for i in np.argsort(scores, kind="stable")[:m])
        return {k: np.mean([deltas[i][k] for i in self.selected], axis=0) for k in deltas[0]}


class Krum(MultiKrum):
    info = CATALOG["krum"]

    def __init__(self, f: int) -> None:
        super().__init__(f, 1)


register("median", lambda p: Median())
register("trimmed_mean", lambda p: TrimmedMean(p["beta"]))
register("krum", lambda p: Krum(p["f"]))
register("multi_krum", lambda p: MultiKrum(p["f"], p["m"]))
