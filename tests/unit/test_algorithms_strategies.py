import numpy as np
import pytest

from fedpact.algorithms import (
    Aggregator,
    FedAvg,
    FedProx,
    apply_standardization,
    available_algorithms,
    combine_moments,
    get_aggregator,
    local_moments,
    strategies,
)
from fedpact.common.algorithms import BUILTIN_ALGORITHMS
from fedpact.common.definition import AlgorithmSpec, ModelSpec
from fedpact.common.errors import UnknownComponent, UpdateRejected
from fedpact.data import digits_federation, digits_schema
from fedpact.models import build_model

GLOBAL = {"w": np.zeros(4, np.float32)}


class _FakeEntryPoint:
    def __init__(self, target):
        self._target = target

    def load(self):
        return self._target


def test_fedavg_is_sample_weighted():
    updates = [({"w": np.ones(4, np.float32)}, 30), ({"w": np.full(4, 5.0, np.float32)}, 10)]
    out = FedAvg().aggregate(GLOBAL, updates)
    np.testing.assert_allclose(out["w"], 2.0)
    assert FedAvg().participant_config() == {}


def test_aggregate_names_the_bad_update():
    good = ({"w": np.ones(4, np.float32)}, 5)
    with pytest.raises(UpdateRejected, match=r"update 1: update rejected: 'w': non-finite values \(1 NaN"):
        FedAvg().aggregate(GLOBAL, [good, ({"w": np.array([0, np.nan, 0, 0], np.float32)}, 5)])
    with pytest.raises(UpdateRejected, match="update 0: num_samples must be a positive integer, got 0"):
        FedAvg().aggregate(GLOBAL, [({"w": np.ones(4, np.float32)}, 0)])
    with pytest.raises(ValueError, match="no updates"):
        FedAvg().aggregate(GLOBAL, [])


def test_get_aggregator_builtins():
    assert isinstance(get_aggregator(AlgorithmSpec()), FedAvg)
    prox = get_aggregator(AlgorithmSpec(name="fedprox", params={"mu": 0.5}))
    assert isinstance(prox, FedProx) and prox.participant_config() == {"prox_mu": 0.5}
    assert get_aggregator(AlgorithmSpec(name="fedprox")).participant_config() == {"prox_mu": 0.01}


def test_plugins_and_unknown_names(monkeypatch):
    class Median(Aggregator):
        def aggregate(self, global_weights, updates):
            return {k: np.median([u[k] for u, _ in updates], axis=0) for k in global_weights}

    monkeypatch.setattr(strategies, "_plugins", lambda: {"acme.median": _FakeEntryPoint(lambda spec: Median())})
    assert available_algorithms() == [*BUILTIN_ALGORITHMS, "acme.median"]
    assert isinstance(get_aggregator(AlgorithmSpec(name="acme.median")), Median)
    available = "'acme.krum' is not available here; available algorithms: fedavg, fedprox, fedavgm, .*, multi_krum, acme.median"
    with pytest.raises(UnknownComponent, match=available):
        get_aggregator(AlgorithmSpec(name="acme.krum"))


def test_small_federation_converges():
    """Three digit-holding sites: federated standardisation, then FedProx rounds with softmax regression."""
    shards, test = digits_federation(3, seed=0)
    mean, std = combine_moments([local_moments(s.x) for s in shards])
    schema = digits_schema()
    aggregator = get_aggregator(AlgorithmSpec(name="fedprox", params={"mu": 0.01}))
    config = aggregator.participant_config()
    global_model = build_model(ModelSpec(name="softmax_regression"), schema)
    local = build_model(ModelSpec(name="softmax_regression"), schema)
    for round_index in range(5):
        updates = []
        for site, shard in enumerate(shards):
            local.set_weights(global_model.get_weights())
            result = local.fit(apply_standardization(shard.x, mean, std), shard.y, epochs=1, batch_size=32,
                               lr=0.05, seed=round_index * 10 + site, prox_mu=config["prox_mu"])
            updates.append((local.get_weights(), result["num_samples"]))
        global_model.set_weights(aggregator.aggregate(global_model.get_weights(), updates))
    assert global_model.evaluate(apply_standardization(test.x, mean, std), test.y)["accuracy"] >= 0.93
