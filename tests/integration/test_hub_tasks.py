"""Tasks over real HTTP: creation, validation, browsing, the status machine, cancel and delete."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub  # noqa: E402
from hub_fixtures import Api, User, api, definition, hub, task_with_members, unique  # noqa: E402,F401


def count(user: User, **params: Any) -> int:
    r = user.http.get("/tasks", params=params)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def test_create_and_get_by_id_and_name(api: Api) -> None:
    alice = api.user("alice")
    name = unique("heart")
    t = alice.create_task(name, description="Heart disease across four hospitals")
    assert t["status"] == "CREATED" and t["creator"] == alice.name and t["participants"] == []
    assert t["definition"]["model"]["name"] == "mlp"
    assert t["definition"]["local_epochs"] == 1, "stored definitions are normalised with defaults"
    assert [e["status"] for e in t["events"]] == ["CREATED"]
    for ref in (t["id"], name):
        r = alice.http.get(f"/tasks/{ref}")
        assert r.status_code == 200 and r.json() == t
    bob = api.user("bob")
    assert bob.http.get(f"/tasks/{name}").json()["id"] == t["id"], "tasks are public to logged-in users"


def test_malformed_definitions_are_422_naming_the_field(api: Api) -> None:
    alice = api.user("alice")
    marker = unique("bad")
    cases: list[tuple[dict[str, Any], list[Any], str]] = [
        (definition(model={"name": "resnet9000"}), ["model", "name"], "unknown model"),
        (definition(rounds=0), ["rounds"], "greater than or equal to 1"),
        (definition(learning_rate="fast"), ["learning_rate"], "number"),
        (definition(privacy={"mode": "homomorphic"}), ["privacy", "mode"], "not available"),
        (definition(privacy={"mode": "dp", "noise_multiplier": 1.0}), ["privacy"], "needs clip_norm"),
        (definition(privacy={"mode": "secure"}), [], "needs min_participants >= 2"),
        (definition(epochs=3), ["epochs"], "Extra inputs"),
        ({"model": {"name": "mlp"}}, ["data"], "Field required"),
        (definition(quorum=1, min_participants=2), [], "cannot exceed quorum"),
    ]
    for i, (bad, path, message) in enumerate(cases):
        r = alice.http.post("/tasks", json={"name": f"{marker}-{i}", "description": "", "definition": bad})
        assert r.status_code == 422, (bad, r.text)
        errors = r.json()["detail"]
        assert any(
            e["loc"][:2] == ["body", "definition"] and e["loc"][2:] == path and message in e["msg"] for e in errors
        ), errors
    assert count(alice, q=marker) == 0


def test_bad_names_and_duplicates(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    name = unique("dup")
    alice.create_task(name)
    r = bob.http.post("/tasks", json={"name": name, "definition": definition()})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    for bad in ("12345", "ab", "has space", "x" * 101):
        r = bob.http.post("/tasks", json={"name": bad, "definition": definition()})
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"] == ["body", "name"]
    assert count(bob, q=name) == 1 and count(bob, mine=True) == 0


def test_list_filters(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    tag = unique("filt")
    a1 = alice.create_task(f"{tag}-one", description="images of digits")
    a2 = alice.create_task(f"{tag}-two", description="Heart Disease")
    b1 = bob.create_task(f"{tag}-three")
    bob.join(a1["name"])
    alice.http.post(f"/tasks/{a2['name']}/status", json={"status": "RUNNING", "reason": "go"})

    def names(**params: Any) -> list[str]:
        r = bob.http.get("/tasks", params={"q": tag, **params})
        assert r.status_code == 200, r.text
        return [t["name"] for t in r.json()["items"]]

    assert names() == [b1["name"], a2["name"], a1["name"]], "newest first"
    assert names(creator=alice.name) == [a2["name"], a1["name"]]
    assert names(mine="true") == [b1["name"]]
    assert names(joined="true") == [a1["name"]]
    assert names(status="RUNNING") == [a2["name"]]
    assert (
        bob.http.get("/tasks", params={"q": "HEART disease", "creator": alice.name}).json()["items"][0]["name"]
        == a2["name"]
    )
    page = bob.http.get("/tasks", params={"q": tag, "limit": 1, "offset": 1}).json()
    assert page["total"] == 3 and [t["name"] for t in page["items"]] == [a2["name"]]
    assert bob.http.get("/tasks", params={"status": "DONE"}).status_code == 422
    assert bob.http.get("/tasks", params={"limit": 0}).status_code == 422
    assert bob.http.get("/tasks", params={"q": "100%_"}).json()["total"] == 0


def test_unknown_task_is_404(api: Api) -> None:
    u = api.user()
    for ref in ("no-such-task", "999999", "9" * 40):
        r = u.http.get(f"/tasks/{ref}")
        assert r.status_code == 404 and "no task" in r.json()["detail"]


def test_status_machine(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    t = alice.create_task()
    path = f"/tasks/{t['name']}/status"

    r = bob.http.post(path, json={"status": "RUNNING", "reason": "hijack"})
    assert r.status_code == 403 and "creator" in r.json()["detail"]
    r = alice.http.post(path, json={"status": "COMPLETE", "reason": "too early"})
    assert r.status_code == 409 and "CREATED" in r.json()["detail"]
    assert alice.http.post(path, json={"status": "PAUSED"}).status_code == 422
    assert alice.http.get(f"/tasks/{t['id']}").json()["events"] == t["events"], "refusals change nothing"

    assert alice.http.post(path, json={"status": "RUNNING", "reason": "quorum reached"}).json()["status"] == "RUNNING"
    r = alice.http.post(path, json={"status": "RUNNING", "reason": "aggregator resumed"})
    assert r.status_code == 200 and r.json()["status"] == "RUNNING"
    r = alice.http.post(path, json={"status": "COMPLETE", "reason": "last round done"})
    events = r.json()["events"]
    assert [(e["status"], e["reason"]) for e in events] == [
        ("CREATED", f"created by {alice.name}"),
        ("RUNNING", "quorum reached"),
        ("RUNNING", "aggregator resumed"),
        ("COMPLETE", "last round done"),
    ]
    assert all(e["at"].endswith("Z") for e in events)
    for status in ("RUNNING", "FAILED", "CANCELLED", "CREATED"):
        r = alice.http.post(path, json={"status": status})
        assert r.status_code == 409 and "finished" in r.json()["detail"]
    r = alice.http.post(f"/tasks/{t['name']}/cancel")
    assert r.status_code == 409
    assert len(alice.http.get(path.rsplit("/", 1)[0]).json()["events"]) == 4


def test_cancel(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    t = alice.create_task()
    r = bob.http.post(f"/tasks/{t['name']}/cancel")
    assert r.status_code == 403
    assert alice.http.get(f"/tasks/{t['name']}").json()["status"] == "CREATED"
    r = alice.http.post(f"/tasks/{t['name']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    assert r.json()["events"][-1]["reason"] == f"cancelled by {alice.name}"
    assert alice.http.post(f"/tasks/{t['name']}/cancel").status_code == 409


def test_delete_rules(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    t = alice.create_task()
    alice.http.post(f"/tasks/{t['name']}/status", json={"status": "RUNNING"})
    r = bob.http.delete(f"/tasks/{t['name']}")
    assert r.status_code == 403
    r = alice.http.delete(f"/tasks/{t['name']}")
    assert r.status_code == 409 and "cancel it first" in r.json()["detail"]
    assert alice.http.get(f"/tasks/{t['name']}").status_code == 200
    alice.http.post(f"/tasks/{t['name']}/cancel")
    assert alice.http.delete(f"/tasks/{t['name']}").status_code == 204
    assert alice.http.get(f"/tasks/{t['name']}").status_code == 404
    assert alice.http.delete(f"/tasks/{t['name']}").status_code == 404


def test_delete_removes_task_data_but_keeps_models(hub: EmbeddedHub, api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    t = alice.create_task()
    name = t["name"]
    bob.join(name)
    model_blob = alice.upload(name, b"final model weights " + name.encode())
    update_blob = bob.upload(name, b"an update only this task has " + name.encode())
    assert bob.send(name, f"participant/{bob.name}", "aggregator", payload="aGk=").status_code == 201
    alice.http.put(f"/tasks/{name}/rounds/1", json={"status": "complete", "started_at": "2024-01-01T00:00:00Z"})
    alice.http.put(f"/tasks/{name}/checkpoint", json={"round": 1, "blob": model_blob, "state": {}})
    r = alice.http.post(f"/tasks/{name}/models", json={"blob": model_blob, "contributors": [bob.name], "rounds": 1})
    model = r.json()
    pending = alice.http.post(f"/tasks/{name}/uploads", json={"sha256": "0" * 64, "size": 10}).json()
    store = hub.config.data_dir
    partial = store / "uploads" / pending["upload_id"]
    update_file = store / "blobs" / update_blob["sha256"][:2] / update_blob["sha256"]
    model_file = store / "blobs" / model_blob["sha256"][:2] / model_blob["sha256"]
    assert partial.exists() and update_file.exists() and model_file.exists()

    alice.http.post(f"/tasks/{name}/cancel")
    assert alice.http.delete(f"/tasks/{name}").status_code == 204

    assert not partial.exists() and not update_file.exists(), "unreferenced files go with the task"
    assert model_file.exists(), "a stored model keeps its file"
    assert bob.http.get("/assignments").json()["items"] == []
    for who in (alice, bob):
        got = who.http.get(f"/models/{model['id']}").json()
        assert got["task_id"] is None and got["task_name"] == name and got["definition"] == t["definition"]
        dl = who.http.get(f"/models/{model['id']}/download")
        assert dl.status_code == 200 and dl.content == b"final model weights " + name.encode()
    again = alice.create_task(name)
    assert again["id"] != t["id"] and again["participants"] == []
    assert alice.http.get(f"/tasks/{name}/rounds").json()["items"] == []
    assert alice.http.get(f"/tasks/{name}/checkpoint").status_code == 404
    assert alice.http.get(f"/tasks/{name}/mailbox/aggregator").json()["messages"] == []


def test_blob_shared_by_two_tasks_survives_deleting_one(hub: EmbeddedHub, api: Api) -> None:
    alice = api.user("alice")
    t1, t2 = alice.create_task(), alice.create_task()
    data = b"same bytes in two tasks " + t1["name"].encode()
    ref = alice.upload(t1["name"], data)
    assert alice.upload(t2["name"], data) == ref
    alice.http.post(f"/tasks/{t1['name']}/cancel")
    assert alice.http.delete(f"/tasks/{t1['name']}").status_code == 204
    r = alice.http.get(f"/tasks/{t2['name']}/blobs/{ref['sha256']}")
    assert r.status_code == 200 and r.content == data
