"""A reader that comes late to a finished round's message finds its body reclaimed (hub.blobgc).

The hub reclaims what only finished rounds name as new rounds open, so a participant
that reads an old round's request, or an aggregator that reads a late update, gets 404
for the body: each skips that message and goes on, and neither process ends over it.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

import numpy as np
import pytest
from federation_helpers import digits_definition

from fedpact.client.hub import BlobGone, HubClient
from fedpact.data.builtin import digits_federation
from fedpact.hub.blobgc import reclaim_finished_rounds
from fedpact.hub.server import EmbeddedHub
from fedpact.runtime import DataParticipant, Events, run_participant
from fedpact.runtime import messages as m
from fedpact.runtime.aggregator import Aggregator
from fedpact.runtime.mailbox import Message
from fedpact.runtime.participant import TaskEnded
from support import wait_for


def _open_round(c: HubClient, task: str, number: int) -> None:
    c.put_round(task, number, status="running", participants=[], started_at=datetime.now(UTC).isoformat(), metrics={})


def test_a_participant_skips_a_request_of_a_reclaimed_round_and_goes_on(hub: EmbeddedHub, make_user) -> None:
    parts, _ = digits_federation(1, test_fraction=0.25, seed=0)
    alice, bob = make_user("alice"), make_user("bob")
    task = alice.create_task("late-reader", digits_definition(rounds=3))
    bob.join("late-reader")
    alice.set_status("late-reader", "RUNNING", "test")
    _open_round(alice, "late-reader", 1)
    # Round 1's request, big enough to travel as a blob.
    request = m.pack({"round_id": "r1", "selected": ["bob"]}, {"pad": np.frombuffer(os.urandom(400_000), np.uint8)})
    sent = alice.send("late-reader", sender=m.AGGREGATOR, recipient=m.BROADCAST, kind=m.ROUND_START, round=1,
                      payload=request)  # fmt: skip
    assert sent["blob"] is not None
    for n in (2, 3):
        _open_round(alice, "late-reader", n)
    state = hub.app.state.hub
    reclaim_finished_rounds(state.db, state.store, int(task["id"]), datetime.now(UTC))
    with pytest.raises(BlobGone):
        bob.download_blob("late-reader", sent["blob"]["sha256"])

    events = Events()
    outcome: dict[str, BaseException] = {}

    def participate() -> None:
        try:
            run_participant(bob, "late-reader", DataParticipant(parts[0]), progress=events, poll_wait=0.2)
        except BaseException as exc:  # noqa: BLE001 - examined below
            outcome["error"] = exc

    thread = threading.Thread(target=participate, daemon=True)
    thread.start()
    wait_for(lambda: any("skipped a 'round_start' message of round 1" in e.get("text", "") for e in events.events),
             30, "the participant to skip round 1's request")
    assert thread.is_alive(), f"the participant ended over a reclaimed round: {outcome}"
    alice.send("late-reader", sender=m.AGGREGATOR, recipient=m.BROADCAST, kind=m.STOPPED,
               payload=m.pack({"status": "CANCELLED", "reason": "test over"}))  # fmt: skip
    thread.join(30)
    error = outcome.get("error")
    assert isinstance(error, TaskEnded) and error.reason == "test over", outcome


def test_an_aggregator_ignores_a_late_update_whose_body_is_gone(hub: EmbeddedHub, make_user) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    task = alice.create_task("late-update", digits_definition(rounds=3))
    bob.join("late-update")
    events = Events()
    agg = Aggregator(alice, "late-update", progress=events)
    try:
        missing = {"sha256": "ab" * 32, "size": 500_000}  # what a reclaimed update's message names
        late = Message({"id": 7, "kind": m.UPDATE, "sender": "participant/bob", "round": 1, "blob": missing},
                       alice, int(task["id"]))  # fmt: skip
        agg._dispatch(late)
        assert [e["text"] for e in events.events if "late" in e.get("text", "")] == [
            "ignored a late 'update' message of round 1 from bob: the round is over"
        ]
        assert agg.rejected == {}, "a late message is not the participant's fault"
    finally:
        agg.close()
