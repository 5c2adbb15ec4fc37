"""`dp`, `secure+dp` and `encrypted` modes against a real hub."""

from __future__ import annotations

import tempfile
import threading
from typing import Any

import numpy as np
import pytest
from federation_helpers import Runner, digits_definition, start_aggregator, start_participant

from fedpact.common.tensors import decode_weights
from fedpact.data.builtin import digits_federation
from fedpact.data.dataset import Dataset
from fedpact.inference import load_model
from fedpact.privacy import dp, he
from fedpact.runtime import DataParticipant, Progress
from fedpact.runtime.aggregator import Aggregator


@pytest.fixture(scope="module")
def shards() -> tuple[list[Dataset], Dataset]:
    return digits_federation(3, test_fraction=0.25, seed=0)


def federate(make_user, shards, definition: dict[str, Any], tag: str, aggregator=None, model_dir=None):  # type: ignore[no-untyped-def]
    parts, test = shards
    alice = make_user(f"alice-{tag}")
    names = [f"{n}-{tag}" for n in ("bob", "carol", "dave")]
    users = {n: make_user(n) for n in names}
    alice.create_task(f"digits-{tag}", definition)
    run = Runner()
    for i, n in enumerate(names):
        start_participant(run, users[n], f"digits-{tag}", DataParticipant(parts[i]), n,
                          model_dir=(model_dir / n) if model_dir else None)
    if aggregator is None:
        start_aggregator(run, alice, f"digits-{tag}", eval_data=test)
    else:
        run.start("aggregator", lambda: aggregator(alice, f"digits-{tag}", eval_data=test,
                                                   progress=Progress(quiet=True), poll_wait=0.5).run())
    run.join()
    assert not run.errors, run.errors
    return run, alice, names


@pytest.mark.parametrize("placement", ["central", "local"])
def test_dp_reports_the_accountants_epsilon_and_stops_when_the_budget_is_spent(make_user, shards, placement) -> None:
    z, delta = 1.2, 1e-5
    budget = dp.epsilon_for(z, 1.0, 2, delta) * 1.01  # room for two rounds, not three
    privacy = {"mode": "dp", "placement": placement, "clip_norm": 2.0, "noise_multiplier": z, "delta": delta,
               "epsilon_budget": budget}
    run, alice, _ = federate(make_user, shards, digits_definition(rounds=5, privacy=privacy), f"dp-{placement}")
    result = run.results["aggregator"]
    assert result.status == "COMPLETE" and result.rounds_completed == 2
    rounds = alice.list_rounds(f"digits-dp-{placement}")
    assert [r["number"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["metrics"]["epsilon"] == pytest.approx(dp.epsilon_for(z, 1.0, r["number"], delta), rel=1e-9)
        assert r["metrics"]["delta"] == delta
        if placement == "local":
            assert "train_loss" not in r["metrics"]  # per-participant metrics are withheld under local DP
    reason = alice.get_task(f"digits-dp-{placement}")["events"][-1]["reason"]
    assert "privacy budget spent" in reason and "after 2 round(s)" in reason
    # The noised model is still evaluated and stored. How accurate it is after two rounds of
    # participant-level noise with three participants is chance-dependent: bench/privacy_cost.py
    # measures DP accuracy; this test checks the accounting.
    assert 0.0 <= result.metrics["eval_accuracy"] <= 1.0 and result.model_id is not None


def test_secure_dp_adds_distributed_noise_and_accounts_for_it(make_user, shards) -> None:
    z, delta = 0.8, 1e-5
    privacy = {"mode": "secure+dp", "clip_norm": 2.0, "noise_multiplier": z, "delta": delta, "threshold": 2}
    run, alice, _ = federate(make_user, shards, digits_definition(rounds=2, privacy=privacy), "sdp")
    rounds = alice.list_rounds("digits-sdp")
    assert [r["status"] for r in rounds] == ["complete", "complete"]
    for r in rounds:
        assert r["metrics"]["epsilon"] == pytest.approx(dp.epsilon_for(z, 1.0, r["number"], delta), rel=1e-9)
        assert sorted(r["participants"]) == sorted(["bob-sdp", "carol-sdp", "dave-sdp"])
    result = run.results["aggregator"]
    assert 0.0 <= result.metrics["eval_accuracy"] <= 1.0 and result.model_id is not None


class HeSpy(Aggregator):
    """Counts decryptions done on the aggregator's thread and checks it never has a secret key."""

    decrypts_on_aggregator = 0
    secret_seen = False

    def _round(self, r: int) -> dict[str, Any]:
        out = super()._round(r)
        he_public = self.rounds.he_public  # type: ignore[attr-defined]
        HeSpy.secret_seen |= bool(he_public is not None and he_public.has_secret_key)
        return out


def test_encrypted_mode_the_aggregator_never_holds_plaintext(make_user, shards, tmp_path, monkeypatch) -> None:
    original = he.decrypt_vector

    def spy(ctx, chunks, length):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "aggregator":
            HeSpy.decrypts_on_aggregator += 1
        return original(ctx, chunks, length)

    monkeypatch.setattr(he, "decrypt_vector", spy)
    initial: dict[str, np.ndarray] = {}

    class Spy(HeSpy):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            initial.update({k: v.copy() for k, v in self.global_weights.items()})

        def _finish(self, converged: bool):  # type: ignore[no-untyped-def]
            # the only plaintext weights it ever had are the public, seeded initial model
            assert all(np.array_equal(self.global_weights[k], initial[k]) for k in initial)
            return super()._finish(converged)

    definition = digits_definition(rounds=2, privacy={"mode": "encrypted"})
    run, alice, names = federate(make_user, shards, definition, "he", aggregator=Spy, model_dir=tmp_path)
    assert HeSpy.decrypts_on_aggregator == 0 and not HeSpy.secret_seen
    rounds = alice.list_rounds("digits-he")
    assert [r["status"] for r in rounds] == ["complete", "complete"]
    assert "val_accuracy" in rounds[0]["metrics"]  # evaluation comes from the participants
    assert "eval_accuracy" not in rounds[0]["metrics"]
    # the model on the hub is ciphertext: the task creator cannot read it
    model = alice.list_models("digits-he")[-1]
    assert model["metadata"]["encrypted"] is True
    with tempfile.TemporaryDirectory() as d:
        stored = decode_weights(alice.download_model(model["id"], d).read_bytes())
    assert stored and all(k.startswith(("c.", "standardization.")) for k in stored)
    # each participant decrypted its own copy, and it works
    _, test = shards
    accs = []
    for n in names:
        m = load_model(run.results[n].model_path)
        accs.append(m.evaluate(test.x, test.y)["accuracy"])
    assert min(accs) > 0.85 and max(accs) - min(accs) < 1e-6
