"""A hub on PostgreSQL whose database connections are cut (a restart, a failover, a proxy).

The pool checks a connection only when it sat idle for ``PING_AFTER_IDLE_S``; one used
just before the cut fails the statement that finds out, which the hub answers with 503
(the pool has dropped every connection opened before it) and ``HubClient`` retries.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.client.hub import HubClient
from fedpact.hub import EmbeddedHub
from fedpact.hub.db import PING_AFTER_IDLE_S
from hub_fixtures import Api, fast_config
from services import postgres_database


def cut_connections(url: str) -> int:
    """Terminate every server process serving the hub's database, as a restart would."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
        row = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                            (name,)).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0])


@pytest.fixture
def on_postgresql(tmp_path: Path) -> Iterator[tuple[EmbeddedHub, str]]:
    with postgres_database() as url, EmbeddedHub(config=fast_config(tmp_path / "hub", database_url=url)) as hub:
        yield hub, url


def test_requests_after_a_cut_get_503_at_most_once_then_work(on_postgresql: tuple[EmbeddedHub, str]) -> None:
    hub, url = on_postgresql
    api = Api(hub.url)
    alice = api.user("alice")
    task = alice.create_task()["name"]
    for _ in range(5):
        assert alice.http.get(f"/tasks/{task}").status_code == 200
    assert cut_connections(url) >= 1
    answers = [alice.http.get(f"/tasks/{task}") for _ in range(10)]
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 503} and codes[-5:] == [200] * 5, codes
    for r in answers:
        if r.status_code == 503:
            assert "reconnects: retry" in r.json()["detail"] and r.headers["retry-after"] == "0"

    # Idle connections are checked before use: after a pause, a cut costs nobody anything.
    assert cut_connections(url) >= 1
    time.sleep(PING_AFTER_IDLE_S + 0.2)
    assert [alice.http.get(f"/tasks/{task}").status_code for _ in range(10)] == [200] * 10
    api.close()


def test_the_client_rides_out_a_cut_mid_conversation(on_postgresql: tuple[EmbeddedHub, str]) -> None:
    hub, url = on_postgresql
    api = Api(hub.url)
    alice, bob = api.user("alice"), api.user("bob")
    task = alice.create_task()["name"]
    bob.join(task)
    sent = []
    with HubClient(hub.url, bob.token) as b, HubClient(hub.url, alice.token) as a:
        for k in range(6):
            if k % 2:
                cut_connections(url)
            sent.append(b.send(task, sender=f"participant/{bob.name}", recipient="aggregator", kind="note", round=k,
                               payload=b"x" * 300_000)["id"])  # a raw message: the one-statement insert
            assert a.get_task(task)["name"] == task
        got, _ = a.poll(task, "aggregator", after=0)
    assert [m["id"] for m in got] == sent and [m["round"] for m in got] == list(range(6))
    api.close()


def test_connections_in_use_are_not_pinged(on_postgresql: tuple[EmbeddedHub, str], monkeypatch: pytest.MonkeyPatch) -> None:
    hub, _ = on_postgresql
    api = Api(hub.url)
    alice = api.user("alice")
    task = alice.create_task()["name"]
    dialect: Any = hub.app.state.hub.db.engine.dialect
    pings: list[float] = []
    real_ping = dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(time.monotonic())
        return bool(real_ping(dbapi_conn))

    monkeypatch.setattr(dialect, "do_ping", counted)
    for _ in range(20):
        assert alice.http.get(f"/tasks/{task}").status_code == 200
    assert pings == [], "a connection used a moment ago went back and forth to the server for nothing"
    time.sleep(PING_AFTER_IDLE_S + 0.2)
    assert alice.http.get(f"/tasks/{task}").status_code == 200
    assert len(pings) >= 1, "a connection idle for longer was handed out unchecked"
    api.close()
