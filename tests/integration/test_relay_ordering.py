"""The relay's ordering under concurrent senders: no message lost, duplicated or reordered.

Sixteen participants post forty messages each at once while the aggregator follows its
cursor. On PostgreSQL the posts and the reads go through two hub replicas on one
database (and one shared blob directory), alternating, which is the deployed shape; on
SQLite through one embedded hub. The reader never asks for anything but ``after=cursor``,
exactly as the runtime's ``Mailbox`` does, so a message that commits behind the cursor
would be missed for good and the test would see it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub
from fedpact.hub.db import Database, lock_task_messages
from fedpact.hub.inserts import INSERT_MESSAGE, INSERT_MESSAGE_AND_BLOB
from fedpact.hub.tables import Blob, Message, utcnow
from hub_fixtures import Api, User, fast_config, task_in_database
from services import postgres_database

SENDERS = 16
PER_SENDER = 40
#: Independent cursor readers: each poll is one more chance to catch a gap that fills late.
READERS = 3


@pytest.fixture(params=["sqlite-1-hub", "postgresql-2-replicas"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Api]]:
    """The APIs of the hubs under test: one on SQLite, or two replicas on one PostgreSQL database."""
    with ExitStack() as stack:
        shared = tmp_path / "hub"
        if request.param == "sqlite-1-hub":
            hubs = [stack.enter_context(EmbeddedHub(config=fast_config(shared)))]
        else:
            url = stack.enter_context(postgres_database())
            hubs = [stack.enter_context(EmbeddedHub(config=fast_config(shared, database_url=url))) for _ in range(2)]
        apis = [Api(h.url) for h in hubs]
        for a in apis:
            stack.callback(a.close)
        yield apis


def _user_on(apis: list[Api], prefix: str, replica: int) -> User:
    """A user registered through one replica whose requests go to ``replica``'s hub."""
    first = apis[0].user(prefix)
    return User(name=first.name, token=first.token, http=apis[replica % len(apis)].client(first.token),
                creators=apis[0].creators)


@pytest.mark.parametrize("route", ["json", "raw"])
def test_concurrent_senders_reach_a_cursor_reader_exactly_once_in_order(replicas: list[Api], route: str) -> None:
    """``json``: POST .../messages; ``raw``: POST .../messages/raw, whose body becomes a blob
    (on PostgreSQL the lock, the blob row and the message are one statement)."""
    apis = replicas
    alice = apis[0].user("alice")
    task = alice.create_task()["name"]
    senders = [_user_on(apis, f"p{i}", i) for i in range(SENDERS)]
    for s in senders:
        s.join(task)
    readers = [User(alice.name, alice.token, a.client(alice.token)) for a in apis]

    errors: list[str] = []
    start = threading.Barrier(SENDERS + 1)

    def send(user: User) -> None:
        start.wait()
        for k in range(PER_SENDER):
            if route == "json":
                r = user.send(task, f"participant/{user.name}", "aggregator", kind="note", round=k)
            else:
                r = user.http.post(f"/tasks/{task}/messages/raw", content=f"{user.name} {k}".encode() * 50,
                                   params={"sender": f"participant/{user.name}", "recipient": "aggregator",
                                           "kind": "note", "round": k},
                                   headers={"content-type": "application/octet-stream"})  # fmt: skip
            if r.status_code != 201:
                errors.append(f"{user.name} #{k}: {r.status_code} {r.text}")

    threads = [threading.Thread(target=send, args=(u,), daemon=True) for u in senders]
    for t in threads:
        t.start()
    start.wait()

    results: list[list[dict[str, Any]]] = []

    def follow(first: int) -> None:
        """One cursor reader, alternating replicas, paging as the runtime's ``Mailbox`` does."""
        seen: list[dict[str, Any]] = []
        cursor, polls = 0, first
        deadline = time.monotonic() + 120
        while len(seen) < SENDERS * PER_SENDER and time.monotonic() < deadline and not errors:
            reader = readers[polls % len(readers)]
            polls += 1
            r = reader.http.get(f"/tasks/{task}/mailbox/aggregator", params={"after": cursor, "wait": 1, "limit": 5})
            assert r.status_code == 200, r.text
            body = r.json()
            seen.extend(body["messages"])
            cursor = body["cursor"]
        results.append(seen)

    followers = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(READERS)]
    for t in followers:
        t.start()
    for t in threads + followers:
        t.join(timeout=150)
    assert errors == []
    assert len(results) == READERS

    stored = readers[0].http.get(
        f"/tasks/{task}/mailbox/aggregator", params={"after": 0, "limit": 1000}
    ).json()["messages"]
    assert len(stored) == SENDERS * PER_SENDER
    for seen in results:
        ids = [m["id"] for m in seen]
        missed = {m["id"] for m in stored} - set(ids)
        assert missed == set(), f"a cursor reader never saw {len(missed)} of {len(stored)} messages"
        assert len(ids) == len(set(ids)), "a reader got a message twice"
        assert ids == sorted(ids), "a reader got messages out of id order"
        for user in senders:
            mine = [m["round"] for m in seen if m["sender"] == f"participant/{user.name}"]
            assert mine == list(range(PER_SENDER)), f"{user.name}'s messages arrived as {mine}"


