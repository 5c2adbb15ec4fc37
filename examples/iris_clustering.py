"""Clustering across sites: federated k-means on scikit-learn's bundled iris flowers.

The 150 flowers are split across three sites, each holding mostly one species (non-IID,
as sites are). The task is ``data.task: clustering`` with ``kmeans`` (k = 3): features are
standardised with federated means and deviations, every site contributes a small random
sample for the k-means++ start (the best of 10 draws on that sample), and each round is
one Lloyd step from per-site sums and counts, averaged exactly as model updates are (so ``secure`` aggregation could carry it).
Inertia is a pooled total and silhouette a count-weighted mean of the sites' figures. The
result is compared with scikit-learn's KMeans on the pooled data.

The federation runs through fedpact's real runtime: an embedded hub, the aggregator in
this process (it asks the sites for the seed sample before round 1) and each site a
participant thread (``TaskParticipant``) talking to it over HTTP.

    python examples/iris_clustering.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading

import numpy as np
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_iris

import fedpact
from fedpact.algorithms.standardize import apply_standardization
from fedpact.data import Dataset
from fedpact.inference import TrainedModel, load_model
from fedpact.models.metrics import inertia
from fedpact.runtime import Progress
from fedpact.runtime.kind_participant import TaskParticipant

FEATURES = ["sepal length", "sepal width", "petal length", "petal width"]
DEFINITION = {
    "model": {"name": "kmeans", "params": {"k": 3, "seed_sample": 10}},
    "rounds": 15,
    "quorum": 3,
    "data": {"task": "clustering", "features": FEATURES, "standardize": True},
    "evaluation": {"holdout": 0.0},
    "admission": {"mode": "invite", "organisations": ["Garden 1", "Garden 2", "Garden 3"]},
    "seed": 0,
}


def split_sites(seed: int = 0) -> list[np.ndarray]:
    """Site i holds 80% of species i and 10% of each other species."""
    x, species = load_iris(return_X_y=True)
    rng = np.random.default_rng(seed)
    owner = np.where(rng.random(len(x)) < 0.8, species, rng.integers(0, 3, len(x)))
    return [x[owner == i] for i in range(3)]


def federate(sites: list[np.ndarray]) -> tuple[fedpact.runtime.AggregatorResult, TrainedModel, list[BaseException]]:
    """The task on an embedded hub; returns the aggregator's result and the stored model."""
    with fedpact.Client.embedded(tempfile.mkdtemp(prefix="fedpact-iris-")) as coordinator:
        coordinator.register("coordinator", "iris-example-pw", "Botanical network")
        coordinator.login("coordinator", "iris-example-pw")
        coordinator.create_task("iris", DEFINITION, "Iris flowers in three clusters, three gardens")
        errors: list[BaseException] = []
        clients = []
        for i in range(len(sites)):
            c = fedpact.Client(coordinator.url)
            c.register(f"garden-{i + 1}", "iris-example-pw", f"Garden {i + 1}")
            c.login(f"garden-{i + 1}", "iris-example-pw")
            clients.append(c)

        def participate(i: int) -> None:
            try:
                data = Dataset.unlabelled(sites[i], FEATURES)
                clients[i].run_participant("iris", TaskParticipant(data), progress=Progress(quiet=True))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=participate, args=(i,)) for i in range(len(sites))]
        for t in threads:
            t.start()
        outcome = coordinator.run_aggregator("iris", progress=Progress(quiet=True))
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
        trained = load_model(coordinator.download_model("iris", tempfile.mkdtemp(prefix="fedpact-iris-model-")))
    return outcome, trained, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--max-gap", type=float, default=0.05, help="exit 1 if inertia exceeds scikit-learn's by more")
    args = ap.parse_args(argv)
    raw = split_sites(0)
    for i, s in enumerate(raw):
        print(f"site {i + 1}: {len(s)} flowers")
    outcome, trained, errors = federate(raw)
    if errors:
        print(f"a site failed: {errors[0]}")
        return 1
    for entry in outcome.history:
        m = entry["metrics"]
        if entry["round"] == 1 or entry["round"] % 5 == 0:
            print(f"round {entry['round']:>2}: mean squared distance to the nearest centre {m['train_loss']:.4f}")
    assert trained.mean is not None and trained.std is not None
    pooled = apply_standardization(np.concatenate(raw), trained.mean, trained.std).astype(np.float64)
    reference = SkKMeans(3, n_init=10, random_state=0).fit(pooled).inertia_
    fed = inertia(pooled, trained.model.resolved_centroids())
    print(f"scikit-learn KMeans on the pooled data: inertia {reference:.2f}")
    print(f"final model: federated inertia {fed:.2f} ({fed / reference - 1:+.1%} against pooled) "
          f"after {outcome.rounds_completed} rounds")
    return 0 if fed <= reference * (1 + args.max_gap) else 1


if __name__ == "__main__":
    sys.exit(main())
