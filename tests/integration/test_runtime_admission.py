"""Admission seen by the runtime: participants that wait for approval, and a member removed mid-task.

Real hub, real HTTP, real training on the bundled digits data; the creator decides
through the same client calls a person would make.
"""

from __future__ import annotations

from typing import Any

import pytest
from federation_helpers import (
    Runner,
    digits_definition,
    start_aggregator,
    start_participant,
)

from fedpact.client.hub import HubClient, HubError
from fedpact.common.tensors import Weights
from fedpact.data.builtin import digits_federation
from fedpact.data.dataset import Dataset
from fedpact.runtime import DataParticipant, Progress, TrainConfig
from support import wait_for


@pytest.fixture(scope="module")
def shards() -> tuple[list[Dataset], Dataset]:
    return digits_federation(3, test_fraction=0.25, seed=1)


class RemovedAtRound(DataParticipant):
    """Trains normally until ``round``, when the creator removes it before its update is sent."""

    def __init__(self, data: Dataset, creator: HubClient, task: str, name: str, round: int) -> None:
        super().__init__(data)
        self.creator, self.task, self.name, self.round, self.rounds_started = creator, task, name, round, 0

    def fit(self, weights: Weights, config: TrainConfig, progress: Progress) -> tuple[Weights, int, dict[str, float]]:
        self.rounds_started += 1
        if self.rounds_started == self.round:
            self.creator.remove_member(self.task, self.name)
        return super().fit(weights, config, progress)


def test_participants_wait_for_approval_and_a_removed_member_is_left_out(make_user: Any, shards: Any) -> None:
    parts, test = shards
    alice = make_user("alice")
    bob, carol, dave = (make_user(n) for n in ("bob", "carol", "dave"))
    alice.create_task("gated-digits", digits_definition(admission="approval", rounds=4, round_timeout_s=8))
    run = Runner()
    start_participant(run, bob, "gated-digits", DataParticipant(parts[0]), "bob")
    start_participant(run, carol, "gated-digits", DataParticipant(parts[1]), "carol")
    start_participant(run, dave, "gated-digits", RemovedAtRound(parts[2], alice, "gated-digits", "dave", 2), "dave")

    asked = wait_for(lambda: len(alice.join_requests("gated-digits")) == 3, 30, "three join requests")
    assert asked and alice.get_task("gated-digits")["participants"] == []
    for name in ("bob", "carol", "dave"):
        assert alice.approve("gated-digits", name)["status"] == "ADMITTED"
    start_aggregator(run, alice, "gated-digits", eval_data=test)
    run.join(180)

    assert set(run.errors) == {"dave"}, run.errors
    refused = run.errors["dave"]
    assert isinstance(refused, HubError) and refused.status == 403 and "removed you" in str(refused)
    result = run.results["aggregator"]
    assert result.status == "COMPLETE" and result.rounds_completed == 4
    rounds = alice.list_rounds("gated-digits")
    assert [sorted(r["participants"]) for r in rounds] == [
        ["bob", "carol", "dave"], ["bob", "carol"], ["bob", "carol"], ["bob", "carol"]
    ]
    assert all(r["status"] == "complete" for r in rounds)
    assert sorted(alice.get_task("gated-digits")["participants"]) == ["bob", "carol"]  # they join concurrently
    standing = {m["user"]: m["status"] for m in alice.members("gated-digits")}
    assert standing == {"bob": "ADMITTED", "carol": "ADMITTED", "dave": "REMOVED"}
    with pytest.raises(HubError) as denied:
        dave.list_rounds("gated-digits")
    assert denied.value.status == 403


def test_the_aggregator_leaves_out_a_removed_participant_it_messages(make_user: Any) -> None:
    """Secure and encrypted rounds message participants one by one; a removal must not crash the aggregator."""
    from fedpact.runtime import Aggregator
    from fedpact.runtime.progress import Events

    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    alice.create_task("removed-mid-round", digits_definition())
    bob.join("removed-mid-round")
    carol.join("removed-mid-round")
    events = Events()
    agg = Aggregator(alice, "removed-mid-round", progress=events)
    agg.ready.update({"bob": {"num_samples": 10}, "carol": {"num_samples": 10}})
    alice.remove_member("removed-mid-round", "bob")
    agg.send_to("bob", "note", {"hello": 1})
    agg.send_to("carol", "note", {"hello": 2})
    assert set(agg.ready) == {"carol"}
    assert any("bob is no longer a participant" in e.get("text", "") for e in events.events)
    messages, _ = carol.poll("removed-mid-round", "participant/carol")
    assert [msg["kind"] for msg in messages] == ["note"]
