"""The lean poll and update routes (hub.routes.lean) beside FastAPI's, on a real hub over HTTP.

A request whose parameters are in their plain form is answered by the lean route; any other
is handed on to FastAPI's route, which the ``fedpact_lean_handed_on`` counter at /metrics
records. Both ways give the same answer to the same request; refusals are FastAPI's, with
its error bodies, and change nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub
from hub_fixtures import Api, User, api, hub  # noqa: F401

POLL = "/tasks/{task}/mailbox/{address:path}"
RAW = "/tasks/{task}/messages/raw"


def _metric(hub: EmbeddedHub, name: str, **labels: str) -> float:  # noqa: F811
    """A counter's value at /metrics; 0 while it has no series with these labels."""
    for line in httpx.get(f"{hub.url}/metrics").text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _handed_on(hub: EmbeddedHub, route: str) -> float:  # noqa: F811
    return _metric(hub, "fedpact_lean_handed_on_total", route=route)


@pytest.fixture
def pair(api: Api) -> tuple[User, User, str]:  # noqa: F811
    alice, bob = api.user("alice"), api.user("bob")
    task = alice.create_task()["name"]
    bob.join(task)
    for k in range(3):
        r = bob.send(task, f"participant/{bob.name}", "aggregator", kind="note", headers={"k": str(k)})
        assert r.status_code == 201, r.text
    return alice, bob, task


def _ids(r: httpx.Response) -> list[int]:
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["messages"]]


def test_a_plain_poll_is_answered_lean_and_an_unusual_one_by_fastapi_the_same(
    hub: EmbeddedHub, pair: tuple[User, User, str]  # noqa: F811
) -> None:
    alice, _bob, task = pair
    url = f"/tasks/{task}/mailbox/aggregator"
    before = _handed_on(hub, POLL)
    lean = alice.http.get(url, params={"after": "0", "limit": "2", "wait": "0"})
    assert _handed_on(hub, POLL) == before
    slow = alice.http.get(url, params={"after": "0", "limit": "2", "wait": "0e0"})
    assert _handed_on(hub, POLL) == before + 1
    assert lean.status_code == slow.status_code == 200
    assert lean.json() == slow.json()
    assert len(lean.json()["messages"]) == 2 and lean.json()["more"] is True
    assert lean.headers["content-type"] == slow.headers["content-type"] == "application/json"

    # Acknowledging: "True" is FastAPI's to parse, "true" the lean route's; both move the cursor.
    first, second, third = _ids(alice.http.get(url, params={"after": 0}))
    assert _ids(alice.http.get(url, params={"after": first, "ack": "True"})) == [second, third]
    assert _handed_on(hub, POLL) == before + 2
    assert _ids(alice.http.get(url)) == [second, third]
    assert _ids(alice.http.get(url, params={"after": second, "ack": "true"})) == [third]
    assert _handed_on(hub, POLL) == before + 2
    assert _ids(alice.http.get(url)) == [third]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": "-1"}, "after"),
        ({"after": str(10**20)}, "after"),
        ({"wait": "-1"}, "wait"),
        ({"wait": "soon"}, "wait"),
        ({"after": "1", "ack": "maybe"}, "ack"),
    ],
)
def test_a_poll_in_an_unusual_form_is_refused_by_fastapi_and_acknowledges_nothing(
    hub: EmbeddedHub, pair: tuple[User, User, str], params: dict[str, str], field: str  # noqa: F811
) -> None:
    alice, _bob, task = pair
    url = f"/tasks/{task}/mailbox/aggregator"
    before = _handed_on(hub, POLL)
    r = alice.http.get(url, params={**params, "ack": params.get("ack", "true"), "after": params.get("after", "1")})
    assert r.status_code == 422, r.text
    assert any(e["loc"] == ["query", field] for e in r.json()["detail"]), r.text
    assert _handed_on(hub, POLL) == before + 1
    assert len(_ids(alice.http.get(url))) == 3  # the stored cursor did not move


