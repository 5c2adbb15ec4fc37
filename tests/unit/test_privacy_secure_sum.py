"""Exact secure sums of statistics: limb encoding through the real SecAgg protocol, dropouts included."""

from __future__ import annotations

import numpy as np
import pytest

from fedpact.privacy import secagg
from fedpact.privacy.secure_sum import (
    FRACTION_BITS,
    SecureSumError,
    SumPlan,
    decode_sums,
    encode_sums,
    make_sum_plan,
)

LAYOUT = [("count", (3,), "count"), ("sum", (3,), "real"), ("sumsq", (3,), "real"), ("hist.0", (4,), "count")]
NAMES = ["a", "b", "c", "d"]


def _site(rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = rng.normal([-3e3, 0.5, 7e6], [10.0, 1e-4, 1e5], size=(int(rng.integers(5, 50)), 3))
    return {"count": np.full(3, float(len(x))), "sum": x.sum(axis=0), "sumsq": (x * x).sum(axis=0),
            "hist.0": np.array([1.0, 0.0, float(len(x)), 2.0])}


def _keys_shared(plan: SumPlan) -> tuple[dict[str, secagg.SecAggClient], secagg.SecAggServer]:
    """The first two SecAgg steps in memory: keys advertised, then shared."""
    clients = {n: secagg.SecAggClient(plan.secagg, n) for n in NAMES}
    server = secagg.SecAggServer(plan.secagg)
    for n, c in clients.items():
        server.receive(n, c.advertise_keys())
    roster = server.roster()
    for n, c in clients.items():
        server.receive(n, c.share_keys(roster))
    return clients, server


def _run_protocol(plan: SumPlan, inputs: dict[str, np.ndarray], drop_after_masking: str | None) -> np.ndarray:
    """The four SecAgg steps in memory; ``drop_after_masking`` sends its masked input, then vanishes."""
    clients, server = _keys_shared(plan)
    for n, msg in server.forward_shares().items():
        out, y = clients[n].masked_input(msg, inputs[n])
        server.receive(n, out, y)
    request = server.unmask_request()
    for n, c in clients.items():
        if n != drop_after_masking:
            server.receive(n, c.unmask(request))
    return server.finish()


def test_the_unmasked_sum_is_the_exact_total_of_every_statistic_after_a_dropout() -> None:
    rng = np.random.default_rng(0)
    sites = {n: _site(rng) for n in NAMES}
    plan = make_sum_plan(task="t", request_id="r1", participants=NAMES, threshold=3, layout=LAYOUT)
    assert plan.secagg.bits == 64 and plan.vector_length == 3 + 3 * 4 + 3 * 4 + 4
    assert SumPlan.from_dict(plan.to_dict()) == plan
    vectors = {n: encode_sums(plan, s) for n, s in sites.items()}
    totals = decode_sums(plan, _run_protocol(plan, vectors, drop_after_masking="d"))
    for k in ("count", "hist.0"):
        assert np.array_equal(totals[k], sum(s[k] for s in sites.values()))  # counts: exact
    for k in ("sum", "sumsq"):
        expected = np.sum([s[k] for s in sites.values()], axis=0)
        # each site's value is rounded to 2^-40 once; float64's own rounding of huge sums dominates
        assert np.all(np.abs(totals[k] - expected) <= len(NAMES) * 2.0**-FRACTION_BITS + 1e-15 * np.abs(expected))


def test_a_masked_vector_alone_says_nothing_of_its_site() -> None:
    rng = np.random.default_rng(1)
    sites = {n: _site(rng) for n in NAMES}
    plan = make_sum_plan(task="t", request_id="r2", participants=NAMES, threshold=3, layout=LAYOUT)
    clients, server = _keys_shared(plan)
    for n, msg in server.forward_shares().items():
        plain = encode_sums(plan, sites[n])
        _, y = clients[n].masked_input(msg, plain)
        # the count coordinates travel masked: uniformly spread over 2^64, not the small counts
        assert not np.array_equal(y, plain) and (y[:3] > 2**40).any()


def test_statistics_that_do_not_fit_the_plan_are_refused() -> None:
    plan = make_sum_plan(task="t", request_id="r3", participants=NAMES, threshold=3, layout=LAYOUT)
    good = _site(np.random.default_rng(2))
    with pytest.raises(SecureSumError, match="exactly"):
        encode_sums(plan, {**good, "min": np.zeros(3)})  # a site's minimum never enters a secure sum
    with pytest.raises(SecureSumError, match="whole counts"):
        encode_sums(plan, {**good, "count": np.array([1.5, 2.0, 3.0])})
    with pytest.raises(SecureSumError, match="whole counts"):
        encode_sums(plan, {**good, "hist.0": np.array([-1.0, 0.0, 0.0, 0.0])})
    with pytest.raises(SecureSumError, match="shape"):
        encode_sums(plan, {**good, "sum": np.zeros(2)})
    with pytest.raises(SecureSumError, match="NaN"):
        encode_sums(plan, {**good, "sumsq": np.array([np.nan, 0.0, 0.0])})
    with pytest.raises(SecureSumError, match="beyond what a secure sum"):
        encode_sums(plan, {**good, "sumsq": np.array([1e30, 0.0, 0.0])})
    with pytest.raises(SecureSumError, match="malformed"):
        SumPlan.from_dict({**plan.to_dict(), "layout": [["count", [3], "maybe"]]})
    with pytest.raises(SecureSumError, match="does not match"):
        SumPlan.from_dict({**plan.to_dict(), "layout": LAYOUT[:1]})
