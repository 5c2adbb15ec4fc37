"""Strategies through a real hub: the catalogue over HTTP, a server optimiser under secure
aggregation, its state across --resume, and a robust strategy against a poisoned participant."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from federation_helpers import Runner, digits_definition, start_aggregator, start_participant

from fedpact.client.hub import HubError
from fedpact.common.algorithms import catalog
from fedpact.common.tensors import Weights, decode_weights
from fedpact.data.builtin import digits_federation
from fedpact.data.dataset import Dataset
from fedpact.runtime import DataParticipant, Progress, TrainConfig, run_aggregator


@pytest.fixture(scope="module")
def shards() -> tuple[list[Dataset], Dataset]:
    return digits_federation(4, test_fraction=0.25, seed=0)


def test_the_hub_serves_the_catalogue_and_refuses_what_a_mode_cannot_run(hub, make_user) -> None:
    r = httpx.get(f"{hub.url}/api/v1/algorithms")
    assert r.status_code == 200 and r.json() == catalog()
    alice = make_user("alice")
    assert alice.algorithms() == catalog()
    bad = digits_definition(algorithm={"name": "median"}, privacy={"mode": "secure"})
    with pytest.raises(HubError) as refused:
        alice.create_task("robust-secure", bad)
    assert refused.value.status == 422 and "cannot run under privacy mode 'secure'" in str(refused.value)
    assert alice.list_tasks() == [], "a refused definition creates nothing"


def _final_weights(client, result, where: Path) -> Weights:
    path = client.download_model(result.model_id, where / f"model-{result.model_id}.safetensors")
    return {k: v for k, v in decode_weights(path.read_bytes()).items() if not k.startswith("standardization.")}


def _federation(make_user, parts, definition, task: str, users: tuple[str, ...], *, resume_after: int | None = None,
                eval_data: Dataset | None = None):
    creator = make_user(f"{task}-owner")
    clients = [make_user(f"{task}-{n}") for n in users]
    creator.create_task(task, definition)
    run = Runner()
    for name, user, data in zip(users, clients, parts):
        start_participant(run, user, task, DataParticipant(data), name)
    if resume_after is None:
        start_aggregator(run, creator, task, eval_data=eval_data)
    else:
        def crash(r: int, metrics: dict) -> None:
            if r == resume_after:
                raise KeyboardInterrupt("the aggregator process dies after checkpointing this round")

        def first_then_resume():
            try:
                run_aggregator(creator, task, progress=Progress(quiet=True), poll_wait=0.5, on_round=crash)
            except KeyboardInterrupt:
                pass
            assert creator.get_task(task)["status"] == "RUNNING"
            return run_aggregator(creator, task, progress=Progress(quiet=True), poll_wait=0.5, resume=True)

        run.start("aggregator", first_then_resume)
    run.join(timeout=180)
    assert not run.errors, run.errors
    return creator, run.results["aggregator"]


def test_fedadam_resumed_gives_the_same_model_as_an_uninterrupted_run(make_user, shards, tmp_path) -> None:
    parts, _ = shards
    d = digits_definition(rounds=3, algorithm={"name": "fedadam", "params": {"server_learning_rate": 0.05}})
    a, whole = _federation(make_user, parts[:3], d, "adam-whole", ("p1", "p2", "p3"))
    b, resumed = _federation(make_user, parts[:3], d, "adam-resumed", ("p1", "p2", "p3"), resume_after=2)
    assert whole.rounds_completed == resumed.rounds_completed == 3
    ckpt = b.get_checkpoint("adam-resumed")
    assert ckpt["round"] == 3 and "strategy" in ckpt["state"], ckpt["state"].keys()
    wa, wb = _final_weights(a, whole, tmp_path), _final_weights(b, resumed, tmp_path)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("privacy", [
    {"mode": "secure"},
    {"mode": "dp", "placement": "central", "clip_norm": 10.0, "noise_multiplier": 0.01},
], ids=["secure", "dp"])
def test_a_server_optimiser_runs_under_secure_aggregation_and_dp(make_user, shards, privacy) -> None:
    parts, test = shards
    task = f"momentum-{privacy['mode']}"
    d = digits_definition(rounds=4, algorithm={"name": "fedavgm", "params": {"server_learning_rate": 1.0,
                                                                               "momentum": 0.5}},
                          privacy=privacy)
    creator, result = _federation(make_user, parts[:3], d, task, ("s1", "s2", "s3"), eval_data=test)
    assert result.status == "COMPLETE" and result.rounds_completed == 4
    state = creator.get_checkpoint(task)["state"]
    moments = decode_weights(creator.download_blob(task, state["strategy"]["blob"]["sha256"]))
    assert moments and all(k.startswith("b.") for k in moments)
    assert any(np.abs(v).sum() > 0 for v in moments.values()), "the momentum buffer moved"
    assert result.metrics["eval_accuracy"] >= 0.85


class _Poisoner(DataParticipant):
    """Trains honestly, then sends the update scaled by -10."""

    def fit(self, weights: Weights, config: TrainConfig, progress: Progress):
        new, n, metrics = super().fit(weights, config, progress)
        return {k: (weights[k] - 10.0 * (new[k] - weights[k])).astype(new[k].dtype) for k in new}, n, metrics


def test_median_through_the_hub_ignores_a_poisoned_participant(make_user, shards) -> None:
    parts, test = shards
    d = digits_definition(rounds=3, quorum=4, min_participants=4, algorithm={"name": "median"})
    creator = make_user("median-owner")
    creator.create_task("median", d)
    run = Runner()
    for i, data in enumerate(parts):
        participant = _Poisoner(data) if i == 0 else DataParticipant(data)
        start_participant(run, make_user(f"median-{i}"), "median", participant, f"median-{i}")
    start_aggregator(run, creator, "median", eval_data=test)
    run.join(timeout=180)
    assert not run.errors, run.errors
    assert run.results["aggregator"].metrics["eval_accuracy"] >= 0.85
