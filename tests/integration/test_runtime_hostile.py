"""Hostile admitted participants through a real hub: their contribution is dropped or bounded,
the round record says who and why, and the others' rounds go on to a stored model."""

from __future__ import annotations

import pytest
from federation_helpers import Runner, digits_definition, start_aggregator, start_participant

from fedpact.common.tensors import Weights
from fedpact.data.builtin import digits_federation
from fedpact.data.dataset import Dataset
from fedpact.runtime import DataParticipant, Progress, TrainConfig


@pytest.fixture(scope="module")
def shards() -> tuple[list[Dataset], Dataset]:
    return digits_federation(4, test_fraction=0.25, seed=0)


class _Overflowing(DataParticipant):
    """Valid weights with a loss of 1e308 (the report's first stall)."""

    def fit(self, weights: Weights, config: TrainConfig, progress: Progress):
        new, n, metrics = super().fit(weights, config, progress)
        return new, n, {**metrics, "loss": 1e308}


class _Claims(DataParticipant):
    """Valid weights claiming ``claim`` samples."""

    def __init__(self, data: Dataset, claim: int) -> None:
        super().__init__(data)
        self.claim = claim

    def fit(self, weights: Weights, config: TrainConfig, progress: Progress):
        new, _, metrics = super().fit(weights, config, progress)
        return new, self.claim, metrics


def _run(make_user, task: str, definition: dict, participants: dict[str, DataParticipant], eval_data: Dataset):
    creator = make_user(f"{task}-owner")
    creator.create_task(task, definition)
    run = Runner()
    for name, p in participants.items():
        start_participant(run, make_user(name), task, p, name)
    start_aggregator(run, creator, task, eval_data=eval_data)
    run.join(timeout=180)
    return creator, run


def test_overflowing_metrics_and_sample_counts_drop_only_that_contribution(make_user, shards) -> None:
    parts, test = shards
    d = digits_definition(rounds=2, quorum=4, min_participants=2)
    creator, run = _run(make_user, "hostile", d, {
        "honest1": DataParticipant(parts[0]), "honest2": DataParticipant(parts[1]),
        "loud": _Overflowing(parts[2]), "greedy": _Claims(parts[3], 10**400),
    }, test)
    assert not run.errors.get("aggregator"), run.errors
    result = run.results["aggregator"]
    assert result.status == "COMPLETE" and result.metrics["eval_accuracy"] >= 0.85
    assert creator.get_task("hostile")["status"] == "COMPLETE"
    for r in creator.list_rounds("hostile"):
        assert r["status"] == "complete" and sorted(r["participants"]) == ["honest1", "honest2"]
        assert "update of loud rejected" in r["reason"] and "train.loss must be finite" in r["reason"]
        assert "update of greedy rejected" in r["reason"] and "num_samples must be in [1, " in r["reason"]
        assert r["metrics"]["train_loss"] < 10


def test_a_claim_above_the_cap_is_clipped_and_recorded(make_user, shards) -> None:
    parts, test = shards
    d = digits_definition(rounds=1, quorum=3, min_participants=3, max_samples_per_participant=500)
    creator, run = _run(make_user, "capped", d, {
        "site-a": DataParticipant(parts[0]), "site-b": DataParticipant(parts[1]), "big": _Claims(parts[2], 10**9),
    }, test)
    assert not run.errors, run.errors
    (r,) = creator.list_rounds("capped")
    assert sorted(r["participants"]) == ["big", "site-a", "site-b"]
    assert "big: num_samples 1000000000 clipped to max_samples_per_participant 500" in r["reason"]
    assert r["metrics"]["num_samples"] <= 3 * 500


def test_an_aggregator_that_fails_marks_the_task_failed_with_the_reason(make_user, shards) -> None:
    parts, test = shards

    def broken_hook(r: int, metrics: dict) -> None:
        raise RuntimeError("the metrics sink is down")

    creator = make_user("broken-owner")
    creator.create_task("broken", digits_definition(rounds=3, quorum=2, min_participants=2))
    run = Runner()
    for i in range(2):
        start_participant(run, make_user(f"broken-{i}"), "broken", DataParticipant(parts[i]), f"broken-{i}")
    start_aggregator(run, creator, "broken", on_round=broken_hook)
    run.join(timeout=180)
    assert isinstance(run.errors["aggregator"], RuntimeError)
    task = creator.get_task("broken")
    assert task["status"] == "FAILED", "a failed aggregator never leaves its task RUNNING"
    assert "the aggregator failed: RuntimeError: the metrics sink is down" in task["events"][-1]["reason"]
    assert all(type(run.errors.get(f"broken-{i}")).__name__ == "TaskEnded" for i in range(2)), run.errors
