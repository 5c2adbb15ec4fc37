"""The aggregator's mailbox reader (runtime.mailbox.ReadAhead) on a real hub: messages in
arrival order with their bodies already downloaded, nothing acknowledged before it is
handed over, and a failed poll raised in the reader's thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedpact.client.hub import HubClient, HubError
from fedpact.hub.server import EmbeddedHub
from fedpact.runtime import messages as m
from fedpact.runtime.mailbox import Mailbox, Message, ReadAhead
from hub_fixtures import Api, User, fast_config
from support import wait_for


class HeldDownloads(Executor):
    """Body downloads that start only once ``gate`` is set: bodies still on their way."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=2)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def held() -> Any:
            self.gate.wait(30)
            return fn(*args, **kwargs)

        return self._pool.submit(held)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.gate.set()
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def has_blob(msg: Message) -> bool:
    return bool(msg.raw.get("blob"))


@pytest.fixture()
def federation(tmp_path: Path) -> Iterator[tuple[EmbeddedHub, User, User, User, dict[str, Any]]]:
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as hub:
        api = Api(hub.url)
        alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
        task = alice.create_task()
        bob.join(task["name"])
        carol.join(task["name"])
        yield hub, alice, bob, carol, task
        api.close()


def update(hub: EmbeddedHub, user: User, task: str, values: int) -> int:
    """An update message whose body (a model of ``values`` float32) travels as a blob; its id."""
    payload = m.pack({"round_id": "r1"}, {"w": np.random.default_rng(values).standard_normal(values).astype(np.float32)})
    with HubClient(hub.url, user.token) as c:
        msg = c.send(task, sender=f"participant/{user.name}", recipient="aggregator", kind="update", round=1,
                     payload=payload)  # fmt: skip
    assert msg["blob"] is not None, "the payload travels as a blob, which is what the reader downloads ahead"
    return int(msg["id"])


def unacknowledged(hub: EmbeddedHub, token: str, task_id: int) -> list[int]:
    """What a reader starting from the hub's acknowledged cursor would get."""
    with HubClient(hub.url, token) as c:
        return [m.id for m in Mailbox(c, task_id, "aggregator", from_start=False).fetch(0, ack=False)]


def read(inbox: ReadAhead, n: int, within: float = 30.0) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + within
    while len(out) < n and time.monotonic() < deadline:
        out += inbox.next(0.5)
    return out


def test_messages_come_in_arrival_order_with_their_bodies_downloaded(federation: Any) -> None:
    hub, alice, bob, carol, task = federation
    first = update(hub, bob, task["name"], 100_000)
    note = bob.send(task["name"], f"participant/{bob.name}", "aggregator", kind="note")
    assert note.status_code == 201, note.text
    second = update(hub, carol, task["name"], 125_000)
    with HubClient(hub.url, alice.token) as client, ThreadPoolExecutor(max_workers=4) as pool:
        inbox = ReadAhead(Mailbox(client, task["id"], "aggregator", from_start=True), pool, has_blob)
        got = read(inbox, 3)
        assert [m.id for m in got] == [first, note.json()["id"], second]
        fetched: list[str] = []
        client._bulk.hooks.append(lambda method, url, headers: fetched.append(url))
        sizes = [sum(a.size for a in msg.body()[1].values()) for msg in got]
        inbox.close()
    assert fetched == [], "every body was downloaded ahead, before the message was handed over"
    assert sizes == [100_000, 0, 125_000]


def test_nothing_is_acknowledged_while_its_body_downloads(federation: Any) -> None:
    hub, alice, bob, carol, task = federation
    first = update(hub, bob, task["name"], 75_000)
    held = HeldDownloads()
    with HubClient(hub.url, alice.token) as client:
        inbox = ReadAhead(Mailbox(client, task["id"], "aggregator", from_start=True), held, has_blob)
        assert inbox.next(0.5) == [], "the body is still on its way: nothing to hand over yet"
        second = update(hub, carol, task["name"], 75_000)
        assert inbox.next(0.5) == [], "the second message was fetched meanwhile, its body too is held"
        assert unacknowledged(hub, alice.token, task["id"]) == [first, second]
        held.gate.set()
        assert [m.id for m in read(inbox, 2)] == [first, second]
        # Handed over, so handled: the next poll acknowledges them.
        deadline = time.monotonic() + 10
        while unacknowledged(hub, alice.token, task["id"]) and time.monotonic() < deadline:
            assert inbox.next(0.2) == []
        assert unacknowledged(hub, alice.token, task["id"]) == []
        inbox.close()
    held.shutdown()


def test_a_failed_poll_is_raised_to_the_reader(federation: Any) -> None:
    hub, alice, bob, carol, task = federation
    with HubClient(hub.url, "not-a-token") as client, ThreadPoolExecutor(max_workers=1) as pool:
        inbox = ReadAhead(Mailbox(client, task["id"], "aggregator", from_start=True), pool, has_blob)
        with pytest.raises(HubError) as raised:
            inbox.next(1.0)
        inbox.close()
    assert raised.value.status == 401


def test_a_poll_still_out_when_the_reader_closes_ends_quietly_when_the_hub_goes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = EmbeddedHub(config=fast_config(tmp_path / "hub")).start()
    api = Api(hub.url)
    alice = api.user("alice")
    task = alice.create_task()
    outcome: list[BaseException | list[Message]] = []

    def read_long() -> None:
        try:
            outcome.append(inbox.next(50))  # a long-poll the hub answers only after 50 s of silence
        except BaseException as exc:  # noqa: BLE001 - what the reader gets is the assertion
            outcome.append(exc)

    client = HubClient(hub.url, alice.token)
    with ThreadPoolExecutor(max_workers=1) as pool:
        inbox = ReadAhead(Mailbox(client, task["id"], "aggregator", from_start=True), pool, has_blob)
        reader = threading.Thread(target=read_long, daemon=True)
        reader.start()
        wait_for(lambda: inbox._poll is not None, 10, "the poll to go out")
        poll = inbox._poll
        assert poll is not None
        inbox.close()
        assert client.me()["name"] == alice.name, "the caller's own client stays open"
        api.close()
        hub.stop()  # cuts the long-poll; the closed reader must not retry through the "outage"
        poll._thread.join(120)
        reader.join(120)
    client.close()
    assert poll.finished and poll.error is not None, "it ended with the hub, without an answer"
    assert len(outcome) == 1 and isinstance(outcome[0], BaseException), "and the reader was told"
    assert "unreachable" not in capsys.readouterr().err, "a closed reader announces no outage"
