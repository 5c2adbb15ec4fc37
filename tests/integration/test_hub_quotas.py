"""Operator quotas over real HTTP: each refusal is 413/429 naming the limit, and changes nothing."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub
from hub_fixtures import Api, User, definition, fast_config, sha


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Api]:
    config = fast_config(
        tmp_path / "hub",
        max_tasks_per_user=2,
        max_stored_bytes_per_user=1000,
        max_pending_messages=3,
        max_poll_bytes=1000,
        max_inline_bytes=1000,
    )
    with EmbeddedHub(config=config) as h:
        a = Api(h.url)
        yield a
        a.close()


def _refused(r, status: int, setting: str, value: int) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert f"quota {setting} = {value}" in r.json()["detail"]
    assert r.headers["x-fedpact-limit"] == setting
    if status == 429:
        assert int(r.headers["retry-after"]) > 0


def _members(api: Api) -> tuple[User, User, str]:
    alice, bob = api.user("alice"), api.user("bob")
    task = alice.create_task()["name"]
    bob.join(task)
    return alice, bob, task


def test_tasks_per_user(limited: Api) -> None:
    alice, bob = limited.user("alice"), limited.user("bob")
    alice.create_task()
    alice.create_task()
    r = alice.http.post("/tasks", json={"name": "third-task", "definition": definition()})
    _refused(r, 429, "max_tasks_per_user", 2)
    assert alice.http.get("/tasks", params={"mine": True}).json()["total"] == 2
    assert alice.http.get("/tasks/third-task").status_code == 404
    bob.create_task("bobs-task")  # the quota is per user


def test_stored_bytes_per_user(limited: Api) -> None:
    alice, bob, task = _members(limited)
    bob.upload(task, b"a" * 600)
    big = b"b" * 500
    r = bob.http.post(f"/tasks/{task}/uploads", json={"sha256": sha(big), "size": len(big)})
    _refused(r, 413, "max_stored_bytes_per_user", 1000)
    r = bob.http.put(f"/tasks/{task}/blobs/{sha(big)}", content=big, headers={"content-type": "application/octet-stream"})
    _refused(r, 413, "max_stored_bytes_per_user", 1000)
    r = bob.http.post(
        f"/tasks/{task}/messages/raw",
        params={"sender": f"participant/{bob.name}", "recipient": "aggregator", "kind": "update"},
        content=big,
    )
    _refused(r, 413, "max_stored_bytes_per_user", 1000)
    # Nothing was stored: the blob is absent, no message was queued, and what is left still fits.
    assert alice.http.get(f"/tasks/{task}/blobs/{sha(big)}").status_code == 404
    assert alice.http.get(f"/tasks/{task}/mailbox/aggregator").json()["messages"] == []
    bob.upload(task, b"c" * 400)
    alice.upload(task, big)  # the quota is per user


def test_pending_messages_per_mailbox(limited: Api) -> None:
    alice, bob, task = _members(limited)
    me = f"participant/{bob.name}"
    for i in range(3):
        assert bob.send(task, me, "aggregator", round=i).status_code == 201
    _refused(bob.send(task, me, "aggregator", round=3), 429, "max_pending_messages", 3)
    # An update (the raw route reads the quota with its task, in one statement) is refused alike.
    update = b"u" * 2000
    r = bob.http.post(f"/tasks/{task}/messages/raw", params={"sender": me, "recipient": "aggregator", "kind": "update"},
                      content=update, headers={"content-type": "application/octet-stream"})
    _refused(r, 429, "max_pending_messages", 3)
    assert alice.http.get(f"/tasks/{task}/blobs/{sha(update)}").status_code == 404
    page = alice.http.get(f"/tasks/{task}/mailbox/aggregator").json()
    assert [m["round"] for m in page["messages"]] == [0, 1, 2]
    # Once the aggregator has acknowledged them, the mailbox takes messages again.
    assert alice.http.post(f"/tasks/{task}/mailbox/aggregator/ack", json={"cursor": page["cursor"]}).status_code == 200
    assert bob.send(task, me, "aggregator", round=3).status_code == 201


def test_poll_pages_by_bytes(limited: Api) -> None:
    alice, bob, task = _members(limited)
    me = f"participant/{bob.name}"
    for i in range(3):
        payload = base64.b64encode(bytes([i]) * 600).decode()
        assert bob.send(task, me, "aggregator", round=i, payload=payload).status_code == 201
    seen = []
    after = 0
    while True:
        page = alice.http.get(f"/tasks/{task}/mailbox/aggregator", params={"after": after}).json()
        assert len(page["messages"]) == 1  # 2 x 600 bytes pass max_poll_bytes = 1000
        seen.append(page["messages"][0]["round"])
        after = page["cursor"]
        if not page["more"]:
            break
    assert seen == [0, 1, 2]
    assert alice.http.get(f"/tasks/{task}/mailbox/aggregator", params={"after": after}).json()["messages"] == []


def test_hosted_aggregators_per_user_and_per_hub(tmp_path: Path) -> None:
    config = fast_config(tmp_path / "hub", max_hosted_per_user=1, max_hosted_per_hub=2)
    with EmbeddedHub(config=config) as h:
        api = Api(h.url)
        alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
        a1, a2 = alice.create_task()["name"], alice.create_task()["name"]
        b1, c1 = bob.create_task()["name"], carol.create_task()["name"]
        try:
            assert alice.http.post(f"/tasks/{a1}/aggregator", json={}).status_code == 202
            _refused(alice.http.post(f"/tasks/{a2}/aggregator", json={}), 429, "max_hosted_per_user", 1)
            assert bob.http.post(f"/tasks/{b1}/aggregator", json={}).status_code == 202
            _refused(carol.http.post(f"/tasks/{c1}/aggregator", json={}), 429, "max_hosted_per_hub", 2)
            for user, task in ((alice, a2), (carol, c1)):
                status = user.http.get(f"/tasks/{task}/aggregator").json()
                assert status["state"] == "none" and not status["running"]
                assert user.http.get(f"/tasks/{task}").json()["status"] == "CREATED"
            # Stopping one frees its place.
            assert alice.http.delete(f"/tasks/{a1}/aggregator").status_code == 200
            assert carol.http.post(f"/tasks/{c1}/aggregator", json={}).status_code == 202
        finally:
            for user, task in ((alice, a1), (bob, b1), (carol, c1)):
                user.http.delete(f"/tasks/{task}/aggregator")
            api.close()
