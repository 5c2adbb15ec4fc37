"""Blob uploads and downloads over real HTTP: chunking, resume, limits, integrity, access."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub  # noqa: E402
from hub_fixtures import Api, User, api, fast_config, hub, sha, task_with_members  # noqa: E402,F401

Members = tuple[User, User, User, dict[str, Any]]
OCTETS = {"content-type": "application/octet-stream"}


def start(user: User, task: str, data: bytes, size: int | None = None, digest: str | None = None) -> httpx.Response:
    return user.http.post(
        f"/tasks/{task}/uploads", json={"sha256": digest or sha(data), "size": len(data) if size is None else size}
    )


def put(user: User, task: str, uid: str, offset: int, body: Any) -> httpx.Response:
    return user.http.put(f"/tasks/{task}/uploads/{uid}", params={"offset": offset}, content=body, headers=OCTETS)


def head(user: User, task: str, digest: str) -> int:
    return user.http.head(f"/tasks/{task}/blobs/{digest}").status_code


def test_chunked_upload_then_download(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name, data = t["name"], os.urandom(300_000)
    r = start(bob, name, data)
    assert r.status_code == 201 and r.json()["offset"] == 0 and r.json()["complete"] is False
    uid = r.json()["upload_id"]
    offset = 0
    for piece in (data[:100_000], data[100_000:250_000], data[250_000:]):
        r = put(bob, name, uid, offset, piece)
        assert r.status_code == 200, r.text
        offset = r.json()["offset"]
    assert offset == len(data)
    assert bob.http.get(f"/tasks/{name}/uploads/{uid}").json() == {
        "upload_id": uid,
        "offset": len(data),
        "size": len(data),
        "sha256": sha(data),
    }
    r = bob.http.post(f"/tasks/{name}/uploads/{uid}/complete")
    assert r.status_code == 201 and r.json() == {"sha256": sha(data), "size": len(data)}
    assert bob.http.get(f"/tasks/{name}/uploads/{uid}").status_code == 404
    for reader in (alice, bob):  # the creator and the uploader; carol may not (see test_hub_blob_access)
        got = reader.http.get(f"/tasks/{name}/blobs/{sha(data)}")
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-length"] == str(len(data)) and got.headers["x-content-sha256"] == sha(data)
    h = alice.http.head(f"/tasks/{name}/blobs/{sha(data)}")
    assert h.status_code == 200 and h.headers["content-length"] == str(len(data))
    again = start(carol, name, data)
    assert again.status_code == 200 and again.json() == {"upload_id": None, "offset": len(data), "complete": True}


def test_streamed_body_without_content_length(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    data = os.urandom(3 * 1024 * 1024 + 17)
    uid = start(bob, t["name"], data).json()["upload_id"]

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    r = put(bob, t["name"], uid, 0, pieces())
    assert r.status_code == 200 and r.json()["offset"] == len(data)
    assert bob.http.post(f"/tasks/{t['name']}/uploads/{uid}/complete").status_code == 201


def test_restarting_an_upload_returns_the_unfinished_one(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    data = os.urandom(1000)
    uid = start(bob, t["name"], data).json()["upload_id"]
    put(bob, t["name"], uid, 0, data[:400])
    r = start(bob, t["name"], data)
    assert r.status_code == 201 and r.json() == {"upload_id": uid, "offset": 400, "complete": False}
    r = start(bob, t["name"], data, size=999)
    assert r.status_code == 409 and "in progress" in r.json()["detail"]
    assert bob.http.get(f"/tasks/{t['name']}/uploads/{uid}").json()["offset"] == 400


def test_wrong_offset_is_409_and_changes_nothing(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    data = os.urandom(1000)
    uid = start(bob, t["name"], data).json()["upload_id"]
    put(bob, t["name"], uid, 0, data[:500])
    for wrong in (0, 499, 501):
        r = put(bob, t["name"], uid, wrong, data[wrong:])
        assert r.status_code == 409 and "?offset=500" in r.json()["detail"], r.text
    assert bob.http.get(f"/tasks/{t['name']}/uploads/{uid}").json()["offset"] == 500
    r = bob.http.post(f"/tasks/{t['name']}/uploads/{uid}/complete")
    assert r.status_code == 409 and "500 bytes are missing" in r.json()["detail"]
    assert bob.http.get(f"/tasks/{t['name']}/uploads/{uid}").json()["offset"] == 500
    assert put(bob, t["name"], uid, 500, data[500:]).json()["offset"] == 1000
    assert bob.http.post(f"/tasks/{t['name']}/uploads/{uid}/complete").status_code == 201


def test_sha256_mismatch_discards_the_upload(hub: EmbeddedHub, task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    data, claimed = b"these bytes", sha(b"other bytes")
    uid = start(bob, t["name"], data, digest=claimed).json()["upload_id"]
    put(bob, t["name"], uid, 0, data)
    r = bob.http.post(f"/tasks/{t['name']}/uploads/{uid}/complete")
    assert r.status_code == 422
    assert r.json()["detail"].startswith("sha256 mismatch:") and sha(data) in r.json()["detail"]
    assert head(bob, t["name"], claimed) == 404 and head(bob, t["name"], sha(data)) == 404
    assert bob.http.get(f"/tasks/{t['name']}/uploads/{uid}").status_code == 404
    assert not (hub.config.data_dir / "uploads" / uid).exists()
    assert not (hub.config.data_dir / "blobs" / claimed[:2] / claimed).exists()


def test_a_blob_name_must_be_exactly_64_lowercase_hex_digits(hub: EmbeddedHub, task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    data = b"named by its sha256"
    good = sha(data)
    # A trailing newline (%0A in the path) once passed a `^...$` pattern used with match().
    for bad in (good.upper(), good[:-1], good + "0", good + "%0A", "%0A" + good[1:]):
        r = bob.http.put(f"/tasks/{t['name']}/blobs/{bad}", content=data, headers=OCTETS)
        assert r.status_code == 422 and "is not a sha256" in r.json()["detail"], (bad, r.text)
        for method in ("GET", "HEAD"):
            assert bob.http.request(method, f"/tasks/{t['name']}/blobs/{bad}").status_code == 422, (method, bad)
    assert head(bob, t["name"], good) == 404, "nothing was stored"
    assert not (hub.config.data_dir / "blobs" / good[:2]).exists()
    assert bob.http.put(f"/tasks/{t['name']}/blobs/{good}", content=data, headers=OCTETS).status_code == 201
    assert bob.http.get(f"/tasks/{t['name']}/blobs/{good}").content == data


def test_oversized_blobs_are_413(tmp_path: Path) -> None:
    with EmbeddedHub(config=fast_config(tmp_path, max_blob_bytes=1000)) as h:
        api = Api(h.url)
        alice = api.user("alice")
        name = alice.create_task()["name"]
        r = start(alice, name, b"x" * 1001)
        assert r.status_code == 413 and "limit of 1000 bytes" in r.json()["detail"]
        assert list((tmp_path / "uploads").iterdir()) == []
        data = os.urandom(100)
        uid = start(alice, name, data).json()["upload_id"]
        put(alice, name, uid, 0, data[:60])
        r = put(alice, name, uid, 60, data[60:] + b"extra")
        assert r.status_code == 413 and "declared size of 100" in r.json()["detail"]

        def too_much() -> Iterator[bytes]:
            yield data[60:]
            yield b"more than declared"

        r = put(alice, name, uid, 60, too_much())
        assert r.status_code == 413 and "nothing was kept" in r.json()["detail"]
        assert alice.http.get(f"/tasks/{name}/uploads/{uid}").json()["offset"] == 60
        assert put(alice, name, uid, 60, data[60:]).status_code == 200
        assert alice.http.post(f"/tasks/{name}/uploads/{uid}/complete").status_code == 201
        api.close()


def test_upload_resumes_after_a_broken_connection(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name, data = t["name"], os.urandom(2_000_000)
    uid = start(bob, name, data).json()["upload_id"]
    url = urlparse(bob.http.base_url.join(f"tasks/{name}/uploads/{uid}?offset=0").__str__())
    half = len(data) // 2
    with socket.create_connection((url.hostname, url.port)) as s:
        s.sendall(
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {bob.token}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[:half]
        )
    offset, deadline = -1, time.monotonic() + 10
    while offset != half and time.monotonic() < deadline:
        time.sleep(0.05)
        offset = bob.http.get(f"/tasks/{name}/uploads/{uid}").json()["offset"]
    assert offset == half, "every byte that arrived before the break is kept"
    r = put(bob, name, uid, offset, data[offset:])
    assert r.status_code == 200 and r.json()["offset"] == len(data)
    assert bob.http.post(f"/tasks/{name}/uploads/{uid}/complete").status_code == 201
    assert alice.http.get(f"/tasks/{name}/blobs/{sha(data)}").content == data


def test_non_members_see_no_blobs(api: Api, task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    mallory = api.user("mallory")
    ref = bob.upload(t["name"], b"private update")
    uid = start(bob, t["name"], b"pending").json()["upload_id"]
    for method, path in (
        ("GET", f"/tasks/{t['name']}/blobs/{ref['sha256']}"),
        ("GET", f"/tasks/{t['name']}/uploads/{uid}"),
        ("POST", f"/tasks/{t['name']}/uploads/{uid}/complete"),
    ):
        r = mallory.http.request(method, path)
        assert r.status_code == 403 and "join it first" in r.json()["detail"], (method, path)
    assert head(mallory, t["name"], ref["sha256"]) == 403
    r = start(mallory, t["name"], b"spam")
    assert r.status_code == 403
    assert put(mallory, t["name"], uid, 0, b"pending").status_code == 403
    assert bob.http.get(f"/tasks/{t['name']}/uploads/{uid}").json()["offset"] == 0
    other = mallory.create_task()
    assert start(mallory, other["name"], b"private update").status_code == 201, (
        "same content elsewhere needs its own upload"
    )
    assert head(mallory, other["name"], ref["sha256"]) == 404


def test_bad_blob_requests(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    assert bob.http.get(f"/tasks/{t['name']}/blobs/NOTAHASH").status_code == 422
    assert bob.http.get(f"/tasks/{t['name']}/blobs/{'0' * 64}").status_code == 404
    assert bob.http.post(f"/tasks/{t['name']}/uploads", json={"sha256": "A" * 64, "size": 1}).status_code == 422
    assert bob.http.post(f"/tasks/{t['name']}/uploads", json={"sha256": "a" * 64, "size": -1}).status_code == 422
    assert bob.http.get(f"/tasks/{t['name']}/uploads/nonexistent-upload-id").status_code == 404
    assert put(bob, t["name"], "../../etc/passwd", 0, b"x").status_code == 404


def test_20_mb_round_trip_with_range_resume(task_with_members: Members) -> None:
    alice, bob, carol, t = task_with_members
    name, data = t["name"], os.urandom(20 * 1024 * 1024)
    digest = sha(data)
    uid = start(alice, name, data).json()["upload_id"]
    chunk, offset = 4 * 1024 * 1024, 0
    while offset < len(data):
        offset = put(alice, name, uid, offset, data[offset : offset + chunk]).json()["offset"]
    assert alice.http.post(f"/tasks/{name}/uploads/{uid}/complete").status_code == 201

    received = bytearray()
    with bob.http.stream("GET", f"/tasks/{name}/blobs/{digest}") as r:
        assert r.status_code == 200 and int(r.headers["content-length"]) == len(data)
        for piece in r.iter_bytes():
            received += piece
            if len(received) >= 7 * 1024 * 1024:
                break
    r = bob.http.get(f"/tasks/{name}/blobs/{digest}", headers={"Range": f"bytes={len(received)}-"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {len(received)}-{len(data) - 1}/{len(data)}"
    received += r.content
    assert sha(bytes(received)) == digest
