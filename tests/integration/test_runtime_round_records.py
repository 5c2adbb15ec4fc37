"""A finished round's records are written while the next round runs, and ``on_round`` comes
after them: a caller that stops at ``on_round(r)`` finds round r recorded and checkpointed."""

from __future__ import annotations

from typing import Any

from federation_helpers import Runner, digits_definition, start_aggregator, start_participant

from fedpact.data.builtin import digits_federation
from fedpact.runtime import DataParticipant


def test_on_round_sees_the_rounds_record_and_checkpoint_stored(make_user) -> None:  # type: ignore[no-untyped-def]
    parts, _ = digits_federation(2, test_fraction=0.25, seed=1)
    alice = make_user("alice")
    users = [make_user(f"site{i}") for i in range(2)]
    alice.create_task("records", digits_definition(rounds=4, quorum=2))
    seen: list[dict[str, Any]] = []

    def on_round(r: int, metrics: dict[str, Any]) -> None:
        checkpoint = alice.get_checkpoint("records")
        record = next(x for x in alice.list_rounds("records") if int(x["number"]) == r)
        seen.append({"round": r, "checkpoint": checkpoint["round"] if checkpoint else None,
                     "status": record["status"], "accuracy": metrics.get("accuracy")})  # fmt: skip

    run = Runner()
    for i, (user, data) in enumerate(zip(users, parts)):
        start_participant(run, user, "records", DataParticipant(data), f"site{i}")
    start_aggregator(run, alice, "records", on_round=on_round)
    run.join(180)
    assert not run.errors, run.errors
    assert run.results["aggregator"].status == "COMPLETE"
    assert [s["round"] for s in seen] == [1, 2, 3, 4], "once per round, in order"
    for s in seen:
        assert s["checkpoint"] >= s["round"], f"round {s['round']}'s checkpoint was stored before on_round: {s}"
        assert s["status"] == "complete", s
    records = {int(x["number"]): x for x in alice.list_rounds("records")}
    assert sorted(records) == [1, 2, 3, 4] and all(x["status"] == "complete" for x in records.values())
    assert alice.get_checkpoint("records")["round"] == 4
