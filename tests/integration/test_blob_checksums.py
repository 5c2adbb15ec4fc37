"""Every blob the hub verifies gets a checksum on the way (common/checksums.py), and every
read of a verified copy is checked by it: real hub, real HTTP, real files; the faults are
bytes changed in the hub's memory or on its disk after the hub verified them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.client.hub import HubClient  # noqa: E402
from fedpact.common import checksums  # noqa: E402
from fedpact.common.errors import FedpactError  # noqa: E402
from fedpact.common.tensors import encode_parts  # noqa: E402
from fedpact.hub import EmbeddedHub  # noqa: E402
from hub_fixtures import DATABASES, Api, User, api, hub_on, sha, task_with_members  # noqa: E402,F401

Members = tuple[User, User, User, dict[str, Any]]
OCTETS = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module", params=DATABASES)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedHub]:
    """On SQLite and on PostgreSQL, whose raw messages are stored by another statement."""
    yield from hub_on(request.param, tmp_path_factory)


def xxh(data: bytes) -> str:
    return f"xxh128:{xxhash.xxh3_128_hexdigest(data)}"


def blob_file(hub: EmbeddedHub, digest: str) -> Path:
    return hub.config.data_dir / "blobs" / digest[:2] / digest


def weights(seed: int) -> tuple[dict[str, np.ndarray], bytes]:
    arrays = {"w": np.random.default_rng(seed).standard_normal((4, 50_000)).astype(np.float32)}
    return arrays, encode_parts(arrays).tobytes()


def test_each_way_in_leaves_the_checksum_on_the_blobs_file(task_with_members: Members, hub: EmbeddedHub) -> None:
    alice, bob, _carol, task = task_with_members
    name = task["name"]
    one_request = os.urandom(300_000)
    assert bob.http.put(f"/tasks/{name}/blobs/{sha(one_request)}", content=one_request, headers=OCTETS).status_code == 201
    raw = os.urandom(200_000)
    r = bob.http.post(f"/tasks/{name}/messages/raw", content=raw, headers=OCTETS,
                      params={"sender": f"participant/{bob.name}", "recipient": "aggregator", "kind": "update"})
    assert r.status_code == 201, r.text
    chunked = os.urandom(100_000)
    bob.upload(name, chunked)
    for data in (one_request, raw, chunked):
        path = blob_file(hub, sha(data))
        assert path.read_bytes() == data
        assert os.getxattr(path, checksums.XATTR).decode() == xxh(data)


def test_a_copy_served_from_memory_carries_its_checksum_and_the_client_checks_it(
    task_with_members: Members, hub: EmbeddedHub
) -> None:
    alice, _bob, _carol, task = task_with_members
    arrays, data = weights(1)
    digest = sha(data)
    with HubClient(hub.url, alice.token, retry_for_s=5) as c:
        ref = c.upload_blob(task["name"], data)
        got = alice.http.get(f"/tasks/{task['name']}/blobs/{digest}")
        assert got.content == data and got.headers[checksums.HEADER] == xxh(data)
        _meta, out = c.download_tensors(task["name"], digest, ref["size"])
        assert np.array_equal(out["w"], arrays["w"])
        # The hub's memory copy goes bad after it was verified (a flipped bit): the checksum
        # it hands out was taken of the good bytes, so the client refuses the copy.
        cache = hub.app.state.hub.blob_cache
        kept = cache.get(digest)
        assert kept is not None and kept.checksum == xxh(data)
        bad = bytearray(data)
        bad[len(bad) // 2] ^= 0x01
        cache.discard(digest)
        cache.put(digest, (bytes(bad),), kept.checksum)
        try:
            with pytest.raises(FedpactError, match="does not match the checksum the hub sent with it"):
                c.download_tensors(task["name"], digest, ref["size"])
            with pytest.raises(FedpactError, match="does not match the checksum the hub sent with it"):
                c.download_blob(task["name"], digest)
        finally:
            cache.discard(digest)


def test_a_file_gone_bad_on_disk_is_refused_before_it_is_cached(task_with_members: Members, hub: EmbeddedHub) -> None:
    alice, _bob, _carol, task = task_with_members
    _arrays, data = weights(2)
    digest = sha(data)
    with HubClient(hub.url, alice.token, retry_for_s=5) as c:
        c.upload_blob(task["name"], data)
        cache = hub.app.state.hub.blob_cache
        cache.discard(digest)  # as after the hub restarted, or the copy was evicted
        path = blob_file(hub, digest)
        bad = bytearray(path.read_bytes())
        bad[10] ^= 0x01
        path.write_bytes(bytes(bad))
        r = alice.http.get(f"/tasks/{task['name']}/blobs/{digest}")
        assert r.status_code == 500 and "does not match its sha256" in r.json()["detail"]
        assert cache.get(digest) is None, "a copy that failed its check is not kept"
        with pytest.raises(FedpactError, match="does not match its sha256"):
            c.download_blob(task["name"], digest)
        path.write_bytes(data)  # mended: the next read fills the cache, checked, with the checksum
        got = alice.http.get(f"/tasks/{task['name']}/blobs/{digest}")
        assert got.status_code == 200 and got.content == data and got.headers[checksums.HEADER] == xxh(data)
        assert c.download_blob(task["name"], digest) == data


def test_a_download_without_a_checksum_is_checked_by_its_sha256(task_with_members: Members, hub: EmbeddedHub) -> None:
    """A blob above the memory cache's item size streams from its file, with no checksum header."""
    from fedpact.hub.blobcache import MAX_ITEM_BYTES

    alice, _bob, _carol, task = task_with_members
    data = os.urandom(MAX_ITEM_BYTES + 10)
    digest = sha(data)
    with HubClient(hub.url, alice.token, retry_for_s=5) as c:
        c.upload_blob(task["name"], data)
        got = alice.http.get(f"/tasks/{task['name']}/blobs/{digest}")
        assert got.content == data and checksums.HEADER not in got.headers
        assert c.download_blob(task["name"], digest) == data
        path = blob_file(hub, digest)
        bad = bytearray(data)
        bad[-1] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(FedpactError, match=f"does not match sha256 {digest}"):
            c.download_blob(task["name"], digest)
