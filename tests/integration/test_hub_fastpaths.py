"""The request-saving paths: one-request blob uploads and acknowledging while polling."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub  # noqa: E402
from hub_fixtures import DATABASES, Api, User, api, fast_config, hub_on, sha, task_with_members  # noqa: E402,F401


@pytest.fixture(scope="module", params=DATABASES)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedHub]:
    """Every test of this module on SQLite and on PostgreSQL, whose relay writes take another path."""
    yield from hub_on(request.param, tmp_path_factory)


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


def test_small_blobs_are_served_from_memory_with_ranges(task_with_members: Members, hub: EmbeddedHub, api: Api) -> None:
    from fedpact.hub.blobcache import MAX_ITEM_BYTES

    alice, bob, carol, task = task_with_members
    name = task["name"]
    cache = hub.app.state.hub.blob_cache
    small = os.urandom(4 * 1024 * 1024 + 3)
    assert bob.http.put(f"/tasks/{name}/blobs/{sha(small)}", content=small, headers=OCTETS).status_code == 201
    kept = cache.get(sha(small))
    assert kept is not None and b"".join(kept.pieces) == small, "a body received through the hub is kept for its readers"
    got = alice.http.get(f"/tasks/{name}/blobs/{sha(small)}")
    assert got.status_code == 200 and got.content == small
    assert got.headers["x-content-sha256"] == sha(small) and got.headers["accept-ranges"] == "bytes"
    # The checksum taken as the body was hashed on arrival travels with every copy from memory.
    assert got.headers["x-fedpact-checksum"] == f"xxh128:{xxhash.xxh3_128_hexdigest(small)}"
    part = alice.http.get(f"/tasks/{name}/blobs/{sha(small)}", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == small[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(small)}"
    tail = alice.http.get(f"/tasks/{name}/blobs/{sha(small)}", headers={"Range": f"bytes={len(small) - 5}-"})
    assert tail.status_code == 206 and tail.content == small[-5:]
    past = alice.http.get(f"/tasks/{name}/blobs/{sha(small)}", headers={"Range": f"bytes={len(small)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(small)}"
    head = alice.http.head(f"/tasks/{name}/blobs/{sha(small)}")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(small))
    # Access is checked before the cache: a non-member gets nothing from memory either.
    outsider = api.user("eve").http.get(f"/tasks/{name}/blobs/{sha(small)}")
    assert outsider.status_code == 403 and small[:64] not in outsider.content
    # A blob larger than a cache item streams from its file and is never held in memory.
    large = os.urandom(MAX_ITEM_BYTES + 1)
    assert bob.http.put(f"/tasks/{name}/blobs/{sha(large)}", content=large, headers=OCTETS).status_code == 201
    assert alice.http.get(f"/tasks/{name}/blobs/{sha(large)}").content == large
    assert cache.get(sha(large)) is None


def test_the_blob_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    from fedpact.hub.blobcache import BlobCache

    cache = BlobCache(max_item=10, max_total=25)
    cache.put("a", (b"x" * 4, b"x" * 6), "xxh128:" + "0" * 32)
    cache.put("b", (b"y" * 10,), None)
    cache.put("big", (b"z" * 6, b"z" * 5), None)
    assert cache.get("big") is None, "an item over max_item is not kept"
    a = cache.get("a")  # a is now the most recently used
    assert a is not None and a.pieces == (b"x" * 4, b"x" * 6) and a.checksum == "xxh128:" + "0" * 32 and a.size == 10
    cache.put("c", (b"w" * 10,), None)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.total_bytes == 20
    cache.discard("a")
    assert cache.get("a") is None and cache.total_bytes == 10


def test_a_blob_in_pieces_is_cut_right_for_any_range() -> None:
    from fedpact.hub.blobcache import _slices

    pieces = (b"abc", b"defgh", b"i", b"jklmnop")
    whole = b"".join(pieces)
    assert list(_slices(pieces, 0, len(whole))) == list(pieces), "whole pieces are sent as they are"
    for a in range(len(whole) + 1):
        for b in range(a, len(whole) + 1):
            assert b"".join(_slices(pieces, a, b)) == whole[a:b], (a, b)
