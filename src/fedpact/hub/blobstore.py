"""The content-addressed blob store: one interface, a backend per kind of storage.

A blob is named by the sha256 of its bytes, so one stored copy serves every task and
model that references the same content, and a blob is only ever written whole and
verified: a reader never sees a partial blob. Uploads that pass through the hub are
staged as partial files under the hub's own ``uploads/`` directory (the received length
is the partial file's length, so a broken connection resumes from what arrived) and are
handed to the backend only once their hash matches.

Backends register a URL scheme in ``BACKENDS``; ``open_blob_store`` picks one from the
hub's ``--blob-store`` URL. A backend module is imported only when its scheme is used, so
the embedded hub never needs boto3.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from starlette.responses import FileResponse, Response

from fedpact.common import checksums
from fedpact.common.digests import SHA256_RE

CHUNK = 1024 * 1024
UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

#: URL scheme -> "module:class" of the backend; a new backend is one file plus a line here.
BACKENDS: dict[str, str] = {
    "file": "fedpact.hub.blobstore_local:LocalBlobStore",
    "s3": "fedpact.hub.blobstore_s3:S3BlobStore",
}


class BlobStoreError(ValueError):
    """A ``--blob-store`` URL that names no backend or misses a required part."""


@dataclass(frozen=True)
class StoredBlob:
    """One blob as the backend lists it, for garbage collection."""

    sha256: str
    size: int
    #: seconds since the epoch; a blob younger than the GC grace period is never reclaimed
    modified: float


@dataclass(frozen=True)
class DirectPart:
    """One part of a direct (presigned) upload: PUT the bytes [offset, offset+size) to ``url``."""

    number: int
    offset: int
    size: int
    url: str


def redact(url: str) -> str:
    """``url`` with any secret key hidden, for error messages and logs."""
    return re.sub(r"(secret_key=)[^&]*", r"\1***", url)


def check_sha(sha256: str) -> str:
    if not SHA256_RE.fullmatch(sha256):
        raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
    return sha256


def nothing_to_free() -> None:
    """What :meth:`BlobStore.retire` leaves to do when nothing is left to free."""


class BlobStore(ABC):
    """Where finished blobs live, plus the hub-local staging of uploads in progress.

    Subclasses implement the storage of finished blobs; staging is shared because it is
    the same for every backend (a file that grows as chunks arrive).
    """

    #: True when clients can move bytes to and from the backend directly (presigned URLs).
    presigns: bool = False
    #: Short name shown by the health endpoint and logs.
    kind: str = "?"

    def __init__(self, uploads_dir: Path) -> None:
        self.uploads_dir = uploads_dir
        uploads_dir.mkdir(parents=True, exist_ok=True)

    # -- finished blobs (the backend) -----------------------------------------------------
    @abstractmethod
    def problem(self) -> str | None:
        """Why the backend cannot serve now, or None: what the health endpoint reports.

        Cheap and bounded in time, because the load balancer asks every second.
        """

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def size(self, sha256: str) -> int | None:
        """The stored blob's length, or None when it is not stored."""

    @abstractmethod
    def put_file(self, sha256: str, path: Path) -> None:
        """Take a verified file into the store; ``path`` is consumed (moved or deleted).

        Storing content that is already there keeps the stored copy.
        """

    def put_stream(self, sha256: str, stream: BinaryIO) -> None:
        """Store the bytes read from ``stream``, which must hash to ``sha256``.

        Staged through a partial file so the hash is checked before anything is stored.
        """
        check_sha(sha256)
        partial = "put-" + hashlib.sha256(os.urandom(16)).hexdigest()[:32]
        path = self.partial_path(partial)
        digest = hashlib.sha256()
        try:
            with open(path, "wb") as f:
                while block := stream.read(CHUNK):
                    digest.update(block)
                    f.write(block)
            if digest.hexdigest() != sha256:
                raise ValueError(f"the stream hashes to {digest.hexdigest()}, not {sha256}; nothing was stored")
            self.put_file(sha256, path)
        finally:
            path.unlink(missing_ok=True)

    @abstractmethod
    def read_range(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes [start, end) of a stored blob (to its end when ``end`` is None), in pieces."""

    @abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove a blob; removing one that is not stored is not an error."""

    def retire(self, sha256: str) -> Callable[[], None]:
        """Make a blob unreadable now and return the call that frees its bytes.

        Reclaiming checks that nothing references a blob and removes it under a write
        session (an upload of the same content must not commit in between); only the cheap
        first half belongs there, and the returned call runs after the session ends. This
        default removes the blob at once; the local store renames it out of the way, so
        the slow part (unlinking a file of many pages) runs outside the session.
        """
        self.delete(sha256)
        return nothing_to_free

    @abstractmethod
    def iter_blobs(self) -> Iterator[StoredBlob]:
        """Every stored blob, for the garbage collector."""

    def read_all(self, sha256: str) -> bytes | None:
        """A stored blob's bytes in one piece (small blobs only), or None when it is not stored."""
        try:
            return b"".join(self.read_range(sha256))
        except FileNotFoundError:
            return None

    def copy_to(self, sha256: str, dest: Path) -> None:
        """Write a stored blob to a local file (the hosted aggregator's evaluation data)."""
        with open(dest, "wb") as f:
            f.writelines(self.read_range(sha256))

    def download(self, sha256: str, *, filename: str | None = None, headers: dict[str, str] | None = None) -> Response:
        """The HTTP answer to a download: the bytes, or a redirect to a presigned URL."""
        return StreamedBlob(self, sha256, filename=filename, headers=headers)

    def prepare(self, upload_id: str, sha256: str) -> None:
        """Copy a verified partial file to the backend ahead of :meth:`commit`.

        Called before the database transaction that records the blob, so a slow backend
        (a network upload) does not hold the write lock; :meth:`commit` then only checks
        that the content is there (and sends it again if a deletion raced in between).
        A no-op where committing is a local rename.
        """

    # -- direct transfers (backends that presign) -----------------------------------------
    def presigned_get(self, sha256: str, expires_s: int, filename: str | None = None) -> str | None:
        """A URL anyone can GET the blob from until it expires, or None if the backend cannot."""
        return None

    def direct_upload_start(self, upload_id: str, size: int, part_size: int) -> None:
        raise NotImplementedError(f"the {self.kind} blob store takes uploads through the hub only")

    def direct_upload_parts(self, upload_id: str, size: int, part_size: int, expires_s: int) -> list[DirectPart]:
        raise NotImplementedError(f"the {self.kind} blob store takes uploads through the hub only")

    def direct_upload_received(self, upload_id: str, size: int, part_size: int) -> int:
        raise NotImplementedError(f"the {self.kind} blob store takes uploads through the hub only")

    def direct_upload_finish(self, upload_id: str, sha256: str, size: int) -> tuple[int, str | None]:
        """Assemble the parts, check size and sha256, and store the blob if both match.

        Returns (bytes that landed, their sha256 or None when the size was already wrong);
        a mismatch stores nothing and the caller reports it.
        """
        raise NotImplementedError(f"the {self.kind} blob store takes uploads through the hub only")

    def direct_upload_abort(self, upload_id: str) -> None:
        """Drop a direct upload's parts; dropping one that is gone is not an error."""

    def stale_direct_uploads(self, older_than: float) -> Iterator[str]:
        """Upload ids of direct uploads started before ``older_than`` (epoch seconds)."""
        return iter(())

    # -- staging of uploads that pass through the hub -------------------------------------
    def partial_path(self, upload_id: str) -> Path:
        if not UPLOAD_ID_RE.match(upload_id):
            raise ValueError(f"not an upload id: {upload_id!r}")
        return self.uploads_dir / upload_id

    def has(self, sha256: str) -> bool:
        return self.exists(sha256)

    def received(self, upload_id: str) -> int:
        """Bytes received so far: the partial file's length is the source of truth."""
        try:
            return self.partial_path(upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    def start(self, upload_id: str) -> None:
        self.partial_path(upload_id).touch(exist_ok=True)

    def truncate(self, upload_id: str, size: int) -> None:
        with open(self.partial_path(upload_id), "r+b") as f:
            f.truncate(size)

    def discard(self, upload_id: str) -> None:
        self.partial_path(upload_id).unlink(missing_ok=True)

    def hash_partial(self, upload_id: str) -> str:
        """The partial file's sha256; the file gets its checksum attribute on the way (see Received.stage)."""
        digests = checksums.Digests()
        path = self.partial_path(upload_id)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digests.update(chunk)
        checksums.write_xattr(path, digests.checksum())
        return digests.sha256()

    def sync(self, upload_id: str) -> None:
        """Force a partial file to disk before it is committed.

        Done outside any database transaction: flushing 4 MB costs ~10 ms here, and every
        other writer would wait for it. Relay payloads skip it (see routes/relay.py).
        """
        with open(self.partial_path(upload_id), "rb") as f:
            os.fsync(f.fileno())

    def commit(self, upload_id: str, sha256: str) -> None:
        """Move a verified partial file into the store (or drop it if the content is there)."""
        src = self.partial_path(upload_id)
        try:
            self.put_file(check_sha(sha256), src)
        finally:
            src.unlink(missing_ok=True)

    def staged(self) -> Iterator[tuple[str, float]]:
        """(upload id, last modified) of every partial file, for expiring abandoned uploads."""
        for entry in os.scandir(self.uploads_dir):
            if entry.is_file() and UPLOAD_ID_RE.match(entry.name):
                try:
                    yield entry.name, entry.stat().st_mtime
                except FileNotFoundError:
                    continue


class StreamedBlob(Response):
    """A blob streamed from any backend, honouring a single ``Range: bytes=a-b`` request."""

    def __init__(
        self, store: BlobStore, sha256: str, *, filename: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(media_type="application/octet-stream", headers=headers)
        self.store = store
        self.sha256 = sha256
        if filename:
            self.headers["content-disposition"] = f'attachment; filename="{filename}"'

    async def __call__(self, scope, receive, send) -> None:
        from starlette.concurrency import iterate_in_threadpool
        from starlette.responses import StreamingResponse

        size = self.store.size(self.sha256)
        if size is None:
            resp: Response = Response(status_code=500, content="blob missing from the store")
            await resp(scope, receive, send)
            return
        start, end, status = 0, size, 200
        for name, value in scope.get("headers", []):
            if name == b"range":
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", value.decode("latin-1").strip())
                if m is None or (m.group(2) and int(m.group(2)) < int(m.group(1))):
                    continue  # not a single valid range: ignored, as RFC 9110 lets a server do
                if int(m.group(1)) >= size:  # starts past the end: unsatisfiable, as the memory cache answers
                    resp = Response(status_code=416, headers={"content-range": f"bytes */{size}"})
                    await resp(scope, receive, send)
                    return
                start = int(m.group(1))
                end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                status = 206
        headers = dict(self.headers)
        headers["content-length"] = str(end - start)
        headers["accept-ranges"] = "bytes"
        if status == 206:
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        if scope.get("method") == "HEAD":
            resp = Response(status_code=status, headers=headers)
        else:
            body = iterate_in_threadpool(self.store.read_range(self.sha256, start, end))
            resp = StreamingResponse(body, status_code=status, headers=headers)
        await resp(scope, receive, send)


class BlobResponse(FileResponse):
    """A blob file streamed in 1 MiB reads instead of Starlette's 64 KiB.

    Each read is a hop to a worker thread; at 64 KiB a 4 MB model costs 64 hops, which
    was most of the hub's CPU time in a round.
    """

    chunk_size = 1024 * 1024


def open_blob_store(url: str | None, data_dir: Path) -> BlobStore:
    """The backend a ``--blob-store`` URL names; None means local disk under ``data_dir``.

    ``file:///PATH`` keeps blobs under PATH; ``s3://BUCKET?endpoint=...`` in a bucket
    (see blobstore_s3). Uploads in progress are always staged under ``data_dir/uploads``.
    """
    uploads = data_dir / "uploads"
    if not url:
        url = f"file://{data_dir / 'blobs'}"
    scheme = url.split("://", 1)[0] if "://" in url else ""
    target = BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
        raise BlobStoreError(f"blob store URL {redact(url)!r} names no known backend; use one of {known}")
    module, cls = target.split(":")
    backend = getattr(importlib.import_module(module), cls)
    store: BlobStore = backend.from_url(url, uploads)
    return store
