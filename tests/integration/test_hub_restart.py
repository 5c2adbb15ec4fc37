"""A hub in its own process keeps everything across a clean restart and a crash."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import HubConfig, HubProcess  # noqa: E402
from hub_fixtures import Api, sha  # noqa: E402


def test_restart_and_crash_lose_nothing(tmp_path: Path) -> None:
    config = HubConfig(data_dir=tmp_path / "hub")
    first = HubProcess(config=config).start()
    api = Api(first.url)
    alice, bob = api.user("alice"), api.user("bob")
    t = alice.create_task()
    name = t["name"]
    bob.join(name)
    weights = b"model weights that must survive"
    ref = alice.upload(name, weights)
    alice.http.post(f"/tasks/{name}/status", json={"status": "RUNNING", "reason": "go"})
    alice.http.put(
        f"/tasks/{name}/rounds/1",
        json={"status": "complete", "started_at": "2024-01-01T00:00:00Z", "metrics": {"accuracy": 0.8}},
    )
    alice.http.put(f"/tasks/{name}/checkpoint", json={"round": 1, "blob": ref, "state": {"step": 1}})
    model = alice.http.post(f"/tasks/{name}/models", json={"blob": ref, "contributors": [bob.name], "rounds": 1}).json()
    sent = bob.send(name, f"participant/{bob.name}", "aggregator", kind="update").json()
    partial = bob.http.post(f"/tasks/{name}/uploads", json={"sha256": sha(b"0123456789"), "size": 10}).json()
    bob.http.put(f"/tasks/{name}/uploads/{partial['upload_id']}", params={"offset": 0}, content=b"01234")
    api.close()
    assert first.stop() in (0, -signal.SIGTERM), "uvicorn re-raises SIGTERM after its graceful shutdown"
    assert "Application shutdown complete" in first.log_path.read_text()

    for stop_how in ("kill", "stop"):
        hub = HubProcess(config=config).start()
        with (
            httpx.Client(base_url=f"{hub.url}/api/v1", headers={"Authorization": f"Bearer {alice.token}"}) as a,
            httpx.Client(base_url=f"{hub.url}/api/v1", headers={"Authorization": f"Bearer {bob.token}"}) as b,
        ):
            assert a.get("/users/me").json()["name"] == alice.name, "tokens survive"
            got = a.get(f"/tasks/{name}").json()
            assert got["status"] == "RUNNING" and got["participants"] == [bob.name]
            assert [e["status"] for e in got["events"]] == ["CREATED", "RUNNING"]
            assert a.get(f"/tasks/{name}/rounds").json()["items"][0]["metrics"] == {"accuracy": 0.8}
            assert a.get(f"/tasks/{name}/checkpoint").json()["state"] == {"step": 1}
            assert b.get(f"/models/{model['id']}/download").content == weights
            assert [m["id"] for m in a.get(f"/tasks/{name}/mailbox/aggregator").json()["messages"]] == [sent["id"]]
            assert b.get(f"/tasks/{name}/uploads/{partial['upload_id']}").json()["offset"] == 5
            assert (
                httpx.post(
                    f"{hub.url}/api/v1/auth/login", json={"name": bob.name, "password": "correct horse battery"}
                ).status_code
                == 200
            )
        if stop_how == "kill":
            assert hub.kill() == -9
        else:
            assert hub.stop() in (0, -signal.SIGTERM)