@pytest.mark.parametrize("insert", ["lock, then insert", "one statement", "one statement with a blob row"])
def test_message_ids_become_visible_in_order_under_concurrent_inserts_on_postgresql(insert: str) -> None:
    """The ordering argument of ``tables.Message`` on its own, without HTTP in between.

    Through HTTP a reader samples the database a few hundred times; here it queries in a
    tight loop while sixteen threads insert through ``lock_task_messages`` exactly as the
    relay does, so a gap that fills in late is caught (without the lock, about 90 of 1,280
    messages are missed in every run).
    """
    with postgres_database() as url:
        db = Database(url)
        try:
            task_id, user_id = task_in_database(db)
            start = threading.Barrier(SENDERS + 1)

            def send(sender: int) -> None:
                start.wait()
                for k in range(PER_SENDER * 2):
                    if insert == "lock, then insert":
                        with db.session() as s:
                            lock_task_messages(s, task_id)
                            s.add(Message(task_id=task_id, sender=f"participant/p{sender}", recipient="aggregator",
                                          kind="note", headers={"k": str(k)}))
                            s.commit()
                        continue
                    digest = f"{sender:032x}{k:032x}"
                    row = {"task_id": task_id, "sender": f"participant/p{sender}", "recipient": "aggregator",
                           "kind": "note", "round": k, "headers": {}, "payload": None, "blob_sha256": None,
                           "blob_size": None, "idempotency_key": None, "created_at": utcnow(),
                           "uploaded_by": user_id, "shared": False}  # fmt: skip
                    statement = INSERT_MESSAGE
                    if insert == "one statement with a blob row":
                        row |= {"blob_sha256": digest, "blob_size": 1}
                        statement = INSERT_MESSAGE_AND_BLOB
                    with db.statements() as s:
                        assert s.connection().execute(statement, row).scalar() is not None

            threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(SENDERS)]
            for t in threads:
                t.start()
            start.wait()
            seen: list[int] = []
            finished = False
            while not finished:
                finished = not any(t.is_alive() for t in threads)  # one last read after the last commit
                with db.reading() as s:
                    cursor = seen[-1] if seen else 0
                    seen.extend(s.scalars(select(Message.id).where(Message.task_id == task_id, Message.id > cursor)
                                          .order_by(Message.id)))
            with db.reading() as s:
                everything = list(s.scalars(select(Message.id).where(Message.task_id == task_id)))
        finally:
            db.dispose()
    assert len(everything) == SENDERS * PER_SENDER * 2
    assert sorted(set(everything) - set(seen)) == [], "the cursor moved past messages that committed later"
    assert seen == sorted(set(seen))


