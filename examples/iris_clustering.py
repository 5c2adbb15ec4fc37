"""Clustering across sites: federated k-means on scikit-learn's bundled iris flowers.

The 150 flowers are split across three sites, each holding mostly one species (non-IID,
as sites are). The task is ``data.task: clustering`` with ``kmeans`` (k = 3): features are
standardised with federated means and deviations, every site contributes a small random
sample for the k-means++ start (the best of 10 draws on that sample), and each round is
one Lloyd step from per-site sums and counts, averaged exactly as model updates are (so ``secure`` aggregation could carry it).
Inertia is a pooled total and silhouette a count-weighted mean of the sites' figures. The
result is compared with scikit-learn's KMeans on the pooled data.

The federation runs in this process, with the library functions each party calls; the
runtime takes clustering tasks once it asks for the seed sample (docs/algorithms.md).

    python examples/iris_clustering.py
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_iris

from fedpact.algorithms import weighted_average
from fedpact.algorithms.standardize import (
    apply_standardization,
    combine_moments,
    local_moments,
)
from fedpact.common.definition import parse_definition
from fedpact.models import KMeans, build_model
from fedpact.models.kmeans import initial_centroids, pool_samples, seed_sample
from fedpact.models.metrics import clustering_metrics, inertia

DEFINITION = {
    "model": {"name": "kmeans", "params": {"k": 3, "seed_sample": 10}},
    "rounds": 15,
    "quorum": 3,
    "data": {"task": "clustering", "features": ["sepal length", "sepal width", "petal length", "petal width"],
             "standardize": True},
    "seed": 0,
}


def split_sites(seed: int = 0) -> list[np.ndarray]:
    """Site i holds 80% of species i and 10% of each other species."""
    x, species = load_iris(return_X_y=True)
    rng = np.random.default_rng(seed)
    owner = np.where(rng.random(len(x)) < 0.8, species, rng.integers(0, 3, len(x)))
    return [x[owner == i] for i in range(3)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--max-gap", type=float, default=0.05, help="exit 1 if inertia exceeds scikit-learn's by more")
    args = ap.parse_args(argv)
    d = parse_definition(DEFINITION)
    raw = split_sites(d.seed)
    for i, s in enumerate(raw):
        print(f"site {i + 1}: {len(s)} flowers")
    mean, std = combine_moments([local_moments(s) for s in raw])
    sites = [apply_standardization(s, mean, std).astype(np.float64) for s in raw]
    assert d.model is not None
    global_model = build_model(d.model, d.data, seed=d.seed)
    assert isinstance(global_model, KMeans)
    k, per_site = int(d.model.params["k"]), int(d.model.params["seed_sample"])
    global_model.set_centroids(initial_centroids(
        pool_samples([seed_sample(s, per_site, seed=d.seed + i) for i, s in enumerate(sites)]), k, seed=d.seed))
    local = build_model(d.model, d.data, seed=d.seed)
    for r in range(1, d.rounds + 1):
        updates, counts = [], []
        for s in sites:
            local.set_weights(global_model.get_weights())
            local.fit(s, np.zeros(len(s)), epochs=1, batch_size=1, lr=1.0)
            updates.append(local.get_weights())
            counts.append(len(s))
        global_model.set_weights(weighted_average(updates, counts))
        m = clustering_metrics([global_model.evaluate(s) for s in sites])
        if r == 1 or r % 5 == 0:
            print(f"round {r:>2}: inertia {m['inertia']:.2f}  silhouette {m['silhouette']:.3f}")
    pooled = np.concatenate(sites)
    reference = SkKMeans(k, n_init=10, random_state=0).fit(pooled).inertia_
    fed = inertia(pooled, global_model.resolved_centroids())
    print(f"scikit-learn KMeans on the pooled data: inertia {reference:.2f}")
    print(f"final model: federated inertia {fed:.2f} ({fed / reference - 1:+.1%} against pooled) "
          f"after {d.rounds} rounds")
    return 0 if fed <= reference * (1 + args.max_gap) else 1


if __name__ == "__main__":
    sys.exit(main())
