"""The relay over real HTTP: who may read and send, broadcasts, long-polls, acks, retries."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub  # noqa: E402
from hub_fixtures import DATABASES, Api, User, api, fast_config, hub_on, task_with_members  # noqa: E402,F401


@pytest.fixture(scope="module", params=DATABASES)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedHub]:
    """Every test of this module on SQLite and on PostgreSQL, whose relay writes take another path."""
    yield from hub_on(request.param, tmp_path_factory)


Members = tuple[User, User, User, dict[str, Any]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def mailbox(user: User, task: str, address: str, **params: Any) -> dict[str, Any]:
    r = user.http.get(f"/tasks/{task}/mailbox/{address}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_participant_to_aggregator_and_back(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name = t["name"]
    r = bob.send(
        name,
        f"participant/{bob.name}",
        "aggregator",
        kind="update",
        round=1,
        headers={"dtype": "float32"},
        payload=b64(b"\x00\x01binary"),
    )
    assert r.status_code == 201, r.text
    msg = r.json()
    assert msg["sender"] == f"participant/{bob.name}" and msg["round"] == 1 and msg["blob"] is None
    got = mailbox(alice, name, "aggregator")
    assert got["messages"] == [msg] and got["cursor"] == msg["id"] and got["task_status"] == "CREATED"
    assert base64.b64decode(got["messages"][0]["payload"]) == b"\x00\x01binary"
    r = alice.send(name, "aggregator", f"participant/{carol.name}", kind="train", payload=b64(b"go"))
    assert r.status_code == 201
    assert [m["kind"] for m in mailbox(carol, name, f"participant/{carol.name}")["messages"]] == ["train"]
    assert mailbox(bob, name, f"participant/{bob.name}")["messages"] == []


def test_broadcast_is_stored_once_and_reaches_every_participant(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name = t["name"]
    ref = alice.upload(name, b"global model, round 1")
    r = alice.send(name, "aggregator", "participants", kind="model", round=1, blob=ref)
    assert r.status_code == 201
    b = r.json()
    direct = alice.send(name, "aggregator", f"participant/{bob.name}", kind="train").json()
    assert [m["id"] for m in mailbox(bob, name, f"participant/{bob.name}")["messages"]] == [b["id"], direct["id"]]
    assert [m["id"] for m in mailbox(carol, name, f"participant/{carol.name}")["messages"]] == [b["id"]]
    assert [m["id"] for m in mailbox(carol, name, "participants")["messages"]] == [b["id"]]
    assert [m["id"] for m in mailbox(alice, name, "participants")["messages"]] == [b["id"]]
    got = mailbox(carol, name, f"participant/{carol.name}")["messages"][0]
    assert got["blob"] == ref and got["recipient"] == "participants"
    blob = carol.http.get(f"/tasks/{name}/blobs/{ref['sha256']}")
    assert blob.content == b"global model, round 1"


def test_read_authorization(api: Api, task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name = t["name"]
    mallory = api.user("mallory")
    bob.send(name, f"participant/{bob.name}", "aggregator", payload=b64(b"secret update"))
    alice.send(name, "aggregator", f"participant/{carol.name}", payload=b64(b"for carol"))
    denied = [
        (bob, f"participant/{carol.name}", "your own mailbox"),
        (bob, "aggregator", "creator"),
        (carol, "aggregator", "creator"),
        (alice, f"participant/{bob.name}", "your own mailbox"),
        (mallory, "aggregator", "creator"),
        (mallory, f"participant/{mallory.name}", "join it first"),
        (mallory, "participants", "join it first"),
    ]
    for who, address, hint in denied:
        for method, path, kw in (
            ("GET", f"/tasks/{name}/mailbox/{address}", {}),
            ("POST", f"/tasks/{name}/mailbox/{address}/ack", {"json": {"cursor": 0}}),
        ):
            r = who.http.request(method, path, **kw)
            assert r.status_code == 403, (who.name, address, method, r.text)
            assert hint in r.json()["detail"], r.json()
    for bad in ("everyone", "participant/", "participant/x", "participant/a/b"):
        assert bob.http.get(f"/tasks/{name}/mailbox/{bad}").status_code == 422, bad
    assert bob.http.get("/tasks/no-such-task-xyz/mailbox/participants").status_code == 404
    assert len(mailbox(alice, name, "aggregator")["messages"]) == 1, "refused reads acknowledged nothing"


def test_send_authorization(api: Api, task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name = t["name"]
    mallory = api.user("mallory")
    denied = [
        (bob, "aggregator", f"participant/{carol.name}", "only the creator"),
        (bob, f"participant/{carol.name}", "aggregator", "only as"),
        (bob, "participants", "aggregator", "only as"),
        (bob, f"participant/{bob.name}", f"participant/{carol.name}", "only to 'aggregator'"),
        (bob, f"participant/{bob.name}", "participants", "only to 'aggregator'"),
        (mallory, f"participant/{mallory.name}", "aggregator", "join it first"),
        (alice, f"participant/{alice.name}", "aggregator", "join it first"),
        (alice, "aggregator", "aggregator", "not to itself"),
    ]
    for who, sender, recipient, hint in denied:
        r = who.send(name, sender, recipient)
        assert r.status_code == 403, (who.name, sender, recipient, r.text)
        assert hint in r.json()["detail"]
    r = alice.send(name, "aggregator", f"participant/{mallory.name}")
    assert r.status_code == 404 and "not a participant" in r.json()["detail"]
    for bad in ({"kind": "Bad Kind"}, {"round": -1}, {"payload": "not base64!"}, {"headers": {"a": 1}}, {"extra": 1}):
        r = bob.send(name, f"participant/{bob.name}", "aggregator", **bad)
        assert r.status_code == 422, (bad, r.text)
    r = bob.send(name, f"participant/{bob.name}", "aggregator", blob={"sha256": "a" * 64, "size": 3})
    assert r.status_code == 404 and "upload it first" in r.json()["detail"]
    ref = bob.upload(name, b"abc")
    r = bob.send(name, f"participant/{bob.name}", "aggregator", blob={**ref, "size": 4})
    assert r.status_code == 422
    assert mailbox(alice, name, "aggregator")["messages"] == []
    for p in (bob, carol):
        assert mailbox(p, name, f"participant/{p.name}")["messages"] == []


def test_inline_payload_limits(tmp_path: Path) -> None:
    with EmbeddedHub(config=fast_config(tmp_path, max_inline_bytes=1000)) as h:
        api = Api(h.url)
        alice, bob = api.user("alice"), api.user("bob")
        t = alice.create_task()
        bob.join(t["name"])
        me = f"participant/{bob.name}"
        assert bob.send(t["name"], me, "aggregator", payload=b64(b"x" * 1000)).status_code == 201
        r = bob.send(t["name"], me, "aggregator", payload=b64(b"x" * 1001))
        assert r.status_code == 413 and "blob" in r.json()["detail"]
        r = bob.send(t["name"], me, "aggregator", payload=b64(b"x" * 600_000))
        assert r.status_code == 413 and "limit for JSON requests" in r.json()["detail"]
        body = json.dumps({"sender": me, "recipient": "aggregator", "kind": "x", "payload": b64(b"y" * 600_000)})

        def streamed() -> Iterator[bytes]:
            for i in range(0, len(body), 65536):
                yield body[i : i + 65536].encode()

        r = bob.http.post(
            f"/tasks/{t['name']}/messages", content=streamed(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and "limit for JSON requests" in r.json()["detail"], "no Content-Length either"
        assert len(mailbox(alice, t["name"], "aggregator")["messages"]) == 1
        api.close()


def test_long_poll_wakes_promptly_on_a_message(tmp_path: Path) -> None:
    # A 30 s database re-check leaves the notifier as the only way to wake up in time.
    with EmbeddedHub(config=fast_config(tmp_path, recheck_interval_s=30.0)) as h:
        api = Api(h.url)
        alice, bob = api.user("alice"), api.user("bob")
        name = alice.create_task()["name"]
        bob.join(name)
        result: dict[str, Any] = {}

        def poll() -> None:
            result["body"] = mailbox(bob, name, f"participant/{bob.name}", wait=10)

        reader = threading.Thread(target=poll)
        reader.start()
        time.sleep(0.3)
        assert alice.send(name, "aggregator", "participants", kind="wake").status_code == 201
        reader.join(timeout=12)
        assert not reader.is_alive()
        # Without the notifier the 30 s re-check would end the 10 s wait with no message.
        assert [m["kind"] for m in result["body"]["messages"]] == ["wake"]
        api.close()


def test_long_poll_returns_empty_after_the_wait(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    got = mailbox(bob, t["name"], f"participant/{bob.name}", wait=0.6, after=0)
    assert got == {"messages": [], "cursor": 0, "task_status": "CREATED", "more": False}
    r = bob.http.get(f"/tasks/{t['name']}/mailbox/participant/{bob.name}", params={"wait": 61})
    assert r.status_code == 422 and "at most" in r.json()["detail"]


def test_long_poll_ends_when_the_task_ends(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    result: dict[str, Any] = {}

    def poll() -> None:
        result["body"] = mailbox(bob, t["name"], f"participant/{bob.name}", wait=25)

    reader = threading.Thread(target=poll)
    reader.start()
    time.sleep(0.3)
    alice.http.post(f"/tasks/{t['name']}/cancel")
    # A liveness bound, not a timing claim: the 25 s wait must have been cut short by the end.
    reader.join(timeout=20)
    assert not reader.is_alive()
    assert result["body"]["messages"] == [] and result["body"]["task_status"] == "CANCELLED"


def test_at_least_once_and_ack(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name, box = t["name"], f"participant/{bob.name}"
    ids = [alice.send(name, "aggregator", box, kind=f"m{i}").json()["id"] for i in range(3)]
    first = mailbox(bob, name, box, limit=2)
    assert [m["id"] for m in first["messages"]] == ids[:2] and first["cursor"] == ids[1]
    assert [m["id"] for m in mailbox(bob, name, box, after=first["cursor"])["messages"]] == ids[2:]
    assert [m["id"] for m in mailbox(bob, name, box)["messages"]] == ids, "unacknowledged messages come again"
    ack = f"/tasks/{name}/mailbox/{box}/ack"
    assert bob.http.post(ack, json={"cursor": ids[1]}).json() == {"cursor": ids[1]}
    assert bob.http.post(ack, json={"cursor": ids[1]}).json() == {"cursor": ids[1]}, "idempotent"
    assert bob.http.post(ack, json={"cursor": ids[0]}).json() == {"cursor": ids[1]}, "never moves back"
    assert [m["id"] for m in mailbox(bob, name, box)["messages"]] == ids[2:]
    r = bob.http.post(ack, json={"cursor": ids[2] + 1000})
    assert r.status_code == 422 and "beyond the newest" in r.json()["detail"]
    assert bob.http.post(ack, json={"cursor": -1}).status_code == 422
    assert [m["id"] for m in mailbox(bob, name, box)["messages"]] == ids[2:]
    assert [m["id"] for m in mailbox(carol, name, f"participant/{carol.name}")["messages"]] == [], (
        "cursors are per reader"
    )


def test_broadcast_acks_are_per_reader(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name = t["name"]
    mid = alice.send(name, "aggregator", "participants", kind="model").json()["id"]
    bob.http.post(f"/tasks/{name}/mailbox/participants/ack", json={"cursor": mid})
    assert mailbox(bob, name, "participants")["messages"] == []
    assert [m["id"] for m in mailbox(carol, name, "participants")["messages"]] == [mid]


def test_idempotency_key_dedups_retries(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name, me = t["name"], f"participant/{bob.name}"
    body = {"sender": me, "recipient": "aggregator", "kind": "update", "round": 2, "payload": b64(b"u")}
    first = bob.http.post(f"/tasks/{name}/messages", json=body, headers={"Idempotency-Key": "round-2-update"})
    again = bob.http.post(f"/tasks/{name}/messages", json=body, headers={"Idempotency-Key": "round-2-update"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = carol.http.post(
        f"/tasks/{name}/messages",
        json={**body, "sender": f"participant/{carol.name}"},
        headers={"Idempotency-Key": "round-2-update"},
    )
    assert other.json()["id"] != first.json()["id"], "keys are per sender"
    assert len(mailbox(alice, name, "aggregator")["messages"]) == 2


def test_message_ids_increase_under_concurrent_senders(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name = t["name"]
    seen: list[int] = []

    def send(p: User) -> None:
        for i in range(10):
            r = p.send(name, f"participant/{p.name}", "aggregator", kind="x", round=i)
            assert r.status_code == 201

    threads = [threading.Thread(target=send, args=(p,)) for p in (bob, carol)]
    for th in threads:
        th.start()
    cursor = 0
    deadline = time.monotonic() + 10
    while len(seen) < 20 and time.monotonic() < deadline:
        got = mailbox(alice, name, "aggregator", after=cursor, wait=1)
        seen += [m["id"] for m in got["messages"]]
        cursor = got["cursor"]
    for th in threads:
        th.join()
    assert len(seen) == 20 and seen == sorted(seen) and len(set(seen)) == 20
