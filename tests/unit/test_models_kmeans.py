"""Federated k-means: site steps, the server step, seeding, and the result against scikit-learn on pooled data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_iris, make_blobs
from sklearn.metrics import silhouette_score

from fedpact.algorithms.fedavg import weighted_average
from fedpact.common.definition import DataSchema, ModelSpec
from fedpact.models import KMeans, build_model
from fedpact.models.kmeans import (
    initial_centroids,
    kmeans_plus_plus,
    local_step,
    pool_samples,
    seed_sample,
    server_step,
)
from fedpact.models.metrics import clustering_metrics, inertia, silhouette


def _sites(x: np.ndarray, n: int, seed: int = 0) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(x))
    return [x[part] for part in np.array_split(order, n)]


def _federated_kmeans(sites: list[np.ndarray], k: int, rounds: int, seed: int = 0) -> tuple[KMeans, np.ndarray]:
    """Rounds as the runtime runs them: broadcast, one local step per site, sample-weighted average."""
    global_model = build_model(ModelSpec(name="kmeans", params={"k": k}), DataSchema(task="clustering",
                                                                                      features=sites[0].shape[1]))
    assert isinstance(global_model, KMeans)
    samples = [seed_sample(s, 20, seed=seed + i) for i, s in enumerate(sites)]
    start = kmeans_plus_plus(pool_samples(samples), k, seed=seed)
    global_model.set_centroids(start)
    local = KMeans(sites[0].shape[1], k)
    for _ in range(rounds):
        updates, counts = [], []
        for s in sites:
            local.set_weights(global_model.get_weights())
            local.fit(s, np.zeros(len(s)), epochs=1, batch_size=1, lr=1.0)
            updates.append(local.get_weights())
            counts.append(len(s))
        global_model.set_weights(weighted_average(updates, counts))
    return global_model, start


def test_site_and_server_steps_equal_one_pooled_lloyd_step() -> None:
    x, _ = make_blobs(300, centers=4, n_features=3, random_state=0)
    start = x[:4].copy()
    parts = [local_step(s, start) for s in _sites(x, 3)]
    new, empty = server_step(start, sum(p["sums"] for p in parts), sum(p["counts"] for p in parts))
    pooled = local_step(x, start)
    expected = pooled["sums"] / pooled["counts"][:, None]
    assert np.allclose(new, expected) and not empty.any()
    assert sum(float(p["inertia"]) for p in parts) == pytest.approx(inertia(x, start))


def test_empty_cluster_keeps_its_previous_centroid() -> None:
    noised = KMeans(2, 2)
    start = noised.get_weights()["centroids"]
    noised.set_weights({"centroids": start, "sums": np.ones((2, 2), np.float32),
                        "mass": np.array([-0.01, 0.5], np.float32)})  # DP noise can push a fraction below zero
    assert np.allclose(noised.resolved_centroids(), [start[0], [2.0, 2.0]])
    centroids = np.array([[0.0, 0.0], [100.0, 100.0]])
    part = local_step(np.array([[1.0, 1.0], [-1.0, 1.0]]), centroids)
    new, empty = server_step(centroids, part["sums"], part["counts"])
    assert empty.tolist() == [False, True]
    assert np.allclose(new, [[0.0, 1.0], [100.0, 100.0]])
    with pytest.raises(ValueError, match="do not fit 2 centroids"):
        server_step(centroids, part["sums"][:1], part["counts"])


def test_kmeans_plus_plus_spreads_and_refuses_too_few_points() -> None:
    x, labels = make_blobs(200, centers=3, cluster_std=0.2, random_state=2)
    c = kmeans_plus_plus(x, 3, seed=0)
    hit = {int(labels[np.argmin(((x - ci) ** 2).sum(axis=1))]) for ci in c}
    assert hit == {0, 1, 2}
    with pytest.raises(ValueError, match="at least k=3 points"):
        kmeans_plus_plus(x[:2], 3, seed=0)
    with pytest.raises(ValueError, match="seed_sample > 0"):
        pool_samples([seed_sample(x, 0, seed=0)])
    assert len(seed_sample(x[:5], 20, seed=1)) == 5


@pytest.mark.parametrize("n_sites", [3, 5])
def test_federated_kmeans_matches_scikit_learn_on_pooled_iris(n_sites: int) -> None:
    x = load_iris().data
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    model, start = _federated_kmeans(_sites(x, n_sites), k=3, rounds=40, seed=0)
    same_start = SkKMeans(3, init=start, n_init=1, algorithm="lloyd", tol=0.0).fit(x)
    assert np.allclose(model.resolved_centroids(), same_start.cluster_centers_, atol=1e-5)
    fed_inertia = inertia(x, model.resolved_centroids())
    best = min(inertia(x, _federated_kmeans(_sites(x, n_sites), 3, 40, seed=s)[0].resolved_centroids())
               for s in range(5))
    assert best == pytest.approx(SkKMeans(3, n_init=10, random_state=0).fit(x).inertia_, rel=0.01)
    labels = model.predict(x)
    assert silhouette(x, labels) == pytest.approx(silhouette_score(x, labels))
    reports = [model.evaluate(s) for s in _sites(x, n_sites)]
    pooled = clustering_metrics(reports)
    assert pooled["inertia"] == pytest.approx(fed_inertia) and pooled["num_samples"] == len(x)


def test_kmeans_weights_are_checked_and_unchanged_on_refusal() -> None:
    model = KMeans(2, 3)
    before = model.get_weights()
    with pytest.raises(ValueError, match="mass hold NaN or infinite values"):
        model.set_weights({**before, "mass": np.array([np.nan, 0.0, 0.0])})
    with pytest.raises(ValueError, match="missing tensor"):
        model.set_weights({"centroids": before["centroids"]})
    with pytest.raises(ValueError, match="expects 2 features"):
        model.fit(np.zeros((3, 4)), np.zeros(3), epochs=1, batch_size=1, lr=1.0)
    assert all(np.array_equal(before[k], v) for k, v in model.get_weights().items())


def test_initial_centroids_pick_the_best_of_several_draws() -> None:
    x = load_iris().data
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    sample = pool_samples([seed_sample(s, 10, seed=i) for i, s in enumerate(_sites(x, 3))])
    single = [inertia(sample, kmeans_plus_plus(sample, 3, seed=s)) for s in range(10)]
    best = initial_centroids(sample, 3, seed=0, n_init=10)
    assert best.shape == (3, 4)
    assert inertia(sample, best) <= min(single) + 1e-9
