"""End to end with real processes: a hub process, an aggregator process, participant processes.

Everything goes through the ``fedpact`` command line and HTTP on 127.0.0.1, as it would
between organisations; processes are killed with SIGKILL to show that nothing is lost.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedpact.client.hub import HubClient
from fedpact.data.builtin import digits_federation
from fedpact.data.loaders import save_csv
from fedpact.hub.server import HubProcess
from support import wait_for

pytestmark = pytest.mark.e2e
PASSWORD = "correct-horse-9"


def definition(**overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "model": {"name": "mlp", "params": {"hidden": [32]}},
        "rounds": 4,
        "local_epochs": 1,
        "batch_size": 16,
        "learning_rate": 0.05,
        "quorum": 2,
        "min_participants": 2,
        "round_timeout_s": 30,
        "data": {"kind": "tabular", "features": 64, "label": "label", "classes": list(range(10)), "standardize": True},
        # These runs are about processes failing, not about who may join; the first test
        # goes through approval as a creator would.
        "admission": "open",
    }
    d.update(overrides)
    return d


class Federation:
    """A hub process plus helpers to start CLI processes as given users."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hub = HubProcess(root / "hub")
        self.hub.start()
        self.tokens: dict[str, str] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        shards, test = digits_federation(3, test_fraction=0.25, seed=1)
        self.files = {n: save_csv(root / f"{n}.csv", s) for n, s in zip(("bob", "carol", "dave"), shards)}
        self.files["test"] = save_csv(root / "test.csv", test)

    def user(self, name: str) -> HubClient:
        c = HubClient(self.hub.url, retry_for_s=30)
        c.register(name, PASSWORD, f"{name} org")
        self.tokens[name] = c.login(name, PASSWORD)
        return c

    def cli(self, user: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "FEDPACT_HUB": self.hub.url, "FEDPACT_TOKEN": self.tokens[user],
               "FEDPACT_HOME": str(self.root / "home" / user), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        log = open(self.root / f"{user}-{len(self.procs)}.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", "fedpact", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        p.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def participate(self, user: str, task: str) -> subprocess.Popen[bytes]:
        return self.cli(user, "participate", task, "--data", str(self.files[user]),
                        "--model-dir", str(self.root / "models" / user), "--threads", "1")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.hub.stop()


def log_of(p: subprocess.Popen[bytes]) -> str:
    return Path(p.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def finish(p: subprocess.Popen[bytes], timeout: float = 120) -> str:
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError(f"process did not finish:\n{log_of(p)}") from None
    out = log_of(p)
    assert p.returncode == 0, out
    return out


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    f = Federation(tmp_path)
    yield f
    f.close()


def test_hub_aggregator_and_two_participants_as_processes(fed: Federation) -> None:
    alice = fed.user("alice")
    fed.user("bob"), fed.user("carol")
    alice.create_task("digits", definition(admission="approval"))
    bob = fed.participate("bob", "digits")
    carol = fed.participate("carol", "digits")
    wait_for(lambda: sorted(r["user"] for r in alice.join_requests("digits")) == ["bob", "carol"], 60,
             "both participants asking to join")
    for name in ("bob", "carol"):
        assert f"admitted {name}" in finish(fed.cli("alice", "task", "approve", "digits", name), 60)
    agg = fed.cli("alice", "aggregate", "digits", "--eval-data", str(fed.files["test"]))
    out = finish(agg)
    assert "round 4/4 done" in out and "COMPLETE" in out
    for p, name in ((bob, "bob"), (carol, "carol")):
        text = finish(p, 60)
        assert "epoch 1/1" in text and "complete" in text
        assert list((fed.root / "models" / name).glob("*.safetensors"))
    task = alice.get_task("digits")
    assert task["status"] == "COMPLETE"
    rounds = alice.list_rounds("digits")
    assert [r["number"] for r in rounds] == [1, 2, 3, 4]
    assert rounds[-1]["metrics"]["eval_accuracy"] > 0.85
    download = fed.cli("alice", "model", "download", "digits", "-o", str(fed.root / "final.safetensors"))
    assert "saved to" in finish(download, 60)
    model = alice.list_models("digits")[0]
    assert hashlib.sha256((fed.root / "final.safetensors").read_bytes()).hexdigest() == model["sha256"]


def test_participant_killed_mid_round_the_round_completes_with_the_others(fed: Federation) -> None:
    alice = fed.user("alice")
    for n in ("bob", "carol", "dave"):
        fed.user(n)
    alice.create_task("digits", definition(quorum=3, min_participants=2, rounds=4, local_epochs=5,
                                           batch_size=4, round_timeout_s=20))
    procs = {n: fed.participate(n, "digits") for n in ("bob", "carol", "dave")}
    agg = fed.cli("alice", "aggregate", "digits", "--eval-data", str(fed.files["test"]))
    wait_for(lambda: any(r["number"] == 2 for r in alice.list_rounds("digits")), 90, "round 2 to start")
    procs["dave"].send_signal(signal.SIGKILL)
    out = finish(agg, 180)
    assert "dave did not reply" in out
    rounds = alice.list_rounds("digits")
    assert [r["status"] for r in rounds] == ["complete"] * 4
    short = [r for r in rounds if sorted(r["participants"]) == ["bob", "carol"]]
    assert short and "dave did not reply" in short[0]["reason"]
    assert alice.get_task("digits")["status"] == "COMPLETE"
    finish(procs["bob"], 60), finish(procs["carol"], 60)


def test_aggregator_killed_and_resumed_continues_after_the_last_round(fed: Federation) -> None:
    alice = fed.user("alice")
    fed.user("bob"), fed.user("carol")
    alice.create_task("digits", definition(rounds=6, local_epochs=5, batch_size=8))
    bob, carol = fed.participate("bob", "digits"), fed.participate("carol", "digits")
    agg = fed.cli("alice", "aggregate", "digits")
    wait_for(lambda: alice.get_checkpoint("digits") and alice.get_checkpoint("digits")["round"] >= 2, 90,
             "the checkpoint of round 2")
    agg.send_signal(signal.SIGKILL)
    agg.wait()
    done_before = alice.get_checkpoint("digits")["round"]
    assert done_before < 6, "the aggregator finished before it could be killed"
    assert alice.get_task("digits")["status"] == "RUNNING"

    refused = fed.cli("alice", "aggregate", "digits")
    refused.wait(60)
    assert refused.returncode == 1 and "--resume" in log_of(refused)

    resumed = fed.cli("alice", "aggregate", "digits", "--resume")
    out = finish(resumed, 180)
    assert f"resumed from the checkpoint of round {done_before}" in out
    assert f"round {done_before + 1}/6" in out and f"round {done_before}/6 started" not in out
    rounds = alice.list_rounds("digits")
    assert [r["number"] for r in rounds] == [1, 2, 3, 4, 5, 6]
    assert all(r["status"] == "complete" for r in rounds)
    assert alice.get_task("digits")["status"] == "COMPLETE"
    assert len(alice.list_models("digits")) == 1
    finish(bob, 60), finish(carol, 60)


def test_hub_killed_mid_training_restarts_and_training_finishes(fed: Federation) -> None:
    alice = fed.user("alice")
    fed.user("bob"), fed.user("carol")
    alice.create_task("digits", definition(rounds=5, local_epochs=3, batch_size=8))
    bob, carol = fed.participate("bob", "digits"), fed.participate("carol", "digits")
    agg = fed.cli("alice", "aggregate", "digits")
    wait_for(lambda: any(r["status"] == "complete" for r in alice.list_rounds("digits")), 90, "round 1")
    fed.hub.kill()
    time.sleep(1.0)
    fed.hub.start()
    finish(agg, 180)
    rounds = alice.list_rounds("digits")
    assert [r["number"] for r in rounds] == [1, 2, 3, 4, 5]
    assert alice.get_task("digits")["status"] == "COMPLETE"
    finish(bob, 60), finish(carol, 60)


def test_participants_and_aggregator_ride_out_a_hub_outage_and_say_so(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tolerance is a setting (10 minutes by default); the outage here is short but longer
    # than a first contact's budget, and every process must announce it and carry on.
    monkeypatch.setenv("FEDPACT_OUTAGE_TOLERANCE_S", "120")
    alice = fed.user("alice")
    fed.user("bob"), fed.user("carol")
    alice.create_task("digits", definition(rounds=4, local_epochs=3, batch_size=8))
    bob, carol = fed.participate("bob", "digits"), fed.participate("carol", "digits")
    agg = fed.cli("alice", "aggregate", "digits")
    wait_for(lambda: any(r["status"] == "complete" for r in alice.list_rounds("digits")), 90, "round 1")
    fed.hub.stop()
    time.sleep(6.0)  # an outage, not a measurement: nothing below depends on how long it lasted
    fed.hub.start()
    out = finish(agg, 180)
    assert "COMPLETE" in out
    assert alice.get_task("digits")["status"] == "COMPLETE"
    assert [r["number"] for r in alice.list_rounds("digits")] == [1, 2, 3, 4]
    texts = [out, finish(bob, 60), finish(carol, 60)]
    for text in texts:
        assert "hub unreachable at" in text and "retrying for up to 120 s" in text, text
        assert "hub reachable again" in text, text
