"""Faults on the deployed shape, all real services and OS processes.

Three stateless hub replicas (``python -m fedpact.hub``), each with its own data directory,
on one PostgreSQL database with RabbitMQ wake-ups and one S3 bucket (a SeaweedFS server the
test starts), behind haproxy started with the shipped ``deploy/haproxy.cfg`` (the commands
of docs/deploy.md). Nothing is shared between the replicas but those three services, so a
request may land on any of them. Ten participants and the aggregator are CLI processes
talking to the load balancer. Mid-round 2 one replica is SIGKILLed; mid-round 4 RabbitMQ itself is
stopped and started again (a node of the test's own, so the machine's shared broker and
the tests using it are not disturbed); the killed replica comes back. The task must complete with every round and the model
intact, and no participant process may exit before the end or with an error.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_hosted_aggregator import People, digits_definition, finish

from fedpact.client.hub import HubClient
from fedpact.hub.server import HubProcess, free_port
from hub_fixtures import fast_config
from seaweedfs import start_seaweedfs
from services import postgres_database, private_rabbitmq
from support import wait_for

pytestmark = pytest.mark.e2e

HAPROXY_CFG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
NAMES = tuple(f"p{i:02d}" for i in range(10))
ROUNDS = 6


def _haproxy(port: int, hubs: list[HubProcess], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FEDPACT_LB_BIND": f"127.0.0.1:{port}"}
    for i, h in enumerate(hubs, 1):
        env[f"FEDPACT_HUB{i}"] = f"127.0.0.1:{h.port}"
    with open(log, "wb") as out:
        return subprocess.Popen(["haproxy", "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=out, stderr=subprocess.STDOUT)


def test_three_replicas_survive_a_killed_replica_and_a_broker_cut_mid_round(tmp_path: Path) -> None:
    s3 = start_seaweedfs(tmp_path / "seaweedfs")
    with postgres_database() as url, private_rabbitmq() as rabbitmq:
        hubs = [
            HubProcess(config=fast_config(tmp_path / f"replica{i}", database_url=url, broker_url=rabbitmq.url,
                                          blob_store=s3.url("fedpact-deployed")))
            for i in (1, 2, 3)
        ]
        for h in hubs:
            h.start()
        lb_port = free_port()
        lb = _haproxy(lb_port, hubs, tmp_path / "haproxy.log")
        lb_url = f"http://127.0.0.1:{lb_port}"
        people = People(lb_url, tmp_path)
        try:
            wait_for(lambda: _ok(lb_url), 30, "haproxy to route to the replicas")
            alice = people.user("alice")
            for n in NAMES:
                people.user(n)
            alice.create_task("deployed", digits_definition(rounds=ROUNDS, quorum=10, min_participants=8,
                                                            local_epochs=30, batch_size=4, round_timeout_s=90))
            participants = people.participants("deployed", NAMES)
            aggregator = people.cli("alice", "aggregate", "deployed")

            def running_round() -> int:
                rounds = alice.list_rounds("deployed")
                return max((r["number"] for r in rounds if r["status"] == "running"), default=0)

            # Rounds take a second or two (30 local epochs): long enough to be caught running.
            wait_for(lambda: running_round() >= 2, 240, "round 2 to start")
            killed = hubs[1]
            killed.kill()  # SIGKILL mid-round
            assert alice.get_task("deployed")["status"] == "RUNNING", "the replica died after the task ended"
            wait_for(lambda: running_round() >= 4, 240, "round 4 to start")
            assert alice.get_task("deployed")["status"] == "RUNNING", "the task ended before the broker restart"
            rabbitmq.restart()  # the broker process stops and starts again mid-round
            killed.start()  # the operator brings it back; it rejoins behind haproxy
            finish(aggregator, 300)
            for p in participants:
                assert p.poll() is None or p.returncode == 0, Path(p.log_path).read_text()[-3000:]  # type: ignore[attr-defined]
            for p in participants:
                finish(p, 120)
            task = alice.get_task("deployed")
            assert task["status"] == "COMPLETE"
            rounds = alice.list_rounds("deployed")
            assert [r["number"] for r in rounds] == list(range(1, ROUNDS + 1))
            assert all(r["status"] == "complete" and len(r["participants"]) >= 8 for r in rounds)
            (model,) = alice.list_models("deployed")
            data = alice.download_model(model["id"], tmp_path / "model").read_bytes()
            assert hashlib.sha256(data).hexdigest() == model["sha256"]
            for h in hubs:  # every replica, the restarted one too, is back on the restarted broker
                with HubClient(h.url) as direct:
                    wait_for(lambda d=direct: d.health()["backends"]["broker"]["status"] == "ok", 60,  # type: ignore[misc]
                             f"replica {h.port} to reconnect to RabbitMQ")
            with HubClient(f"http://127.0.0.1:{killed.port}") as direct:
                backends = direct.health()["backends"]
                assert backends["database"]["status"] == "ok"
                assert (backends["blob_store"]["kind"], backends["blob_store"]["status"]) == ("s3", "ok")
            for i in (1, 2, 3):
                blobs = tmp_path / f"replica{i}" / "blobs"
                assert not blobs.exists() or not any(blobs.iterdir()), f"replica {i} kept blob files of its own"
        finally:
            people.close()
            lb.terminate()
            lb.wait(10)
            for h in hubs:
                h.stop()
            s3.stop()


def _ok(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
