"""Every privacy mode's round object fed arbitrary participant messages through an in-memory
transport: it never raises anything but a precise refusal (of a message) or RoundFailed (of the
round), and a completed round's model is finite. No hub: the round objects only see a Transport."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fedpact.algorithms import get_aggregator
from fedpact.common.definition import parse_definition
from fedpact.common.errors import UpdateRejected
from fedpact.models import build_model
from fedpact.runtime import messages as m
from fedpact.runtime.privacy import pack_ciphertexts
from fedpact.runtime.progress import Progress
from fedpact.runtime.rounds import RoundFailed, RoundPlan, round_for

PRIVACY = {
    "open": {"mode": "open"},
    "dp": {"mode": "dp", "clip_norm": 1.0, "noise_multiplier": 0.5},
    "secure": {"mode": "secure"},
    "secure+dp": {"mode": "secure+dp", "clip_norm": 1.0, "noise_multiplier": 0.5},
    "encrypted": {"mode": "encrypted"},
}
NAMES = ["p0", "p1", "p2"]


class MemoryRun:
    """RoundHost and Transport in memory: participants' messages are a script, sends are recorded."""

    def __init__(self, mode: str, script: list[tuple[str, str, dict[str, Any], dict[str, np.ndarray]]]) -> None:
        self.definition = parse_definition({
            "model": {"name": "softmax_regression"}, "privacy": PRIVACY[mode], "quorum": 3, "min_participants": 2,
            "round_timeout_s": 1, "max_samples_per_participant": 1000,
            "data": {"features": 4, "classes": [0, 1, 2]}})
        self.progress = Progress(quiet=True)
        self.algorithm = get_aggregator(self.definition.algorithm)
        self.global_weights = build_model(self.definition.model, self.definition.data).get_weights()
        self.ready = {n: {"num_samples": 10, "seal_pk": "x"} for n in NAMES}
        self.task_name = "t"
        self.rejected: dict[str, str] = {}
        self.clipped: dict[str, str] = {}
        self.script = script
        self.sent: list[tuple[str, str]] = []
        self.round = round_for(self, self)

    # Transport
    def broadcast(self, kind: str, meta: dict[str, Any], tensors: Mapping[str, np.ndarray] | None = None,
                  round: int = 0) -> None:
        self.sent.append(("*", kind))
        self._deliver_protocol()

    def send_to(self, name: str, kind: str, meta: dict[str, Any], round: int = 0,
                tensors: Mapping[str, np.ndarray] | None = None) -> None:
        self.sent.append((name, kind))

    def collect(self, kind: str, key: str, expected: set[str], timeout: float) -> dict[str, tuple[dict, Any]]:
        replies: dict[str, tuple[dict, Any]] = {}
        for name, k, meta, tensors in self.script:
            if k != kind or name not in expected or name in replies or name in self.rejected:
                continue
            try:
                replies[name] = self.round.accept_update(name, meta, tensors)
            except UpdateRejected as exc:
                assert str(exc)
                self.rejected[name] = str(exc)
        return replies

    def pump_until(self, done: Callable[[], bool], until: float) -> None:
        self._deliver_protocol()

    def _deliver_protocol(self) -> None:
        for name, kind, meta, tensors in self.script:
            if kind == m.SECAGG:
                self.round.on_protocol_message(name, 1, meta, tensors)


@lru_cache(maxsize=1)
def _public_context() -> Any:
    from fedpact.privacy import he

    return he.HEContext.from_bytes(he.HEContext.create(poly_modulus_degree=8192).serialize(secret=False))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**400), max_value=10**400) | st.floats()
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
dtypes = st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8, np.float16])
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)
tensors = st.dictionaries(
    st.sampled_from(["w.w", "w.b", "w.x", "y", "c.00000", "public", "sealed", "other"]),
    st.builds(lambda dt, sh, fill: np.full(sh, fill, dtype=np.float64).astype(dt), dtypes, shapes,
              st.floats(allow_nan=True, allow_infinity=True, width=16).map(lambda x: x if np.isfinite(x) else 0.0)
              | st.just(float("nan"))),
    max_size=4)


