"""Hosted aggregators across replicas: one lease in the database, adoption when the owner dies.

Two hub replicas (OS processes) on one PostgreSQL database and one shared data directory.
Replica A hosts the aggregator; A is SIGKILLed mid-task; B takes the lease over once it
expires, fences and stops the orphaned aggregator, starts its own with --resume, and the
task completes with every round. The participants talk to B throughout.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_hosted_aggregator import People, digits_definition, finish

from fedpact.hub import HubProcess
from hub_fixtures import fast_config
from services import postgres_database
from support import wait_for


def _aggregator_pids(task_id: int, *hubs: HubProcess) -> list[int]:
    """Live aggregator processes of ``task_id`` started by one of ``hubs`` (other tests' tasks share ids)."""
    urls = [h.url.encode() for h in hubs]
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (state != "Z" and b"aggregate" in argv and str(task_id).encode() in argv and any(b"fedpact" in a for a in argv)
                and any(u in argv for u in urls)):
            pids.append(int(proc.name))
    return pids


def test_when_the_replica_hosting_an_aggregator_dies_another_adopts_it_and_the_task_completes(tmp_path: Path) -> None:
    with postgres_database() as url:
        config = fast_config(tmp_path / "hub", database_url=url, hosted_lease_s=3.0)
        a, b = HubProcess(config=config), HubProcess(config=config)
        a.start(), b.start()
        people = People(b.url, tmp_path)
        try:
            alice = people.user("alice")
            people.user("bob"), people.user("carol")
            task = alice.create_task("leased", digits_definition(rounds=4, local_epochs=4, batch_size=4))
            bob, carol = people.participants("leased")
            alice.close()
            with_a = type(alice)(a.url, alice.token)
            first = with_a.start_hosted_aggregator("leased")
            assert first["running"]
            # B sees the lease and refuses a second aggregator.
            alice_b = type(alice)(b.url, alice.token)
            r = alice_b._send("POST", "/tasks/leased/aggregator", json={"resume": False})
            assert r.status_code == 409 and "already" in r.text

            def rounds_done() -> int:
                return sum(x["status"] == "complete" for x in alice_b.list_rounds("leased"))

            wait_for(lambda: rounds_done() >= 1, 90, "round 1")
            a.kill()  # SIGKILL the owner of the lease
            st = wait_for(
                lambda: (s := alice_b.hosted_aggregator_status("leased"))["running"] and s["pid"] != first["pid"] and s,
                60, "replica B to adopt the aggregator",
            )
            assert st["resume"] is True
            assert "took over" in alice_b.hosted_aggregator_log("leased")["text"]
            assert _aggregator_pids(task["id"], a, b) == [st["pid"]], "exactly one aggregator runs"
            finish(bob, 180), finish(carol, 180)
            wait_for(lambda: alice_b.get_task("leased")["status"] == "COMPLETE", 60, "the task to complete")
            rounds = alice_b.list_rounds("leased")
            assert [x["number"] for x in rounds] == [1, 2, 3, 4] and all(x["status"] == "complete" for x in rounds)
            assert len(alice_b.list_models("leased")) == 1
            with_a.close()
            alice_b.close()
        finally:
            people.close()
            a.stop(), b.stop()
