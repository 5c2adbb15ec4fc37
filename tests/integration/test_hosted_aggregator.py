"""Aggregators hosted by the hub: started by the creator (API, SDK, CLI), run as worker processes.

Real hubs over real HTTP, real aggregator and participant processes. The hub never runs
training code itself: it starts ``python -m fedpact aggregate`` with a token it mints.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fedpact  # noqa: E402
from fedpact.client.hub import HubClient, HubError  # noqa: E402
from fedpact.data.builtin import digits_federation
from fedpact.data.loaders import save_csv
from fedpact.hub import EmbeddedHub, HubProcess  # noqa: E402
from hub_fixtures import fast_config  # noqa: E402
from support import wait_for  # noqa: E402

PASSWORD = "correct-horse-9"


def digits_definition(**overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "model": {"name": "softmax_regression"},
        "rounds": 2,
        "local_epochs": 1,
        "batch_size": 16,
        "learning_rate": 0.1,
        "quorum": 2,
        "min_participants": 2,
        "round_timeout_s": 60,
        "data": {"kind": "tabular", "features": 64, "label": "label", "classes": list(range(10))},
        "admission": "open",  # about hosting, not about who may join
    }
    d.update(overrides)
    return d


class People:
    """Users on one hub, and their CLI processes."""

    def __init__(self, url: str, root: Path) -> None:
        self.url, self.root = url, root
        self.clients: dict[str, HubClient] = {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def user(self, name: str) -> HubClient:
        c = HubClient(self.url, retry_for_s=30)
        c.register(name, PASSWORD, f"{name} org")
        c.login(name, PASSWORD)
        self.clients[name] = c
        return c

    def cli(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "FEDPACT_HUB": self.url, "FEDPACT_TOKEN": str(self.clients[name].token),
               "FEDPACT_HOME": str(self.root / "home" / name), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        log = open(self.root / f"{name}-{len(self.procs)}.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", "fedpact", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        p.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def participants(self, task: str, names: tuple[str, ...] = ("bob", "carol")) -> list[subprocess.Popen[bytes]]:
        shards, _ = digits_federation(len(names), test_fraction=0.25, seed=5)
        out = []
        for n, shard in zip(names, shards):
            data = save_csv(self.root / f"{n}.csv", shard)
            out.append(self.cli(n, "participate", task, "--data", str(data), "--model-dir",
                                str(self.root / "models" / n), "--threads", "1"))
        return out

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for c in self.clients.values():
            c.close()


def finish(p: subprocess.Popen[bytes], timeout: float = 90) -> str:
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
    out = Path(p.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
    assert p.returncode == 0, out
    return out


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[EmbeddedHub]:
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as h:
        yield h


@pytest.fixture
def people(hub: EmbeddedHub, tmp_path: Path) -> Iterator[People]:
    p = People(hub.url, tmp_path)
    yield p
    p.close()


def test_hosted_aggregator_refuses_bad_requests_and_changes_nothing(hub: EmbeddedHub, people: People) -> None:
    alice, bob = people.user("alice"), people.user("bob")
    alice.create_task("hosted-refusals", digits_definition())
    bob.join("hosted-refusals")

    def refused(client: HubClient, status: int, path: str, **kw: Any) -> str:
        headers = kw.pop("headers", client._headers())
        r = client._http.request(kw.pop("method", "POST"), path, headers=headers, **kw)
        assert r.status_code == status, r.text
        return str(r.json()["detail"])

    assert "only the creator" in refused(bob, 403, "/tasks/hosted-refusals/aggregator", json={})
    assert "no task" in refused(alice, 404, "/tasks/no-such-task/aggregator", json={})
    assert "extra" in refused(alice, 422, "/tasks/hosted-refusals/aggregator", json={"resum": True})
    assert "no blob" in refused(alice, 404, "/tasks/hosted-refusals/aggregator",
                                json={"eval_data": {"blob": {"sha256": "a" * 64, "size": 3}}})
    assert "not running" in refused(alice, 409, "/tasks/hosted-refusals/aggregator", method="DELETE")
    assert "only the creator" in refused(bob, 403, "/tasks/hosted-refusals/aggregator", method="DELETE")
    refused(alice, 401, "/tasks/hosted-refusals/aggregator", method="GET", headers={"Authorization": "Bearer nope"})
    assert alice.hosted_aggregator_status("hosted-refusals")["state"] == "none"
    outsider = people.user("mallory")
    assert "only admitted members" in refused(outsider, 403, "/tasks/hosted-refusals/aggregator/log", method="GET")
    assert "only admitted members" in refused(outsider, 403, "/tasks/hosted-refusals/aggregator", method="GET")

    # Started from the CLI; a second start is a conflict; the CLI stops it.
    start = people.cli("alice", "hosted", "start", "hosted-refusals")
    assert "running" in finish(start, 30)
    st = alice.hosted_aggregator_status("hosted-refusals")
    assert st["running"] and st["started_by"] == "alice"
    assert "already running" in refused(alice, 409, "/tasks/hosted-refusals/aggregator", json={})
    wait_for(lambda: "waiting for participants" in alice.hosted_aggregator_log("hosted-refusals")["text"], 30,
             "the aggregator to wait for its quorum")
    assert "waiting for participants: 0/2" in bob.hosted_aggregator_log("hosted-refusals")["text"]  # members read it
    status = people.cli("alice", "hosted", "status", "hosted-refusals")
    assert "running (pid" in finish(status, 30)
    stop = people.cli("alice", "hosted", "stop", "hosted-refusals")
    assert "stopped" in finish(stop, 30)
    st = alice.hosted_aggregator_status("hosted-refusals")
    assert not st["running"] and st["state"] == "stopped" and st["reason"] == "stopped by alice"
    assert alice.get_task("hosted-refusals")["status"] == "CREATED"

    # A finished task has nothing to aggregate.
    alice.cancel_task("hosted-refusals")
    assert "CANCELLED" in refused(alice, 409, "/tasks/hosted-refusals/aggregator", json={})
    assert alice.hosted_aggregator_status("hosted-refusals")["state"] == "stopped"


def test_running_task_needs_resume(hub: EmbeddedHub, people: People) -> None:
    alice = people.user("alice")
    alice.create_task("hosted-running", digits_definition())
    alice.set_status("hosted-running", "RUNNING", "an aggregator elsewhere")
    with pytest.raises(HubError) as exc:
        alice.start_hosted_aggregator("hosted-running")
    assert exc.value.status == 409 and "resume=true" in str(exc.value)
    assert alice.hosted_aggregator_status("hosted-running")["state"] == "none"


def test_sdk_hosts_the_aggregator_and_the_federation_completes(hub: EmbeddedHub, people: People, tmp_path: Path) -> None:
    people.user("alice"), people.user("bob"), people.user("carol")
    alice = fedpact.Client(hub.url)
    alice.login("alice", PASSWORD)
    alice.create_task("hosted-sdk", digits_definition())
    _, test = digits_federation(2, test_fraction=0.25, seed=5)
    test_csv = save_csv(tmp_path / "eval.csv", test)
    bob, carol = people.participants("hosted-sdk")
    st = alice.host_aggregator("hosted-sdk", eval_data=test_csv, label="label")
    assert st["running"] and st["resume"] is False
    alice.close()  # the hosted aggregator does not depend on the client that asked for it
    finish(bob), finish(carol)
    creator = people.clients["alice"]
    wait_for(lambda: creator.hosted_aggregator_status("hosted-sdk")["state"] == "finished", 30, "the worker to end")
    st = creator.hosted_aggregator_status("hosted-sdk")
    assert st["exit_code"] == 0 and not st["running"]
    assert creator.get_task("hosted-sdk")["status"] == "COMPLETE"
    rounds = creator.list_rounds("hosted-sdk")
    assert [r["number"] for r in rounds] == [1, 2] and rounds[-1]["metrics"]["eval_accuracy"] > 0.8
    model = creator.list_models("hosted-sdk")[0]
    assert len(model["metadata"]["confusion_matrix"]) == 10
    # The evaluation data was uploaded to the task, privately: the participants cannot read it.
    eval_sha = hashlib.sha256(test_csv.read_bytes()).hexdigest()
    with pytest.raises(HubError) as hidden:
        people.clients["bob"].download_blob("hosted-sdk", eval_sha)
    assert hidden.value.status == 403
    assert creator.download_blob("hosted-sdk", eval_sha) == test_csv.read_bytes()
    log = creator.hosted_aggregator_log("hosted-sdk")
    assert "round 2/2 done" in log["text"] and "the aggregator finished" in log["text"]
    more = creator.hosted_aggregator_log("hosted-sdk", offset=log["next_offset"])
    assert more["text"] == "" and more["offset"] == log["next_offset"]
    # The minted token was revoked when the worker ended: only alice's own session is left.
    import sqlite3

    db = sqlite3.connect(hub.data_dir / "hub.db")
    try:
        assert db.execute("select count(*) from tokens join users on users.id = tokens.user_id "
                          "where users.name = 'alice'").fetchone()[0] == 2  # the test's login and the SDK's
    finally:
        db.close()


def test_hosted_aggregator_survives_a_hub_crash_and_is_resumed_after_a_graceful_restart(tmp_path: Path) -> None:
    """Crash: the worker keeps running and the new hub adopts it. Stop: the next hub resumes it."""
    hub = HubProcess(config=fast_config(tmp_path / "hub"))
    hub.start()
    people = People(hub.url, tmp_path)
    try:
        alice = people.user("alice")
        people.user("bob"), people.user("carol")
        alice.create_task("hosted-restart", digits_definition(rounds=5, local_epochs=4, batch_size=4))
        bob, carol = people.participants("hosted-restart")
        pid = alice.start_hosted_aggregator("hosted-restart")["pid"]

        def rounds_done() -> int:
            return sum(r["status"] == "complete" for r in alice.list_rounds("hosted-restart"))

        wait_for(lambda: rounds_done() >= 1, 60, "round 1")
        hub.kill()  # SIGKILL: no chance to stop anything
        time.sleep(0.3)
        os.kill(pid, 0)  # the worker runs in its own session: still alive
        hub.start()
        st = alice.hosted_aggregator_status("hosted-restart")
        assert st["running"] and st["pid"] == pid and st["restarts"] == 0
        assert "kept running and is watched again" in alice.hosted_aggregator_log("hosted-restart")["text"]

        wait_for(lambda: rounds_done() >= 2, 60, "round 2")
        assert alice.get_task("hosted-restart")["status"] == "RUNNING", "finished before the graceful stop"
        # A graceful hub stop cuts long-polls short with HTTP 500 (uvicorn cancels them after its
        # grace period), which participants do not retry yet: they stop first and come back after.
        for p in (bob, carol):
            p.kill()
            p.wait()
        hub.stop()  # graceful: the hub stops its worker and remembers it
        with pytest.raises(ProcessLookupError):
            wait_for(lambda: os.kill(pid, 0), 10, "the worker to stop")  # os.kill raises once it is gone
        hub.start()
        st = wait_for(lambda: (s := alice.hosted_aggregator_status("hosted-restart"))["running"] and s, 30,
                      "the hub to restart its worker")
        assert st["resume"] is True and st["restarts"] == 1 and st["started_by"] == "the hub (restart)"
        assert st["pid"] != pid
        bob, carol = people.participants("hosted-restart")
        finish(bob, 120), finish(carol, 120)
        wait_for(lambda: alice.hosted_aggregator_status("hosted-restart")["state"] == "finished", 30, "the worker")
        log = alice.hosted_aggregator_log("hosted-restart")["text"]
        assert "the hub is shutting down" in log and "resumed from the checkpoint of round" in log
        assert [r["number"] for r in alice.list_rounds("hosted-restart")] == [1, 2, 3, 4, 5]
        assert all(r["status"] == "complete" for r in alice.list_rounds("hosted-restart"))
        assert alice.get_task("hosted-restart")["status"] == "COMPLETE"
    finally:
        people.close()
        hub.stop()
