"""Wake-ups between two hub replicas through a real RabbitMQ, and what happens without it.

Both replicas run on one PostgreSQL database. The database re-checks of a waiting poll are
set far apart (``safety_recheck_s`` 60 s while the broker is up) so that, while the broker
works, only a wake-up it carried can end the wait with the message; the broker's own
counters confirm the wake-up arrived through it. When the broker connection of the
waiting replica is cut, polls fall back to re-checking the database (``recheck_interval_s``)
and nothing is lost; once it reconnects, wake-ups travel through it again.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub
from fedpact.hub.broker import BrokerNotifier
from hub_fixtures import Api, User, fast_config
from services import RABBITMQ_URL, close_broker_connections, postgres_database
from support import wait_for


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[tuple[list[EmbeddedHub], list[Api]]]:
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database())
        config = {"database_url": url, "broker_url": RABBITMQ_URL, "safety_recheck_s": 60.0, "recheck_interval_s": 0.5,
                  "broker_reconnect_s": 5.0}
        hubs = [stack.enter_context(EmbeddedHub(config=fast_config(tmp_path / "hub", **config))) for _ in range(2)]
        apis = [Api(h.url) for h in hubs]
        for a in apis:
            stack.callback(a.close)
        for h in hubs:
            wait_for(lambda h=h: _notifier(h).trusted, 30, "the replica to connect to RabbitMQ")
        yield hubs, apis


def _notifier(hub: EmbeddedHub) -> BrokerNotifier:
    assert hub._server is not None
    notifier = hub._server.config.loaded_app  # the ASGI app wrapped by uvicorn's middleware
    while not hasattr(notifier, "state"):
        notifier = notifier.app
    n = notifier.state.hub.notifier
    assert isinstance(n, BrokerNotifier)
    return n


def _poll_in_background(user: User, task: str, address: str, wait: float) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        r = user.http.get(f"/tasks/{task}/mailbox/{address}", params={"after": 0, "wait": wait}, timeout=wait + 30)
        result.append(r)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def _alice_and_bob(a: Api, b: Api) -> tuple[User, str, User, User]:
    """Alice's task on replica A, Bob admitted to it, and Bob as replica B serves him."""
    alice = a.user("alice")
    task = alice.create_task()["name"]
    bob = a.user("bob")
    bob.join(task)
    return alice, task, bob, User(bob.name, bob.token, b.client(bob.token))


def test_a_message_posted_on_one_replica_wakes_a_poll_on_the_other_through_the_broker(
    two_replicas: tuple[list[EmbeddedHub], list[Api]],
) -> None:
    hubs, (a, b) = two_replicas
    alice, task, bob, bob_b = _alice_and_bob(a, b)
    received_before = _notifier(hubs[0]).received
    # Without a wake-up this poll would end empty after 50 s: its database re-check is 60 s away.
    waiting, result = _poll_in_background(alice, task, "aggregator", wait=50)
    r = bob_b.send(task, f"participant/{bob.name}", "aggregator", kind="update")
    assert r.status_code == 201, r.text
    waiting.join(timeout=45)
    assert not waiting.is_alive(), "the poll on replica A was not woken by the message posted on replica B"
    (response,) = result
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["messages"]] == [r.json()["id"]]
    assert _notifier(hubs[0]).received > received_before
    # B counts its publish once the broker confirms it, which can come after A was woken.
    wait_for(lambda: _notifier(hubs[1]).published >= 1, 30, "replica B to count its publish")


def test_a_replica_drops_its_own_wake_ups_coming_back_from_the_broker(
    two_replicas: tuple[list[EmbeddedHub], list[Api]],
) -> None:
    """The fanout hands the publisher its own copy; it woke its readers before publishing,
    so a second wake would only send them back to the database."""
    hubs, (a, b) = two_replicas
    _, task, bob, bob_b = _alice_and_bob(a, b)
    notifier_a, notifier_b = _notifier(hubs[0]), _notifier(hubs[1])
    a_before, b_before, echoes_before = notifier_a.received, notifier_b.received, notifier_b.echoes
    for k in range(3):
        assert bob_b.send(task, f"participant/{bob.name}", "aggregator", kind="note", round=k).status_code == 201
    wait_for(lambda: notifier_a.received >= a_before + 3 and notifier_b.echoes >= echoes_before + 3, 30,
             "the three wake-ups to reach replica A, and their copies replica B")
    assert notifier_b.received == b_before, "replica B woke its readers again with its own wake-ups"


def test_while_the_broker_connection_is_cut_polls_fall_back_to_the_database_and_lose_nothing(
    two_replicas: tuple[list[EmbeddedHub], list[Api]],
) -> None:
    hubs, (a, b) = two_replicas
    alice, task, bob, bob_b = _alice_and_bob(a, b)
    notifier_a = _notifier(hubs[0])
    waiting, result = _poll_in_background(alice, task, "aggregator", wait=50)
    assert close_broker_connections(notifier_a.name) == 1
    wait_for(lambda: notifier_a.disconnects == 1, 30, "replica A to notice its broker connection is gone")
    received = notifier_a.received
    r = bob_b.send(task, f"participant/{bob.name}", "aggregator", kind="update")
    assert r.status_code == 201, r.text
    waiting.join(timeout=45)
    assert not waiting.is_alive(), "the poll on replica A missed a message posted while its broker was away"
    (response,) = result
    assert [m["id"] for m in response.json()["messages"]] == [r.json()["id"]]
    # Back on the broker: wake-ups from B reach A again.
    wait_for(lambda: notifier_a.trusted, 60, "replica A to reconnect to RabbitMQ")
    r = bob_b.send(task, f"participant/{bob.name}", "aggregator", kind="update")
    assert r.status_code == 201
    wait_for(lambda: notifier_a.received > received, 30, "a wake-up through the restored connection")
