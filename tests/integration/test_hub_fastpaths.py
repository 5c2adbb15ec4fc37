"""The request-saving paths: one-request blob uploads and acknowledging while polling."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub  # noqa: E402
from hub_fixtures import Api, User, api, fast_config, hub, sha, task_with_members  # noqa: E402,F401

Members = tuple[User, User, User, dict[str, Any]]
OCTETS = {"content-type": "application/octet-stream"}


def blob_files(hub: EmbeddedHub) -> list[Path]:
    return [p for p in (hub.config.data_dir / "blobs").rglob("*") if p.is_file()]


def partial_files(hub: EmbeddedHub) -> list[Path]:
    return [p for p in (hub.config.data_dir / "uploads").rglob("*") if p.is_file()]


def test_one_request_upload_stores_a_verified_blob(task_with_members: Members, hub: EmbeddedHub) -> None:
    alice, bob, carol, task = task_with_members
    data = os.urandom(3 * 1024 * 1024 + 17)
    r = bob.http.put(f"/tasks/{task['name']}/blobs/{sha(data)}", content=data, headers=OCTETS)
    assert r.status_code == 201, r.text
    assert r.json() == {"sha256": sha(data), "size": len(data)}
    got = alice.http.get(f"/tasks/{task['name']}/blobs/{sha(data)}")
    assert got.status_code == 200 and got.content == data
    again = alice.http.put(f"/tasks/{task['name']}/blobs/{sha(data)}", content=data, headers=OCTETS)
    assert again.status_code == 200
    assert partial_files(hub) == []


def test_one_request_upload_refusals_keep_nothing(task_with_members: Members, hub: EmbeddedHub, api: Api) -> None:
    alice, bob, carol, task = task_with_members
    name = task["name"]
    before = sorted(blob_files(hub))
    data = os.urandom(1000)
    wrong = sha(b"something else")
    r = bob.http.put(f"/tasks/{name}/blobs/{wrong}", content=data, headers=OCTETS)
    assert r.status_code == 422 and "sha256 mismatch" in r.json()["detail"]
    assert bob.http.get(f"/tasks/{name}/blobs/{wrong}").status_code == 404
    r = bob.http.put(f"/tasks/{name}/blobs/NOTAHASH", content=data, headers=OCTETS)
    assert r.status_code == 422
    outsider = api.user("mallory")
    r = outsider.http.put(f"/tasks/{name}/blobs/{sha(data)}", content=data, headers=OCTETS)
    assert r.status_code == 403
    assert sorted(blob_files(hub)) == before and partial_files(hub) == []


def test_one_request_upload_over_the_limit_is_413(tmp_path: Path, api: Api) -> None:
    with EmbeddedHub(config=fast_config(tmp_path / "small", max_blob_bytes=1000)) as small:
        a = Api(small.url)
        try:
            alice = a.user("alice")
            task = alice.create_task()
            data = os.urandom(1001)
            r = alice.http.put(f"/tasks/{task['name']}/blobs/{sha(data)}", content=data, headers=OCTETS)
            assert r.status_code == 413 and "1000" in r.json()["detail"]
            assert alice.http.get(f"/tasks/{task['name']}/blobs/{sha(data)}").status_code == 404
            assert partial_files(small) == []
        finally:
            a.close()


def test_polling_with_ack_records_the_cursor(task_with_members: Members) -> None:
    alice, bob, carol, task = task_with_members
    name = task["name"]
    ids = []
    for i in range(3):
        r = alice.http.post(f"/tasks/{name}/messages", json={
            "sender": "aggregator", "recipient": "participants", "kind": "note", "round": i, "headers": {}})
        assert r.status_code == 201
        ids.append(r.json()["id"])
    first = bob.http.get(f"/tasks/{name}/mailbox/participant/{bob.name}", params={"after": 0, "limit": 2}).json()
    assert [m["id"] for m in first["messages"]] == ids[:2]
    second = bob.http.get(f"/tasks/{name}/mailbox/participant/{bob.name}",
                          params={"after": first["cursor"], "ack": "true"}).json()
    assert [m["id"] for m in second["messages"]] == ids[2:]
    # without a cursor, a restarted reader resumes after what it acknowledged
    resumed = bob.http.get(f"/tasks/{name}/mailbox/participant/{bob.name}").json()
    assert [m["id"] for m in resumed["messages"]] == ids[2:]
    # carol's cursor is her own
    assert len(carol.http.get(f"/tasks/{name}/mailbox/participant/{carol.name}").json()["messages"]) == 3
    # ack needs the cursor it acknowledges, and never moves a cursor back
    r = bob.http.get(f"/tasks/{name}/mailbox/participant/{bob.name}", params={"ack": "true"})
    assert r.status_code == 422
    bob.http.get(f"/tasks/{name}/mailbox/participant/{bob.name}", params={"after": ids[0], "ack": "true"})
    resumed = bob.http.get(f"/tasks/{name}/mailbox/participant/{bob.name}").json()
    assert [m["id"] for m in resumed["messages"]] == ids[2:]


def test_raw_message_stores_its_body_as_a_blob_in_one_request(task_with_members: Members, hub: EmbeddedHub) -> None:
    alice, bob, carol, task = task_with_members
    name = task["name"]
    data = os.urandom(2 * 1024 * 1024)
    params = {"sender": f"participant/{bob.name}", "recipient": "aggregator", "kind": "update", "round": 3}
    headers = {**OCTETS, "Idempotency-Key": "k-1"}
    r = bob.http.post(f"/tasks/{name}/messages/raw", params=params, content=data, headers=headers)
    assert r.status_code == 201, r.text
    msg = r.json()
    assert msg["blob"] == {"sha256": sha(data), "size": len(data)} and msg["payload"] is None and msg["round"] == 3
    again = bob.http.post(f"/tasks/{name}/messages/raw", params=params, content=data, headers=headers)
    assert again.status_code == 201 and again.json()["id"] == msg["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    inbox = alice.http.get(f"/tasks/{name}/mailbox/aggregator", params={"after": 0}).json()["messages"]
    assert [m["id"] for m in inbox] == [msg["id"]]
    assert alice.http.get(f"/tasks/{name}/blobs/{sha(data)}").content == data


def test_raw_message_refusals_store_nothing(task_with_members: Members, hub: EmbeddedHub) -> None:
    alice, bob, carol, task = task_with_members
    name = task["name"]
    before = sorted(blob_files(hub))
    data = os.urandom(5000)
    cases = [
        ({"sender": f"participant/{carol.name}", "recipient": "aggregator", "kind": "update"}, 403),  # not bob
        ({"sender": f"participant/{bob.name}", "recipient": "participants", "kind": "update"}, 403),  # broadcast
        ({"sender": f"participant/{bob.name}", "recipient": "aggregator", "kind": "Bad Kind!"}, 422),
    ]
    for params, status in cases:
        r = bob.http.post(f"/tasks/{name}/messages/raw", params=params, content=data, headers=OCTETS)
        assert r.status_code == status, (params, r.text)
    assert alice.http.get(f"/tasks/{name}/mailbox/aggregator", params={"after": 0}).json()["messages"] == []
    assert sorted(blob_files(hub)) == before and partial_files(hub) == []
