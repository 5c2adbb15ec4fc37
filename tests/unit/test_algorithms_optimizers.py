"""Server optimisers against steps computed by hand from Reddi et al. 2021, Algorithm 2."""

import math

import numpy as np
import pytest

from fedpact.algorithms import FedAdagrad, FedAdam, FedAvgM, FedYogi, get_aggregator
from fedpact.common.definition import AlgorithmSpec

G = {"w": np.array([1.0, -2.0], np.float32)}


def _updates(*deltas: list[float]) -> list[tuple[dict[str, np.ndarray], int]]:
    return [({"w": (G["w"] + np.array(d, np.float32)).astype(np.float32)}, 10) for d in deltas]


def test_fedavgm_momentum_by_hand() -> None:
    opt = FedAvgM(server_learning_rate=0.5, momentum=0.9)
    w1 = opt.aggregate(G, _updates([0.2, 0.0], [0.0, 0.4]))  # mean delta [0.1, 0.2]; b = [0.1, 0.2]
    np.testing.assert_allclose(w1["w"], [1.0 + 0.05, -2.0 + 0.1], rtol=1e-6)
    w2 = opt.server_step(w1, {"w": np.array([0.1, 0.2])})  # b = 0.9 b + d = [0.19, 0.38]
    np.testing.assert_allclose(w2["w"], [1.05 + 0.095, -1.9 + 0.19], rtol=1e-6)
    assert w2["w"].dtype == np.float32


@pytest.mark.parametrize("cls", [FedAdagrad, FedAdam, FedYogi])
def test_adaptive_first_two_steps_by_hand(cls: type) -> None:
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    opt = cls(lr, b1, tau, b2) if cls is not FedAdagrad else cls(lr, b1, tau)
    d1, d2 = 0.5, -0.25
    m, v, x = 0.0, tau**2, 1.0
    got = {"w": np.array([x], np.float64)}
    for d in (d1, d2):
        m = b1 * m + (1 - b1) * d
        if cls is FedAdagrad:
            v = v + d * d
        elif cls is FedAdam:
            v = b2 * v + (1 - b2) * d * d
        else:
            v = v - (1 - b2) * d * d * math.copysign(1.0, v - d * d)
        x = x + lr * m / (math.sqrt(v) + tau)
        got = opt.server_step(got, {"w": np.array([d])})
        assert got["w"][0] == pytest.approx(x, rel=1e-12)


def test_state_round_trip_continues_the_same_trajectory() -> None:
    a = get_aggregator(AlgorithmSpec(name="fedadam", params={"server_learning_rate": 0.05}))
    w = {"w": np.array([0.0, 1.0])}
    for d in ([0.3, -0.1], [0.2, 0.4]):
        w = a.server_step(w, {"w": np.array(d)})
    saved = {k: v.copy() for k, v in a.state().items()}
    assert sorted(saved) == ["m.w", "v.w"]
    b = get_aggregator(AlgorithmSpec(name="fedadam", params={"server_learning_rate": 0.05}))
    b.load_state(saved)
    step = {"w": np.array([-0.5, 0.1])}
    np.testing.assert_array_equal(a.server_step(w, step)["w"], b.server_step(w, step)["w"])
    fresh = get_aggregator(AlgorithmSpec(name="fedadam", params={"server_learning_rate": 0.05}))
    assert not np.array_equal(fresh.server_step(w, step)["w"], a.server_step(w, step)["w"])
    with pytest.raises(ValueError, match="has no state 'x.w'"):
        b.load_state({"x.w": np.zeros(2)})


def test_fedavg_keeps_no_state_and_refuses_some() -> None:
    fedavg = get_aggregator(AlgorithmSpec())
    assert fedavg.state() == {}
    with pytest.raises(ValueError, match="keeps no state"):
        fedavg.load_state({"m.w": np.zeros(2)})
