"""Who masks with whom: the complete graph of SecAgg or the sparse neighbour graph of SecAgg+.

In the original protocol (Bonawitz et al. 2017) every participant agrees a mask with, and
secret-shares its keys to, every other participant: O(n) work and messages per
participant, O(n^2) for the aggregator. SecAgg+ (Bell et al., CCS 2020) replaces the
complete graph by a random sparse graph of degree k = O(log n): each participant masks
only with its k neighbours and shares its secrets only with them, and the aggregator needs
only a threshold of each participant's *neighbourhood* to unmask.

The graph here is a randomly relabelled Harary graph H(k, n): participants are put on a
ring in an order drawn from a public seed (the round id), and each is joined to the k/2
nearest on either side. Every node has degree exactly k (k even), the graph is connected,
and the labelling is unpredictable before the round starts. Bell et al. analyse an
Erdős–Rényi graph; the regular variant keeps every neighbourhood the same size, which makes
per-neighbourhood thresholds uniform. The seed is chosen by the aggregator, which the
honest-but-curious model allows (see docs/privacy.md for what an active server could do).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

Graph = dict[str, frozenset[str]]


class GraphError(ValueError):
    """Impossible graph parameters."""


def default_degree(n: int) -> int:
    """The SecAgg+ degree used when a task asks for the sparse graph without a degree.

    k = 3 log2 n rounded up to an even number (n=100 -> 20, n=1000 -> 30), capped at n-1
    (then the graph is complete). A heuristic in the spirit of Bell et al.'s O(log n); their
    analysis gives the exact k for a target corruption and dropout rate.
    """
    if n <= 1:
        return 0
    k = math.ceil(3 * math.log2(n))
    k += k % 2
    return min(n - 1, k)


def complete_graph(names: Sequence[str]) -> Graph:
    everyone = frozenset(names)
    return {u: everyone - {u} for u in names}


def harary_graph(names: Sequence[str], degree: int, seed: bytes) -> Graph:
    """A degree-``degree`` Harary graph on ``names`` relabelled by ``seed`` (complete if degree >= n-1)."""
    n = len(names)
    if len(set(names)) != n:
        raise GraphError("participant names must be distinct")
    if degree < 1:
        raise GraphError(f"the neighbour graph degree must be >= 1, got {degree}")
    if degree >= n - 1:
        return complete_graph(names)
    if degree % 2:
        degree += 1  # a k-regular graph on a ring needs k even; one more neighbour is safe
        if degree >= n - 1:
            return complete_graph(names)
    order = sorted(names, key=lambda u: hashlib.sha256(seed + b"\x00" + u.encode("utf-8")).digest())
    half = degree // 2
    graph: dict[str, set[str]] = {u: set() for u in names}
    for i, u in enumerate(order):
        for d in range(1, half + 1):
            v = order[(i + d) % n]
            graph[u].add(v)
            graph[v].add(u)
    return {u: frozenset(vs) for u, vs in graph.items()}


def neighbour_graph(names: Sequence[str], *, sparse: bool, degree: int | None, seed: bytes) -> Graph:
    """The round's graph: complete, or SecAgg+ sparse with ``degree`` (default :func:`default_degree`)."""
    names = sorted(names)
    if not sparse:
        return complete_graph(names)
    return harary_graph(names, degree if degree is not None else default_degree(len(names)), seed)


def holder_threshold(threshold: int, n: int, holders: int) -> int:
    """Shares needed to reconstruct a secret shared among ``holders`` (a neighbourhood plus its owner).

    With the complete graph (holders == n) this is the task's threshold; with a sparse graph
    the same *fraction* of the neighbourhood, rounded up: t_u = ceil(t * holders / n).
    """
    if not 1 <= threshold <= n:
        raise GraphError(f"threshold must be in [1, {n}], got {threshold}")
    return max(1, min(holders, math.ceil(threshold * holders / n)))
