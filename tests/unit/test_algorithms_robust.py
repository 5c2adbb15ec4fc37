"""Robust strategies against poisoned participants, in-process over the real strategy code."""

import numpy as np
import pytest

from fedpact.algorithms import FedAvg, Krum, Median, MultiKrum, TrimmedMean, apply_standardization, combine_moments, local_moments
from fedpact.algorithms.robust import krum_scores
from fedpact.common.definition import ModelSpec
from fedpact.data import digits_federation, digits_schema
from fedpact.models import build_model


def test_median_and_trimmed_mean_by_hand() -> None:
    g = {"w": np.zeros(2, np.float32)}
    ups = [({"w": np.array(v, np.float32)}, 1) for v in ([1, 10], [2, 20], [3, 30], [4, 40], [100, -1000])]
    np.testing.assert_allclose(Median().aggregate(g, ups)["w"], [3, 20])
    # beta 0.2 of 5 drops one value at each end: [2, 3, 4] and [10, 20, 30]
    np.testing.assert_allclose(TrimmedMean(0.2).aggregate(g, ups)["w"], [3, 20])


def test_krum_picks_the_update_nearest_its_neighbours() -> None:
    deltas = [{"w": np.array(v, np.float64)} for v in ([0.0], [0.1], [0.2], [0.3], [50.0])]
    scores = krum_scores(deltas, f=1)  # n - f - 2 = 2 nearest neighbours each
    np.testing.assert_allclose(scores, [0.01 + 0.04, 0.01 + 0.01, 0.01 + 0.01, 0.01 + 0.04, 49.7**2 + 49.8**2])
    g = {"w": np.zeros(1, np.float32)}
    ups = [({"w": d["w"].astype(np.float32)}, 1) for d in deltas]
    assert float(Krum(1).aggregate(g, ups)["w"][0]) == pytest.approx(0.1)
    multi = MultiKrum(1, None)
    assert float(multi.aggregate(g, ups)["w"][0]) == pytest.approx(0.15) and multi.selected == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"needs at least 2f \+ 3 = 5 updates, the round has 4"):
        Krum(1).aggregate(g, ups[:4])


def _federated_accuracy(strategy, poison: str, rounds: int = 4) -> float:
    shards, test = digits_federation(10, seed=1)
    mean, std = combine_moments([local_moments(s.x) for s in shards])
    schema = digits_schema()
    global_model = build_model(ModelSpec(name="softmax_regression"), schema)
    local = build_model(ModelSpec(name="softmax_regression"), schema)
    rng = np.random.default_rng(7)
    for r in range(rounds):
        g = global_model.get_weights()
        updates = []
        for site, shard in enumerate(shards):
            local.set_weights(g)
            res = local.fit(apply_standardization(shard.x, mean, std), shard.y, epochs=1, batch_size=32, lr=0.1,
                            seed=r * 100 + site)
            w = local.get_weights()
            if site < 2 and poison != "none":  # two of ten participants are hostile
                if poison == "scaled":
                    w = {k: (g[k] - 10.0 * (w[k] - g[k])).astype(w[k].dtype) for k in w}
                else:
                    w = {k: (g[k] + rng.normal(0, 20.0, w[k].shape)).astype(w[k].dtype) for k in w}
            updates.append((w, res["num_samples"]))
        global_model.set_weights(strategy.aggregate(g, updates))
    return global_model.evaluate(apply_standardization(test.x, mean, std), test.y)["accuracy"]


@pytest.mark.parametrize("poison", ["scaled", "random"])
def test_robust_strategies_keep_accuracy_where_fedavg_falls(poison: str) -> None:
    clean = _federated_accuracy(FedAvg(), poison="none")
    fedavg = _federated_accuracy(FedAvg(), poison)
    assert clean >= 0.85
    assert fedavg < clean - 0.2, (fedavg, clean)
    for strategy in (Median(), TrimmedMean(0.2), Krum(2), MultiKrum(2, None)):
        acc = _federated_accuracy(strategy, poison)
        assert acc >= clean - 0.05, (type(strategy).__name__, acc, clean)
