"""Federated k-means: Lloyd steps from per-site sums and counts, k-means++ start from a sample.

One Lloyd step needs, per cluster, the sum of its points and their count over all sites;
nothing else. Each site therefore reports ``sums / n`` and ``counts / n`` (its own
fractions), and the sample-weighted average every privacy mode already computes turns
them into ``S / N`` and ``C / N``, whose ratio is the pooled Lloyd centroid. So the same
weighted mean that averages neural networks runs k-means, also under ``secure`` where the
aggregator only ever sees the sum. The model state carries the previous centroids too, so
a cluster that no site's points chose keeps its place instead of collapsing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedpact.models.base import BatchCallback, EpochCallback, Model, check_weights
from fedpact.models.metrics import assign, silhouette

#: Points each participant contributes to the k-means++ start unless ``seed_sample`` says otherwise.
DEFAULT_SEED_SAMPLE = 20


def local_step(x: np.ndarray, centroids: np.ndarray) -> dict[str, np.ndarray]:
    """One site's part of a Lloyd step: per-cluster ``sums`` (k, d), ``counts`` (k,) and ``inertia`` ()."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    c = np.asarray(centroids, dtype=np.float64)
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"points have {x.shape[1]} features, centroids {c.shape[1]}")
    k = len(c)
    if len(x) == 0:
        return {"sums": np.zeros_like(c), "counts": np.zeros(k), "inertia": np.zeros(())}
    idx, d2 = assign(x, c)
    sums = np.zeros_like(c)
    np.add.at(sums, idx, x)
    return {"sums": sums, "counts": np.bincount(idx, minlength=k).astype(np.float64), "inertia": np.asarray(d2.sum())}


