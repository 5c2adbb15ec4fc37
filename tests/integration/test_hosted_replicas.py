"""Hosted aggregators are replica-independent: any replica answers for them, any replica adopts them.

Two hub replicas (OS processes) on one PostgreSQL database and one S3 bucket (SeaweedFS),
each with its own data directory, as deployed (docs/deploy.md). The aggregator runs on
replica A; its status, its log and a stop request go through replica B. Then A is
SIGKILLed while its aggregator, restarted once already, evaluates every round on the
creator's evaluation data: B adopts it with the same evaluation data (copied from the
bucket into B's own directory), the restart count and the log written while A ran it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_hosted_aggregator import People, digits_definition, finish
from test_hosted_lease import _aggregator_pids

import fedpact
from fedpact.client.hub import HubClient
from fedpact.data.builtin import digits_federation
from fedpact.data.loaders import save_csv
from fedpact.hub import HubProcess
from hub_fixtures import fast_config
from seaweedfs import SeaweedFS, seaweedfs  # noqa: F401
from services import RABBITMQ_URL, postgres_database
from support import wait_for


def _replicas(tmp_path: Path, url: str, store: str, **overrides: Any) -> tuple[HubProcess, HubProcess]:
    a, b = (HubProcess(config=fast_config(tmp_path / name, database_url=url, blob_store=store, **overrides))
            for name in ("replica-a", "replica-b"))
    a.start(), b.start()
    return a, b


def test_status_log_and_stop_of_a_hosted_aggregator_go_through_any_replica(
    tmp_path: Path, seaweedfs: SeaweedFS  # noqa: F811
) -> None:
    with postgres_database() as url:
        a, b = _replicas(tmp_path, url, seaweedfs.url("fedpact-tests", "hosted-replicas-a"), broker_url=RABBITMQ_URL)
        people = People(b.url, tmp_path)
        try:
            alice_b = people.user("alice")
            task = alice_b.create_task("everywhere", digits_definition())  # nobody joins: it waits for its quorum
            alice_a = HubClient(a.url, alice_b.token)
            assert alice_b.hosted_aggregator_status("everywhere")["state"] == "none"
            started = alice_a.start_hosted_aggregator("everywhere")
            assert started["running"] and started["state"] == "running"
            assert _aggregator_pids(task["id"], a, b) == [started["pid"]], "A runs the only aggregator"

            # Status: the same answer from both replicas.
            assert alice_b.hosted_aggregator_status("everywhere") == alice_a.hosted_aggregator_status("everywhere")
            r = alice_b._send("POST", "/tasks/everywhere/aggregator", json={})
            assert r.status_code == 409 and "already running" in r.text
            assert _aggregator_pids(task["id"], a, b) == [started["pid"]], "the refused start started nothing"

            # Log: what B serves is A's process's output, at the same offsets.
            wait_for(lambda: "waiting for participants" in alice_b.hosted_aggregator_log("everywhere")["text"], 60,
                     "the aggregator's output to reach replica B")
            from_a = alice_a.hosted_aggregator_log("everywhere", offset=0)
            from_b = alice_b.hosted_aggregator_log("everywhere", offset=0, limit=from_a["next_offset"])
            assert from_b == {**from_a, "size": from_b["size"]} and from_b["size"] >= from_a["size"]
            assert from_a["offset"] == 0 and "starting: aggregator of task 'everywhere'" in from_a["text"]
            tail = alice_b.hosted_aggregator_log("everywhere", limit=40)
            assert tail["next_offset"] == tail["size"] and tail["offset"] > 0
            middle = alice_b.hosted_aggregator_log("everywhere", offset=10, limit=20)
            assert middle["offset"] == 10 and middle["text"] == from_a["text"].encode()[10:30].decode(errors="replace")

            # Stop through B: A's process ends and both replicas say so.
            r = alice_b._send("DELETE", "/tasks/everywhere/aggregator")
            assert r.status_code == 200, r.text
            stopped = r.json()
            assert stopped["state"] == "stopped" and not stopped["running"] and stopped["reason"] == "stopped by alice"
            assert _aggregator_pids(task["id"], a, b) == []
            assert alice_a.hosted_aggregator_status("everywhere") == stopped
            assert "stopped: stopped by alice" in alice_b.hosted_aggregator_log("everywhere")["text"]
            r = alice_a._send("DELETE", "/tasks/everywhere/aggregator")
            assert r.status_code == 409 and "not running" in r.text
            assert alice_b.get_task("everywhere")["status"] == "CREATED"
            alice_a.close()
        finally:
            people.close()
            a.stop(), b.stop()


def test_a_replica_adopting_a_dead_replicas_aggregator_keeps_its_eval_data_restarts_and_log(
    tmp_path: Path, seaweedfs: SeaweedFS  # noqa: F811
) -> None:
    with postgres_database() as url:
        a, b = _replicas(tmp_path, url, seaweedfs.url("fedpact-tests", "hosted-replicas-b"),
                         hosted_lease_s=3.0, hosted_restart_backoff_s=0.2)
        people = People(b.url, tmp_path)
        try:
            alice_b = people.user("alice")
            people.user("bob"), people.user("carol")
            task = alice_b.create_task("adopted", digits_definition(rounds=5, local_epochs=4, batch_size=4))
            _, test = digits_federation(2, test_fraction=0.25, seed=5)
            eval_csv = save_csv(tmp_path / "eval.csv", test)
            sdk_a = fedpact.Client(a.url, alice_b.token)
            first = sdk_a.host_aggregator("adopted", eval_data=eval_csv, label="label")
            assert first["running"]
            # The aggregator dies once on A, which restarts it: restarts becomes 1.
            os.kill(first["pid"], signal.SIGKILL)
            second = wait_for(
                lambda: (s := alice_b.hosted_aggregator_status("adopted"))["running"] and s["pid"] != first["pid"] and s,
                60, "replica A to restart the killed aggregator",
            )
            assert second["restarts"] == 1
            bob, carol = people.participants("adopted")

            def rounds_done() -> int:
                return sum(r["status"] == "complete" for r in alice_b.list_rounds("adopted"))

            wait_for(lambda: rounds_done() >= 1, 120, "round 1")
            before = alice_b.hosted_aggregator_log("adopted", offset=0, limit=1024 * 1024)
            assert "restarting it with --resume" in before["text"]
            a.kill()  # SIGKILL the replica that runs the aggregator

            adopted = wait_for(
                lambda: (s := alice_b.hosted_aggregator_status("adopted"))["running"] and s["pid"] != second["pid"] and s,
                60, "replica B to adopt the aggregator",
            )
            assert adopted["restarts"] == 1 and adopted["resume"] is True and "(adopted)" in adopted["started_by"]
            assert _aggregator_pids(task["id"], a, b) == [adopted["pid"]], "exactly one aggregator runs"
            after = alice_b.hosted_aggregator_log("adopted", offset=0, limit=1024 * 1024)
            assert after["text"].startswith(before["text"]), "the log written on A is kept, at the same offsets"
            assert "took over from" in after["text"]
            # B copied the evaluation data from the bucket into its own directory; A's is out of reach.
            copies = list((tmp_path / "replica-b" / "workers" / str(task["id"])).glob("eval-*.csv"))
            assert len(copies) == 1 and copies[0].read_bytes() == eval_csv.read_bytes()

            finish(bob, 240), finish(carol, 240)
            wait_for(lambda: alice_b.get_task("adopted")["status"] == "COMPLETE", 60, "the task to complete")
            rounds = alice_b.list_rounds("adopted")
            assert [r["number"] for r in rounds] == [1, 2, 3, 4, 5] and all(r["status"] == "complete" for r in rounds)
            # The adopted run still evaluates every round on the creator's data.
            assert all("eval_accuracy" in r["metrics"] for r in rounds), rounds
            (model,) = alice_b.list_models("adopted")
            assert len(model["metadata"]["confusion_matrix"]) == 10
            wait_for(lambda: alice_b.hosted_aggregator_status("adopted")["state"] == "finished", 30, "the worker to end")
            assert "the aggregator finished" in alice_b.hosted_aggregator_log("adopted")["text"]
            sdk_a.close()
        finally:
            people.close()
            a.stop(), b.stop()


def test_a_stop_asked_while_the_running_replica_is_dead_is_answered_202_then_honoured_by_its_successor(
    tmp_path: Path, seaweedfs: SeaweedFS  # noqa: F811
) -> None:
    with postgres_database() as url:
        # No broker: the owner would see stop requests by polling the database; here it is dead.
        a, b = _replicas(tmp_path, url, seaweedfs.url("fedpact-tests", "hosted-replicas-c"), hosted_lease_s=15.0)
        people = People(b.url, tmp_path)
        try:
            alice_b = people.user("alice")
            task = alice_b.create_task("orphaned", digits_definition())
            alice_a = HubClient(a.url, alice_b.token)
            started = alice_a.start_hosted_aggregator("orphaned")
            wait_for(lambda: "waiting for participants" in alice_b.hosted_aggregator_log("orphaned")["text"], 60,
                     "the aggregator to wait for its quorum")
            a.kill()
            # A's lease is still valid for longer than the stop waits: nobody can confirm it yet.
            r = alice_b._send("DELETE", "/tasks/orphaned/aggregator")
            assert r.status_code == 202, r.text
            assert r.json()["state"] == "stopping" and r.json()["running"] and r.json()["pid"] == started["pid"]
            # B takes the lease over once it expires, finds the request and does not restart it.
            st = wait_for(lambda: (s := alice_b.hosted_aggregator_status("orphaned"))["state"] == "stopped" and s, 60,
                          "the replica taking over to honour the stop")
            assert st["reason"] == "stopped by alice" and not st["running"]
            assert _aggregator_pids(task["id"], a, b) == [], "the orphan of the dead replica was stopped"
            log = alice_b.hosted_aggregator_log("orphaned")["text"]
            assert "did not restart it: stopped by alice" in log and "waiting for participants" in log
            assert alice_b.get_task("orphaned")["status"] == "CREATED"
            r = alice_b._send("DELETE", "/tasks/orphaned/aggregator")
            assert r.status_code == 409 and "not running" in r.text
            alice_a.close()
        finally:
            people.close()
            a.stop(), b.stop()
