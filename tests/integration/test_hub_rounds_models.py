"""Rounds, checkpoints and the model registry over real HTTP."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hub_fixtures import Api, User, api, hub, sha, task_with_members  # noqa: E402,F401

Members = tuple[User, User, User, dict[str, Any]]
T0, T1 = "2024-05-01T10:00:00Z", "2024-05-01T10:05:00Z"


def test_rounds_upsert_and_list_in_order(api: Api, task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name = t["name"]
    for n in (2, 1):
        r = alice.http.put(
            f"/tasks/{name}/rounds/{n}", json={"status": "running", "participants": [bob.name], "started_at": T0}
        )
        assert r.status_code == 200, r.text
    r = alice.http.put(
        f"/tasks/{name}/rounds/1",
        json={
            "status": "complete",
            "participants": [bob.name, carol.name],
            "started_at": T0,
            "finished_at": T1,
            "metrics": {"accuracy": 0.91, "loss": 0.3, "samples": 1200},
        },
    )
    body = r.json()
    assert body["status"] == "complete" and body["metrics"] == {"accuracy": 0.91, "loss": 0.3, "samples": 1200.0}
    assert body["started_at"] == T0 and body["finished_at"] == T1
    items = carol.http.get(f"/tasks/{name}/rounds").json()["items"]
    assert [(i["number"], i["status"]) for i in items] == [(1, "complete"), (2, "running")]
    assert items[0]["participants"] == [bob.name, carol.name]
    outsider = api.user("outsider")
    r = outsider.http.get(f"/tasks/{name}/rounds")
    assert r.status_code == 403 and "only admitted members" in r.json()["detail"]


def test_round_refusals_change_nothing(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name = t["name"]
    good = {"status": "running", "started_at": T0}
    r = bob.http.put(f"/tasks/{name}/rounds/1", json=good)
    assert r.status_code == 403 and "creator" in r.json()["detail"]
    for bad in (
        {**good, "status": "paused"},
        {"status": "running"},
        {**good, "metrics": {"accuracy": "high"}},
        {**good, "finished_at": "2024-04-30T00:00:00Z"},
        {**good, "surprise": 1},
    ):
        r = alice.http.put(f"/tasks/{name}/rounds/1", json=bad)
        assert r.status_code == 422, (bad, r.text)
    r = alice.http.put(
        f"/tasks/{name}/rounds/1",
        content=b'{"status":"running","started_at":"' + T0.encode() + b'","metrics":{"loss":NaN}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "finite" in r.text
    assert alice.http.put(f"/tasks/{name}/rounds/-1", json=good).status_code == 422
    assert alice.http.get(f"/tasks/{name}/rounds").json()["items"] == []


def test_checkpoints(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name = t["name"]
    assert alice.http.get(f"/tasks/{name}/checkpoint").status_code == 404
    c1, c2 = alice.upload(name, b"state after round 1"), alice.upload(name, b"state after round 2")
    r = alice.http.put(f"/tasks/{name}/checkpoint", json={"round": 1, "blob": c1, "state": {"opt": {"m": [0.1]}}})
    assert r.status_code == 200 and r.json()["history"] == [1]
    alice.http.put(f"/tasks/{name}/checkpoint", json={"round": 2, "blob": c2, "state": {"rng": 7}})
    got = alice.http.get(f"/tasks/{name}/checkpoint").json()
    assert got["round"] == 2 and got["blob"] == c2 and got["state"] == {"rng": 7} and got["history"] == [1, 2]
    assert bob.http.get(f"/tasks/{name}/checkpoint").status_code == 403
    r = bob.http.put(f"/tasks/{name}/checkpoint", json={"round": 3, "blob": c2})
    assert r.status_code == 403
    r = alice.http.put(f"/tasks/{name}/checkpoint", json={"round": 3, "blob": {"sha256": sha(b"nope"), "size": 4}})
    assert r.status_code == 404 and "upload it first" in r.json()["detail"]
    r = alice.http.put(f"/tasks/{name}/checkpoint", json={"round": 3, "blob": {**c2, "size": 1}})
    assert r.status_code == 422
    assert alice.http.get(f"/tasks/{name}/checkpoint").json()["history"] == [1, 2]


def test_models_are_stored_and_shared_with_contributors(api: Api, task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name = t["name"]
    weights = b"safetensors bytes of " + name.encode()
    ref = alice.upload(name, weights)
    body = {
        "blob": ref,
        "metadata": {"framework": "torch"},
        "contributors": [bob.name],
        "rounds": 3,
        "metrics": {"accuracy": 0.93},
    }
    r = bob.http.post(f"/tasks/{name}/models", json=body)
    assert r.status_code == 403
    r = alice.http.post(f"/tasks/{name}/models", json={**body, "contributors": [bob.name, "ghost-user-x"]})
    assert r.status_code == 422 and "ghost-user-x" in r.json()["detail"]
    r = alice.http.post(f"/tasks/{name}/models", json={**body, "blob": {"sha256": sha(b"x"), "size": 1}})
    assert r.status_code == 404
    assert alice.http.get("/models", params={"task": name}).json()["items"] == []

    r = alice.http.post(f"/tasks/{name}/models", json=body)
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["task_id"] == t["id"] and model["task_name"] == name and model["sha256"] == ref["sha256"]
    assert model["contributors"] == [bob.name] and model["definition"] == t["definition"]
    assert model["metadata"] == {"framework": "torch"} and model["rounds"] == 3

    for who in (alice, bob):
        assert [m["id"] for m in who.http.get("/models", params={"task": name}).json()["items"]] == [model["id"]]
        assert [m["id"] for m in who.http.get("/models", params={"task": t["id"]}).json()["items"]] == [model["id"]]
        assert who.http.get(f"/models/{model['id']}").json() == model
        dl = who.http.get(f"/models/{model['id']}/download")
        assert dl.status_code == 200 and dl.content == weights and dl.headers["x-content-sha256"] == ref["sha256"]
    outsider = api.user("outsider")
    for who in (carol, outsider):
        assert who.http.get("/models", params={"task": name}).json()["items"] == []
        assert who.http.get(f"/models/{model['id']}").status_code == 403
        assert who.http.get(f"/models/{model['id']}/download").status_code == 403
    assert alice.http.get("/models/987654321").status_code == 404
    assert alice.http.get("/models/0").status_code == 422
