"""The content-addressed blob store on local disk.

Finished blobs live at ``blobs/<sha[:2]>/<sha>`` and are only ever created by an atomic
rename of a fully verified file, so a reader never sees a partial blob and a crash
mid-upload leaves nothing but a partial file under ``uploads/`` to resume from. One file
serves every task and model that references the same content.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from starlette.responses import FileResponse

CHUNK = 1024 * 1024
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class BlobStore:
    def __init__(self, blobs_dir: Path, uploads_dir: Path) -> None:
        self.blobs_dir = blobs_dir
        self.uploads_dir = uploads_dir
        blobs_dir.mkdir(parents=True, exist_ok=True)
        uploads_dir.mkdir(parents=True, exist_ok=True)

    def blob_path(self, sha256: str) -> Path:
        if not SHA256_RE.match(sha256):
            raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
        return self.blobs_dir / sha256[:2] / sha256

    def partial_path(self, upload_id: str) -> Path:
        if not UPLOAD_ID_RE.match(upload_id):
            raise ValueError(f"not an upload id: {upload_id!r}")
        return self.uploads_dir / upload_id

    def has(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

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
        h = hashlib.sha256()
        with open(self.partial_path(upload_id), "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

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
        dst = self.blob_path(sha256)
        if dst.is_file():
            src.unlink(missing_ok=True)
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)

    def delete(self, sha256: str) -> None:
        self.blob_path(sha256).unlink(missing_ok=True)


class BlobResponse(FileResponse):
    """A blob streamed in 1 MiB reads instead of Starlette's 64 KiB.

    Each read is a hop to a worker thread; at 64 KiB a 4 MB model costs 64 hops, which
    was most of the hub's CPU time in a round.
    """

    chunk_size = 1024 * 1024