def test_the_lean_poll_authenticates_as_fastapis_does(hub: EmbeddedHub, pair: tuple[User, User, str]) -> None:  # noqa: F811
    _alice, bob, task = pair
    url = f"{hub.url}/api/v1/tasks/{task}/mailbox/aggregator"
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"}):
        lean, slow = httpx.get(url, headers=headers), httpx.get(url, params={"wait": "0e0"}, headers=headers)
        assert lean.status_code == slow.status_code == 401
        assert lean.json() == slow.json() and lean.headers["www-authenticate"] == "Bearer"
    # A participant may not read the aggregator's mailbox, either way.
    lean, slow = bob.http.get(url), bob.http.get(url, params={"wait": "0e0"})
    assert lean.status_code == slow.status_code == 403 and lean.json() == slow.json()


def _raw(user: User, task: str, params: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return user.http.post(f"/tasks/{task}/messages/raw", params=params, content=b"update bytes", headers=headers)


def test_a_plain_update_is_stored_lean_and_replayed_by_its_key(
    hub: EmbeddedHub, pair: tuple[User, User, str]  # noqa: F811
) -> None:
    alice, bob, task = pair
    me = f"participant/{bob.name}"
    params = {"sender": me, "recipient": "aggregator", "kind": "update", "round": "1"}
    before = _handed_on(hub, RAW)
    answered = _metric(hub, "fedpact_http_requests_total", method="POST", route=RAW, status="201")
    first = _raw(bob, task, params, key="round-1")
    again = _raw(bob, task, params, key="round-1")
    assert first.status_code == again.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    assert first.json() == again.json() and first.json()["blob"]["size"] == len(b"update bytes")
    slow = _raw(bob, task, {**params, "round": "+2"}, key="round-2")  # "+2": FastAPI's to parse
    assert slow.status_code == 201 and slow.json()["round"] == 2
    assert _handed_on(hub, RAW) == before + 1
    assert _metric(hub, "fedpact_http_requests_total", method="POST", route=RAW, status="201") == answered + 3
    kinds = [m["kind"] for m in alice.http.get(f"/tasks/{task}/mailbox/aggregator").json()["messages"]]
    assert kinds == ["note", "note", "note", "update", "update"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sender": None}, "sender"),
        ({"sender": "participant/" + "b" * 80}, "sender"),
        ({"kind": "k" * 65}, "kind"),
        ({"round": "-1"}, "round"),
        ({"round": str(2**31)}, "round"),
        ({"key": "k" * 201}, "idempotency-key"),
    ],
)
def test_an_update_in_an_unusual_form_is_refused_by_fastapi_and_stores_nothing(
    hub: EmbeddedHub, pair: tuple[User, User, str], change: dict[str, str | None], field: str  # noqa: F811
) -> None:
    alice, bob, task = pair
    params: dict[str, Any] = {"sender": f"participant/{bob.name}", "recipient": "aggregator", "kind": "update"}
    key = change.pop("key", None)
    params.update(change)
    before = _handed_on(hub, RAW)
    r = _raw(bob, task, {k: v for k, v in params.items() if v is not None}, key=key)
    assert r.status_code == 422, r.text
    assert any(e["loc"][-1] == field for e in r.json()["detail"]), r.text
    assert _handed_on(hub, RAW) == before + 1
    assert len(alice.http.get(f"/tasks/{task}/mailbox/aggregator").json()["messages"]) == 3


def test_a_download_is_answered_lean_with_fastapis_checks(hub: EmbeddedHub, pair: tuple[User, User, str]) -> None:  # noqa: F811
    alice, bob, task = pair
    ref = alice.upload(task, b"global model bytes")
    route = "/tasks/{task}/blobs/{sha256}"
    answered = _metric(hub, "fedpact_http_requests_total", method="GET", route=route, status="200")
    r = bob.http.get(f"/tasks/{task}/blobs/{ref['sha256']}")
    assert r.status_code == 200 and r.content == b"global model bytes"
    assert r.headers["x-content-sha256"] == ref["sha256"]
    assert _metric(hub, "fedpact_http_requests_total", method="GET", route=route, status="200") == answered + 1
    assert httpx.get(f"{hub.url}/api/v1/tasks/{task}/blobs/{ref['sha256']}").status_code == 401
    assert bob.http.get(f"/tasks/{task}/blobs/{'0' * 64}").status_code == 404
    bad = bob.http.get(f"/tasks/{task}/blobs/{ref['sha256'].upper()}")
    assert bad.status_code == 422 and "sha256" in bad.text
    head = bob.http.head(f"/tasks/{task}/blobs/{ref['sha256']}")  # HEAD stays FastAPI's route
    assert head.status_code == 200 and head.headers["content-length"] == str(len(b"global model bytes"))
