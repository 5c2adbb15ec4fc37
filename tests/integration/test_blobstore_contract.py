"""One contract for every blob store backend: local disk, and S3 on a real SeaweedFS."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub.blobgc import expire_uploads
from fedpact.hub.blobstore import BlobStore, BlobStoreError, open_blob_store
from fedpact.hub.blobstore_local import LocalBlobStore
from fedpact.hub.db import Database
from seaweedfs import SeaweedFS, blob_store_url, seaweedfs  # noqa: F401
from support import run_coroutine

MIB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(blob_store_url: str | None, tmp_path: Path) -> BlobStore:  # noqa: F811
    return open_blob_store(blob_store_url, tmp_path)


def staged(store: BlobStore, data: bytes, tmp_path: Path) -> Path:
    path = tmp_path / f"staged-{sha(data)[:8]}-{time.monotonic_ns()}"
    path.write_bytes(data)
    return path


def test_put_file_then_read_whole_and_ranges(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 17)
    digest = sha(data)
    assert not store.exists(digest) and store.size(digest) is None
    path = staged(store, data, tmp_path)
    store.put_file(digest, path)
    assert not path.exists(), "put_file consumes its file"
    assert store.exists(digest) and store.size(digest) == len(data)
    assert b"".join(store.read_range(digest)) == data
    assert b"".join(store.read_range(digest, 5, 1000)) == data[5:1000]
    assert b"".join(store.read_range(digest, MIB + 3)) == data[MIB + 3 :]
    assert b"".join(store.read_range(digest, 10, 10)) == b""
    out = tmp_path / "copy"
    store.copy_to(digest, out)
    assert out.read_bytes() == data


def test_existing_content_is_kept_and_delete_is_idempotent(store: BlobStore, tmp_path: Path) -> None:
    data = b"same content " * 1000
    digest = sha(data)
    store.put_file(digest, staged(store, data, tmp_path))
    again = staged(store, data, tmp_path)
    store.put_file(digest, again)
    assert not again.exists()
    assert b"".join(store.read_range(digest)) == data
    assert digest in {b.sha256 for b in store.iter_blobs()}
    store.delete(digest)
    store.delete(digest)
    assert not store.exists(digest)
    assert digest not in {b.sha256 for b in store.iter_blobs()}


def test_retire_hides_a_blob_at_once_and_its_call_frees_the_bytes(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(MIB + 5)
    digest = sha(data)
    other = b"stays " * 100
    store.put_file(digest, staged(store, data, tmp_path))
    store.put_file(sha(other), staged(store, other, tmp_path))
    free = store.retire(digest)
    assert not store.exists(digest) and store.size(digest) is None
    assert {b.sha256 for b in store.iter_blobs()} == {sha(other)}
    free()
    free()  # freeing twice is harmless
    assert not store.exists(digest)
    store.retire(sha(b"never stored"))()  # nothing there: nothing to free, no error
    assert b"".join(store.read_range(sha(other))) == other
    if isinstance(store, LocalBlobStore):
        assert not any(store.blobs_dir.rglob("*" + digest + "*")), "the file is gone from the disk"


def test_a_local_reader_keeps_its_open_file_and_a_crash_leaves_nothing_retired(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", tmp_path / "uploads")
    data = os.urandom(2 * MIB)
    digest = sha(data)
    store.put_file(digest, staged(store, data, tmp_path))
    with open(store.blob_path(digest), "rb") as reader:
        head = reader.read(1000)
        store.retire(digest)()
        assert head + reader.read() == data, "a download in progress reads on, as after an unlink"
    kept = os.urandom(1000)
    store.put_file(sha(kept), staged(store, kept, tmp_path))
    store.retire(sha(kept))  # the hub dies before it frees the bytes
    assert any((tmp_path / "blobs" / "retired").iterdir())
    reopened = LocalBlobStore(tmp_path / "blobs", tmp_path / "uploads")
    assert not any((tmp_path / "blobs" / "retired").iterdir()) and not reopened.exists(sha(kept))
    assert list(reopened.iter_blobs()) == []


def test_iter_blobs_lists_every_blob_with_its_size(store: BlobStore, tmp_path: Path) -> None:
    contents = [b"a" * 10, b"b" * 2000, os.urandom(MIB)]
    for data in contents:
        store.put_file(sha(data), staged(store, data, tmp_path))
    listed = {b.sha256: b for b in store.iter_blobs()}
    assert {d: b.size for d, b in listed.items()} == {sha(data): len(data) for data in contents}
    assert all(abs(b.modified - time.time()) < 600 for b in listed.values())


def test_put_stream_checks_the_hash_and_stores_nothing_on_mismatch(store: BlobStore) -> None:
    data = os.urandom(100_000)
    store.put_stream(sha(data), io.BytesIO(data))
    assert b"".join(store.read_range(sha(data))) == data
    wrong = sha(b"something else")
    with pytest.raises(ValueError, match="hashes to"):
        store.put_stream(wrong, io.BytesIO(data))
    assert not store.exists(wrong)
    assert list(store.uploads_dir.iterdir()) == [], "no staging file is left behind"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "abc", "g" * 64])
def test_names_that_are_not_hashes_are_refused(store: BlobStore, bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        store.exists(bad)
    with pytest.raises(ValueError):
        store.put_file(bad, staged(store, b"x", tmp_path))
    with pytest.raises(ValueError):
        store.partial_path("../" + bad)
    assert list(store.iter_blobs()) == []


def test_commit_moves_a_verified_partial_upload_into_the_store(store: BlobStore) -> None:
    data = os.urandom(50_000)
    uid = "u" * 32
    store.start(uid)
    with open(store.partial_path(uid), "ab") as f:
        f.write(data[:20_000])
    assert store.received(uid) == 20_000
    with open(store.partial_path(uid), "ab") as f:
        f.write(data[20_000:])
    assert store.hash_partial(uid) == sha(data)
    store.commit(uid, sha(data))
    assert store.received(uid) == 0 and not store.partial_path(uid).exists()
    assert b"".join(store.read_range(sha(data))) == data


def test_presigned_get_is_a_working_signed_url_where_the_backend_presigns(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    store.put_file(sha(data), staged(store, data, tmp_path))
    url = store.presigned_get(sha(data), 60, filename="model.safetensors")
    if not store.presigns:
        assert url is None
        return
    assert url is not None
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == data
    assert "model.safetensors" in r.headers.get("content-disposition", "")
    r = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    tampered = url.replace("Signature=", "Signature=0")
    assert httpx.get(tampered).status_code == 403
    assert httpx.get(url.split("?")[0]).status_code == 403, "the bucket is not public"


def test_direct_multipart_upload_resumes_and_verifies(store: BlobStore) -> None:
    part = 5 * MIB
    data = os.urandom(2 * part + 1234)
    uid = "d" * 32
    if not store.presigns:
        with pytest.raises(NotImplementedError):
            store.direct_upload_start(uid, len(data), part)
        return
    store.direct_upload_start(uid, len(data), part)
    parts = store.direct_upload_parts(uid, len(data), part, 60)
    assert [(p.number, p.offset, p.size) for p in parts] == [(1, 0, part), (2, part, part), (3, 2 * part, 1234)]
    assert store.direct_upload_received(uid, len(data), part) == 0
    assert httpx.put(parts[0].url, content=data[:part]).status_code == 200
    assert store.direct_upload_received(uid, len(data), part) == part
    # Part 3 before part 2: received stays at the first gap.
    assert httpx.put(parts[2].url, content=data[2 * part :]).status_code == 200
    assert store.direct_upload_received(uid, len(data), part) == part
    again = store.direct_upload_parts(uid, len(data), part, 60)
    assert httpx.put(again[1].url, content=data[part : 2 * part]).status_code == 200
    assert store.direct_upload_received(uid, len(data), part) == len(data)
    landed, actual = store.direct_upload_finish(uid, sha(data), len(data))
    assert (landed, actual) == (len(data), sha(data))
    assert b"".join(store.read_range(sha(data))) == data
    assert list(store.stale_direct_uploads(time.time() + 60)) == []


def test_direct_upload_with_wrong_bytes_stores_nothing(store: BlobStore) -> None:
    part = 5 * MIB
    if not store.presigns:
        with pytest.raises(NotImplementedError):
            store.direct_upload_finish("e" * 32, sha(b"x"), part + 10)
        return
    data = os.urandom(part + 10)
    uid = "e" * 32
    store.direct_upload_start(uid, len(data), part)
    parts = store.direct_upload_parts(uid, len(data), part, 60)
    assert httpx.put(parts[0].url, content=data[:part]).status_code == 200
    assert httpx.put(parts[1].url, content=b"X" * 10).status_code == 200
    landed, actual = store.direct_upload_finish(uid, sha(data), len(data))
    assert landed == len(data) and actual != sha(data)
    assert not store.exists(sha(data)) and actual is not None and not store.exists(actual)
    assert list(store.iter_blobs()) == []


def test_abandoned_uploads_expire(store: BlobStore, tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    from fedpact.hub.tables import Base

    Base.metadata.create_all(db.engine)
    store.start("orphan" + "x" * 20)
    if store.presigns:
        store.direct_upload_start("direct" + "y" * 20, 6 * MIB, 5 * MIB)
    assert expire_uploads(db, store, ttl_s=3600) == 0
    assert store.partial_path("orphan" + "x" * 20).exists(), "fresh uploads stay"
    expire_uploads(db, store, ttl_s=0)
    assert not store.partial_path("orphan" + "x" * 20).exists()
    assert list(store.stale_direct_uploads(time.time() + 60)) == []
    db.dispose()


def test_unknown_or_malformed_store_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BlobStoreError, match="no known backend"):
        open_blob_store("ftp://host/x", tmp_path)
    with pytest.raises(BlobStoreError, match="file:///"):
        open_blob_store("file://host/x", tmp_path)
    with pytest.raises(BlobStoreError, match="unknown S3 blob store option"):
        open_blob_store("s3://bucket?endpiont=http://127.0.0.1:1", tmp_path)
    with pytest.raises(BlobStoreError, match="both access_key and secret_key"):
        open_blob_store("s3://bucket?endpoint=http://127.0.0.1:1&access_key=k", tmp_path)
    local = open_blob_store(f"file://{tmp_path / 'elsewhere'}", tmp_path)
    assert isinstance(local, LocalBlobStore) and local.blobs_dir == tmp_path / "elsewhere"


def test_s3_credentials_come_from_the_standard_aws_variables(
    seaweedfs: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    from seaweedfs import ACCESS_KEY, SECRET_KEY

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    store = open_blob_store(f"s3://fedpact-envcreds?endpoint={seaweedfs.endpoint}", tmp_path)
    store.put_stream(sha(b"env"), io.BytesIO(b"env"))
    assert store.exists(sha(b"env"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        open_blob_store(f"s3://fedpact-envcreds?endpoint={seaweedfs.endpoint}", tmp_path)


def test_the_generic_streamed_download_serves_whole_blobs_and_ranges(store: BlobStore, tmp_path: Path) -> None:
    """What a backend without its own download answer serves (BlobStore.download)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    data = os.urandom(3 * MIB + 5)
    store.put_file(sha(data), staged(store, data, tmp_path))

    def blob(request: Request) -> Response:
        return BlobStore.download(store, request.path_params["sha"], filename="w.bin")

    app = Starlette(routes=[Route("/{sha}", blob, methods=["GET", "HEAD"])])

    async def check() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            r = await client.get(f"/{sha(data)}")
            assert r.status_code == 200 and r.content == data
            assert 'filename="w.bin"' in r.headers["content-disposition"]
            r = await client.get(f"/{sha(data)}", headers={"Range": f"bytes={MIB}-"})
            assert r.status_code == 206 and r.content == data[MIB:]
            assert r.headers["content-range"] == f"bytes {MIB}-{len(data) - 1}/{len(data)}"
            r = await client.head(f"/{sha(data)}")
            assert r.status_code == 200 and r.headers["content-length"] == str(len(data)) and r.content == b""
            assert (await client.get(f"/{sha(b'absent')}")).status_code == 500
            for past_the_end in (f"bytes={len(data)}-", f"bytes={len(data) + 10}-{len(data) + 20}"):
                r = await client.get(f"/{sha(data)}", headers={"Range": past_the_end})
                assert r.status_code == 416 and r.content == b"", past_the_end
                assert r.headers["content-range"] == f"bytes */{len(data)}"
            r = await client.get(f"/{sha(data)}", headers={"Range": "bytes=9-3"})  # not a range: ignored
            assert r.status_code == 200 and r.content == data

    run_coroutine(check())


def test_prepare_then_commit_stores_the_blob_even_if_a_deletion_raced(store: BlobStore) -> None:
    data = os.urandom(70_000)
    for uid in ("p" * 32, "q" * 32):
        store.start(uid)
        with open(store.partial_path(uid), "ab") as f:
            f.write(data)
    store.prepare("p" * 32, sha(data))
    store.commit("p" * 32, sha(data))
    assert b"".join(store.read_range(sha(data))) == data
    store.prepare("q" * 32, sha(data))
    store.delete(sha(data))  # another task's deletion between prepare and commit
    store.commit("q" * 32, sha(data))
    assert b"".join(store.read_range(sha(data))) == data
    assert not store.partial_path("q" * 32).exists()
