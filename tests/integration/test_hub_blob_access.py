"""Who may read which blob of a task, and whose an upload session is, over real HTTP.

A participant reads the blobs it uploaded, those the aggregator addressed to it or to
all participants, and the global model the creator shares; never another participant's
update, even knowing its sha256. An upload session belongs to whoever opened it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hub_fixtures import Api, User, api, hub, sha, task_with_members  # noqa: E402,F401

Members = tuple[User, User, User, dict[str, Any]]
OCTETS = {"content-type": "application/octet-stream"}


def put_blob(user: User, task: str, data: bytes, **params: str) -> httpx.Response:
    return user.http.put(f"/tasks/{task}/blobs/{sha(data)}", params=params, content=data, headers=OCTETS)


def read(user: User, task: str, data: bytes) -> int:
    r = user.http.get(f"/tasks/{task}/blobs/{sha(data)}")
    if r.status_code == 200:
        assert r.content == data
    return r.status_code


def test_a_participant_cannot_read_another_participants_update(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name, update = t["name"], os.urandom(5000)
    assert put_blob(bob, name, update).status_code == 201
    r = carol.http.get(f"/tasks/{name}/blobs/{sha(update)}")
    assert r.status_code == 403 and "not yours to read" in r.json()["detail"]
    assert carol.http.head(f"/tasks/{name}/blobs/{sha(update)}").status_code == 403
    # Claiming the same content gets "already stored", not a right to read it.
    assert carol.http.post(f"/tasks/{name}/uploads", json={"sha256": sha(update), "size": len(update)}).json()["complete"]
    assert put_blob(carol, name, update).status_code == 200
    assert read(carol, name, update) == 403
    assert read(bob, name, update) == 200 and read(alice, name, update) == 200  # nothing changed for them


def test_the_creators_uploads_are_shared_unless_private(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name, model, eval_data = t["name"], os.urandom(3000), os.urandom(2000)
    assert put_blob(alice, name, model).status_code == 201
    assert put_blob(alice, name, eval_data, private="true").status_code == 201
    assert read(bob, name, model) == 200 and read(carol, name, model) == 200
    assert read(bob, name, eval_data) == 403 and read(alice, name, eval_data) == 200
    # a participant's "private" flag changes nothing for anyone
    assert put_blob(bob, name, eval_data).status_code == 200 and read(bob, name, eval_data) == 403
    # the resumable upload takes the flag too
    big = os.urandom(4000)
    r = alice.http.post(f"/tasks/{name}/uploads", json={"sha256": sha(big), "size": len(big), "private": True})
    uid = r.json()["upload_id"]
    alice.http.put(f"/tasks/{name}/uploads/{uid}", params={"offset": 0}, content=big, headers=OCTETS)
    assert alice.http.post(f"/tasks/{name}/uploads/{uid}/complete").status_code == 201
    assert read(carol, name, big) == 403


def test_blobs_addressed_to_a_participant_are_readable_by_it_alone(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name, for_carol, for_all = t["name"], os.urandom(1000), os.urandom(1200)
    for data in (for_carol, for_all):
        assert put_blob(alice, name, data, private="true").status_code == 201
    ref = {"sha256": sha(for_carol), "size": len(for_carol)}
    assert alice.send(name, "aggregator", f"participant/{carol.name}", blob=ref).status_code == 201
    assert read(carol, name, for_carol) == 200 and read(bob, name, for_carol) == 403
    ref = {"sha256": sha(for_all), "size": len(for_all)}
    assert alice.send(name, "aggregator", "participants", blob=ref).status_code == 201
    assert read(carol, name, for_all) == 200 and read(bob, name, for_all) == 200


def test_an_upload_session_belongs_to_whoever_opened_it(task_with_members: Members) -> None:
    _, bob, carol, t = task_with_members
    name, data = t["name"], os.urandom(1000)
    digest = sha(data)
    r = bob.http.post(f"/tasks/{name}/uploads", json={"sha256": digest, "size": len(data)})
    uid = r.json()["upload_id"]
    assert bob.http.put(f"/tasks/{name}/uploads/{uid}", params={"offset": 0}, content=data[:400],
                        headers=OCTETS).json()["offset"] == 400
    # carol, sending the same sha256, gets a session of her own
    r = carol.http.post(f"/tasks/{name}/uploads", json={"sha256": digest, "size": 999})
    assert r.status_code == 201 and r.json()["upload_id"] != uid and r.json()["offset"] == 0
    theirs = r.json()["upload_id"]
    # and can neither see, write into nor finish bob's
    for method, kw in (
        ("GET", {}),
        ("PUT", {"params": {"offset": 400}, "content": data[400:], "headers": OCTETS}),
        ("POST", {}),
    ):
        path = f"/tasks/{name}/uploads/{uid}" + ("/complete" if method == "POST" else "")
        r = carol.http.request(method, path, **kw)
        assert r.status_code == 404 and "of yours" in r.json()["detail"], (method, r.text)
    # her own session failing (wrong bytes) leaves bob's untouched
    carol.http.put(f"/tasks/{name}/uploads/{theirs}", params={"offset": 0}, content=os.urandom(999), headers=OCTETS)
    r = carol.http.post(f"/tasks/{name}/uploads/{theirs}/complete")
    assert r.status_code == 422 and "sha256 mismatch" in r.json()["detail"]
    assert bob.http.get(f"/tasks/{name}/uploads/{uid}").json()["offset"] == 400
    assert bob.http.put(f"/tasks/{name}/uploads/{uid}", params={"offset": 400}, content=data[400:],
                        headers=OCTETS).json()["offset"] == 1000
    assert bob.http.post(f"/tasks/{name}/uploads/{uid}/complete").status_code == 201
    assert read(bob, name, data) == 200 and read(carol, name, data) == 403