def test_the_one_statement_insert_does_nothing_for_a_taken_key_on_postgresql() -> None:
    """The race that HTTP only sometimes produces, made on purpose: a retry's insert with the
    sender's key inserts no message (its blob row, the same bytes, is the one already held),
    and the route's answer is the first message."""
    from fedpact.hub.routes.relay import _raced

    with postgres_database() as url:
        db = Database(url)
        try:
            task_id, user_id = task_in_database(db)
            row = {"task_id": task_id, "sender": "participant/bob", "recipient": "aggregator", "kind": "update",
                   "round": 1, "headers": {}, "payload": None, "blob_sha256": "a" * 64, "blob_size": 5,
                   "idempotency_key": "round-1", "created_at": utcnow(), "uploaded_by": user_id, "shared": False}
            with db.statements() as s:
                first = s.connection().execute(INSERT_MESSAGE_AND_BLOB, row).scalar()
                assert first is not None
                assert s.connection().execute(INSERT_MESSAGE_AND_BLOB, row).scalar() is None
                assert s.connection().execute(INSERT_MESSAGE, row).scalar() is None
                assert _raced(s, row).id == first
            with db.reading() as s:
                assert list(s.scalars(select(Message.id).where(Message.task_id == task_id))) == [first]
                held = sorted(s.scalars(select(Blob.sha256).where(Blob.task_id == task_id)))
        finally:
            db.dispose()
    assert held == ["a" * 64]


def test_a_raw_message_raced_by_its_own_retry_is_stored_once(replicas: list[Api]) -> None:
    """Eight copies of one raw message with one idempotency key, sent at once through every
    replica: one message, one blob row, every answer names it (all but one say replayed)."""
    apis = replicas
    alice = apis[0].user("alice")
    task = alice.create_task()["name"]
    bob = _user_on(apis, "bob", 0)
    bob.join(task)
    clients = [a.client(bob.token) for a in apis]
    body = os.urandom(300_000)
    start = threading.Barrier(8)
    answers: list[Any] = []

    def send(i: int) -> None:
        start.wait()
        answers.append(clients[i % len(clients)].post(
            f"/tasks/{task}/messages/raw", content=body,
            params={"sender": f"participant/{bob.name}", "recipient": "aggregator", "kind": "update", "round": 1},
            headers={"content-type": "application/octet-stream", "Idempotency-Key": "round-1"}))  # fmt: skip

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [r.status_code for r in answers] == [201] * 8, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.headers.get("idempotent-replayed") != "true" for r in answers) == 1
    stored = alice.http.get(f"/tasks/{task}/mailbox/aggregator", params={"after": 0}).json()["messages"]
    assert [m["id"] for m in stored] == [answers[0].json()["id"]]
    assert alice.http.get(f"/tasks/{task}/blobs/{stored[0]['blob']['sha256']}").content == body


def test_a_raw_message_takes_its_tasks_lock_once_on_postgresql(tmp_path: Path) -> None:
    """The raw-message route locks the task before its blob row (the reclaiming pass's
    order) and inserts the message under that same lock, not a second one."""
    from sqlalchemy import event

    from fedpact.client.hub import HubClient

    with postgres_database() as url, EmbeddedHub(config=fast_config(tmp_path / "hub", database_url=url)) as hub:
        api = Api(hub.url)
        alice, bob = api.user("alice"), api.user("bob")
        task = alice.create_task()["name"]
        bob.join(task)
        locks: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
            if "pg_advisory_xact_lock" in statement:
                locks.append(statement)

        engine = hub.app.state.hub.db.engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            with HubClient(hub.url, bob.token) as c:
                sent = c.send(task, sender=f"participant/{bob.name}", recipient="aggregator", kind="update",
                              round=1, payload=os.urandom(400_000))  # above the inline limit: a raw message
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert sent["blob"] is not None
        assert len(locks) == 1, locks
        api.close()