def server_step(centroids: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New centroids from the summed ``sums``/``counts`` of all sites, and which clusters were empty.

    An empty cluster keeps its previous centroid: under secure aggregation nobody can see
    a point to move it to, and a centroid that no point chose this round may be chosen
    again once the others have moved. A count at or below zero (possible once DP noise
    is added to the fractions) counts as empty.
    """
    c = np.asarray(centroids, dtype=np.float64)
    s = np.asarray(sums, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64).reshape(-1)
    if s.shape != c.shape or n.shape != (len(c),):
        raise ValueError(f"sums {s.shape} and counts {n.shape} do not fit {len(c)} centroids of {c.shape[1]} features")
    empty = n <= 1e-12
    new = c.copy()
    new[~empty] = s[~empty] / n[~empty, None]
    return new, empty


def seed_sample(x: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Up to ``size`` of a site's points drawn at random: its contribution to the k-means++ start.

    These points leave the site (to the aggregator), the one disclosure of federated
    k-means beyond sums; docs/algorithms.md says so and ``seed_sample: 0`` avoids it.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if size <= 0 or len(x) == 0:
        return x[:0]
    pick = np.random.default_rng(seed).choice(len(x), min(size, len(x)), replace=False)
    return x[np.sort(pick)]


def kmeans_plus_plus(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means++ (Arthur and Vassilvitskii 2007) on the pooled seed samples: k spread-out centroids."""
    pts = np.asarray(points, dtype=np.float64)
    pts = pts.reshape(len(pts), -1)
    if len(pts) < k:
        raise ValueError(f"k-means++ needs at least k={k} points, the participants' samples hold {len(pts)}; "
                         "raise seed_sample or lower k")
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(pts)))]
    d2 = ((pts - pts[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = d2.sum()
        nxt = int(rng.choice(len(pts), p=d2 / total)) if total > 0 else int(rng.integers(len(pts)))
        chosen.append(nxt)
        d2 = np.minimum(d2, ((pts - pts[nxt]) ** 2).sum(axis=1))
    return pts[chosen].copy()


def initial_centroids(points: np.ndarray, k: int, seed: int, *, n_init: int = 10, steps: int = 20) -> np.ndarray:
    """The start the aggregator broadcasts: the best of ``n_init`` k-means++ draws, each refined
    by Lloyd steps on the pooled seed sample, judged by inertia on that sample.

    One k-means++ draw from a small sample lands in a poor local optimum often enough to
    matter (iris: about one run in three); trying several costs only work on the sample.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    best, best_inertia = None, np.inf
    for i in range(max(1, n_init)):
        c = kmeans_plus_plus(pts, k, seed + i)
        for _ in range(steps):
            part = local_step(pts, c)
            c, _ = server_step(c, part["sums"], part["counts"])
        total = float(local_step(pts, c)["inertia"])
        if total < best_inertia:
            best, best_inertia = c, total
    assert best is not None
    return best


def pool_samples(samples: Sequence[np.ndarray]) -> np.ndarray:
    """The participants' seed samples as one array (sites with no sample are skipped)."""
    parts = [np.asarray(s, dtype=np.float64).reshape(len(s), -1) for s in samples if len(s)]
    if not parts:
        raise ValueError("no participant sent seed points; k-means++ needs seed_sample > 0")
    widths = {p.shape[1] for p in parts}
    if len(widths) != 1:
        raise ValueError(f"seed samples have different feature counts: {sorted(widths)}")
    return np.concatenate(parts)


class KMeans(Model):
    """k cluster centres; weights ``centroids`` (k, d), ``sums`` (k, d) and ``mass`` (k,).

    ``fit`` runs one Lloyd step on the local data (epochs, batch size and learning rate do
    not apply). Before a k-means++ start has been set the centroids are a seeded draw
    from a standard normal, which suits standardised features (``data.standardize``).
    """

    num_classes: int

    def __init__(self, n_features: int, k: int, *, seed: int = 0):
        if n_features < 1 or k < 2:
            raise ValueError(f"need >= 1 feature and k >= 2 clusters, got {n_features} and {k}")
        self.n_features, self.num_classes, self.seed = n_features, k, seed
        rng = np.random.default_rng(seed)
        self.centroids = rng.standard_normal((k, n_features)).astype(np.float32)
        self.sums = np.zeros((k, n_features), dtype=np.float32)
        self.mass = np.zeros(k, dtype=np.float32)

    @property
    def k(self) -> int:
        return self.num_classes

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return {"centroids": self.centroids.shape, "sums": self.sums.shape, "mass": self.mass.shape}

    def get_weights(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids.copy(), "sums": self.sums.copy(), "mass": self.mass.copy()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        checked = check_weights(self._shapes(), weights)
        bad = [k for k, v in checked.items() if not np.isfinite(v).all()]
        if bad:
            raise ValueError(f"weights do not fit this model: {', '.join(bad)} hold NaN or infinite values")
        self.centroids[...] = checked["centroids"]
        self.sums[...] = checked["sums"]
        self.mass[...] = checked["mass"]

    def set_centroids(self, centroids: np.ndarray) -> None:
        """Start (or restart) from these centres, e.g. the k-means++ start."""
        self.set_weights({"centroids": np.asarray(centroids), "sums": np.zeros_like(self.sums),
                          "mass": np.zeros_like(self.mass)})

    def resolved_centroids(self) -> np.ndarray:
        """The centres this state stands for: the averaged Lloyd step applied, empty clusters kept."""
        return server_step(self.centroids, self.sums, self.mass)[0]

    def _flat(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(len(x), int(np.prod(x.shape[1:])))
        if x.shape[1] != self.n_features:
            raise ValueError(f"model expects {self.n_features} features per sample, got {x.shape[1]}")
        return x

    def fit(
        self,
        x: np.ndarray,
        y_idx: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        lr: float,
        optimizer: str = "sgd",
        seed: int = 0,
        prox_mu: float = 0.0,
        on_epoch: EpochCallback | None = None,
        on_batch: BatchCallback | None = None,
    ) -> dict[str, float]:
        """One local Lloyd step; labels are ignored. Leaves this site's fractions as the weights."""
        xf = self._flat(x)
        if len(xf) == 0:
            raise ValueError("cannot train on an empty dataset")
        start = self.resolved_centroids()
        part = local_step(xf, start)
        n = float(len(xf))
        self.centroids[...] = start
        self.sums[...] = part["sums"] / n
        self.mass[...] = part["counts"] / n
        metrics = {"loss": float(part["inertia"]) / n, "inertia": float(part["inertia"]), "num_samples": len(xf)}
        if on_batch is not None:
            on_batch(1, 1)
        if on_epoch is not None:
            on_epoch(0, dict(metrics))
        return metrics

    def evaluate(self, x: np.ndarray, y_idx: np.ndarray | None = None, batch_size: int = 1024) -> dict[str, float]:
        """Inertia (a total), silhouette (this site's mean) and the count; labels are ignored."""
        xf = self._flat(x)
        if len(xf) == 0:
            return {"loss": 0.0, "inertia": 0.0, "silhouette": 0.0, "num_samples": 0}
        idx, d2 = assign(xf, self.resolved_centroids())
        total = float(d2.sum())
        return {"loss": total / len(xf), "inertia": total, "silhouette": silhouette(xf, idx, seed=self.seed),
                "num_samples": len(xf)}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Index of the nearest centre per sample."""
        return assign(self._flat(x), self.resolved_centroids())[0]