@st.composite
def participant_message(draw: st.DrawFn, valid_weights: dict[str, np.ndarray], round_id: str):
    name = draw(st.sampled_from([*NAMES, "stranger"]))
    kind = draw(st.sampled_from([m.UPDATE, m.UPDATE, m.SECAGG, m.HELLO, "bogus"]))
    meta = draw(st.dictionaries(st.sampled_from(["round_id", "num_samples", "train", "val", "step", "length",
                                                 "metrics", "u", "round"]), json_values, max_size=6))
    if draw(st.booleans()):
        meta["round_id"] = round_id
    if draw(st.booleans()):  # a well-formed body with hostile fields
        body = {f"w.{k}": v + draw(st.floats(-1e6, 1e6)) for k, v in valid_weights.items()}
        body = {k: v.astype(v.dtype) for k, v in body.items()}
    else:
        body = draw(tensors)
    return name, kind, meta, body


def _honest(run: MemoryRun, round_id: str, name: str, n: int = 20) -> tuple[str, str, dict, dict]:
    g = run.global_weights
    return name, m.UPDATE, {"round_id": round_id, "num_samples": n, "train": {"loss": 0.5}, "val": {}}, \
        {f"w.{k}": (v + 0.01).astype(v.dtype) for k, v in g.items()}


@pytest.mark.parametrize("mode", list(PRIVACY))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_round_never_raises_on_arbitrary_participant_messages(mode: str, data: st.DataObject) -> None:
    round_id = "r1"
    probe = MemoryRun(mode, [])
    script = data.draw(st.lists(participant_message(probe.global_weights, round_id), max_size=6))
    if data.draw(st.booleans()):  # honest participants alongside, so that some rounds can complete
        script = [_honest(probe, round_id, "p0"), _honest(probe, round_id, "p1"), *script]
    run = MemoryRun(mode, script)
    if mode == "encrypted":
        run.round.he_public = _public_context()  # type: ignore[attr-defined]
        run.round.he_keyed = set(NAMES)  # type: ignore[attr-defined]
        # honest encrypted updates are ciphertexts, the script's plain ones are refused
        from fedpact.privacy import he

        flat, layout = he.flatten_weights(run.global_weights)
        honest = pack_ciphertexts(he.encrypt_vector(he.HEContext.create(poly_modulus_degree=8192), flat),
                                  {"length": int(flat.size), "layout": layout})
        _, enc = m.unpack(honest)
        run.script = [(n, k, {**meta, "length": int(flat.size)} if n in ("p0", "p1") else meta,
                       enc if n in ("p0", "p1") and k == m.UPDATE and i < 2 else t)
                      for i, (n, k, meta, t) in enumerate(run.script)]
    before = {k: v.copy() for k, v in run.global_weights.items()}
    plan = RoundPlan(number=1, round_id=round_id, selected=list(NAMES), started_at="now",
                     deadline=time.monotonic() + 0.01)
    try:
        run.round.config(plan)
        outcome = run.round.run(plan)
    except RoundFailed as exc:
        event("round failed")
        assert exc.reason.startswith("round 1: ")
        assert all(np.array_equal(run.global_weights[k], before[k]) for k in before), "a failed round changed the model"
        return
    finally:
        run.round.close()
    event("round completed")
    assert set(outcome.contributors) <= set(NAMES) and len(outcome.contributors) >= 2
    assert all(np.isfinite(v).all() for v in run.global_weights.values())
    assert all(np.isfinite(x) and abs(x) <= 1e12 for x in (*outcome.train.values(), *outcome.val.values()))
    assert 0 < outcome.num_samples <= 3 * 1000


def test_a_huge_announced_sample_count_caps_the_weights_instead_of_failing_secure_rounds() -> None:
    run = MemoryRun("secure", [])
    run.definition = parse_definition({**run.definition.model_dump(), "max_samples_per_participant": None})
    run.ready["p2"]["num_samples"] = 10**12  # accepted at hello: within [1, 10**12], no cap in the definition
    plan = RoundPlan(number=1, round_id="r1", selected=list(NAMES), started_at="now", deadline=time.monotonic())
    try:
        cfg = run.round.config(plan)
        assert cfg is not None
        max_weight = cfg["plan"]["max_weight"]
        assert 10 <= max_weight < 10**12
        assert any("sample counts capped at" in note for note in run.round._notes)  # type: ignore[attr-defined]
    finally:
        run.round.close()
