"""The privacy modes' update transforms: secure plans, contributions and their decoding, DP budgets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedpact.common.definition import parse_definition
from fedpact.privacy import dp, modes
from fedpact.privacy.quantize import QuantizationError


def definition(privacy: dict[str, Any], **kw: Any) -> Any:
    return parse_definition({"model": {"name": "mlp"}, "data": {"features": 4, "classes": [0, 1]}, "quorum": 3,
                             "min_participants": 3, "rounds": 10, "privacy": privacy, **kw})


def weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=3).astype(np.float32)}


def test_secure_contributions_sum_to_weighted_fedavg_and_metrics() -> None:
    rng = np.random.default_rng(0)
    d = definition({"mode": "secure", "clip": 1.0})
    g = weights(rng)
    names, counts = ["a", "b", "c"], {"a": 100, "b": 300, "c": 50}
    plan = modes.make_secure_plan(d, task="t", round_id="r", selected=names, announced=counts, model_values=15)
    plan = modes.SecurePlan.from_dict(plan.to_dict())
    # the model's values, the metrics, the count of clipped inputs and the weight
    assert plan.secagg.threshold == 2 and plan.vector_length == 15 + len(modes.METRIC_NAMES) + 2
    trained = {u: {k: v + rng.normal(0, 0.1, v.shape).astype(np.float32) for k, v in g.items()} for u in names}
    total = np.zeros(plan.vector_length, dtype=np.uint32)
    for i, u in enumerate(names):
        vec, w = modes.encode_contribution(plan, g, trained[u], counts[u], {"loss": 1.0 + i, "accuracy": 0.5},
                                           {"loss": 2.0, "accuracy": 0.25} if u != "c" else {})
        assert w == counts[u]
        total += vec
    new, metrics, tw = modes.decode_aggregate(plan, g, total)
    assert tw == 450 and metrics["clipped_inputs"] == 0
    for k in g:
        expected = g[k] + sum(counts[u] * (trained[u][k] - g[k]) for u in names) / 450
        np.testing.assert_allclose(new[k], expected, atol=plan.error_bound(tw) + 1e-6)
        assert new[k].dtype == np.float32
    assert metrics["train_loss"] == pytest.approx((100 * 1 + 300 * 2 + 50 * 3) / 450, abs=1e-4)
    assert metrics["val_loss"] == pytest.approx(2.0, abs=1e-4)  # c had no hold-out: not counted


def test_secure_dp_contribution_is_clipped_and_noised() -> None:
    rng = np.random.default_rng(1)
    d = definition({"mode": "secure+dp", "clip_norm": 0.5, "noise_multiplier": 1.0, "threshold": 2})
    g = weights(rng)
    plan = modes.make_secure_plan(d, task="t", round_id="r", selected=["a", "b", "c"], announced={},
                                  model_values=15, noise_multiplier=1.0)
    assert not plan.weighted and plan.max_weight == 1
    assert plan.noise_std == pytest.approx(dp.distributed_noise_std(1.0, 0.5, 3, min_honest=2))
    big = {k: v + 10.0 for k, v in g.items()}  # far beyond clip_norm
    deltas = []
    for seed in range(200):
        vec, _ = modes.encode_contribution(plan, g, big, 1, rng=np.random.default_rng(seed))
        new, metrics, total = modes.decode_aggregate(plan, g, vec, denominator=1)
        assert total == 1 and metrics == {}
        deltas.append(np.concatenate([(new[k] - g[k]).reshape(-1) for k in sorted(g)]))
    arr = np.array(deltas)
    mean_norm = np.linalg.norm(arr.mean(axis=0))
    assert mean_norm == pytest.approx(0.5, rel=0.1)  # the clipped delta, noise averaged out
    assert arr.std(axis=0).mean() == pytest.approx(plan.noise_std, rel=0.15)


def test_plan_refuses_what_does_not_fit_and_decode_detects_garbage() -> None:
    d = definition({"mode": "secure"})
    with pytest.raises(QuantizationError, match="does not fit the ring"):
        modes.make_secure_plan(d, task="t", round_id="r", selected=["a", "b", "c"],
                               announced={"a": 2**30, "b": 1, "c": 1}, model_values=4)
    plan = modes.make_secure_plan(d, task="t", round_id="r", selected=["a", "b", "c"], announced={}, model_values=4)
    garbage = np.random.default_rng(0).integers(0, 2**32, plan.vector_length, dtype=np.uint32)
    garbage[-1] = 2**31  # a total weight far outside the bounds
    with pytest.raises(modes.PrivacyModeError, match="masks did not cancel"):
        modes.decode_aggregate(plan, {"w": np.zeros(4, np.float32)}, garbage)


def test_dp_noise_and_budget_follow_the_library() -> None:
    d = definition({"mode": "dp", "clip_norm": 1.0, "target_epsilon": 4.0}, fraction=0.5, quorum=4)
    z = modes.resolve_noise_multiplier(d)
    assert dp.epsilon_for(z, 0.5, 10, 1e-5) <= 4.0 + 1e-6
    assert modes.budget_rounds(d, z) == 10
    d2 = definition({"mode": "dp", "clip_norm": 1.0, "noise_multiplier": 1.0, "epsilon_budget": 3.0})
    assert modes.budget_rounds(d2, 1.0) == dp.rounds_within_budget(1.0, 1.0, 1e-5, 3.0)
    assert modes.budget_rounds(definition({"mode": "dp", "clip_norm": 1.0, "noise_multiplier": 1.0}), 1.0) is None


def test_the_secure_sum_counts_the_inputs_that_were_clipped() -> None:
    rng = np.random.default_rng(5)
    d = definition({"mode": "secure", "clip": 0.5})
    g = weights(rng)
    names = ["a", "b", "c"]
    plan = modes.make_secure_plan(d, task="t", round_id="r", selected=names, announced=dict.fromkeys(names, 10),
                                  model_values=15)
    total = np.zeros(plan.vector_length, dtype=np.uint32)
    for move in (0.1, 0.7, -2.0):  # b and c leave [-0.5, 0.5] in one coordinate
        trained = {k: v.copy() for k, v in g.items()}
        trained["b"][0] += np.float32(move)
        vec, _ = modes.encode_contribution(plan, g, trained, 10)
        total += vec
    _, metrics, _ = modes.decode_aggregate(plan, g, total)
    assert metrics["clipped_inputs"] == 2
