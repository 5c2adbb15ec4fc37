"""Blobs as files on the hub's disk: the embedded default.

Finished blobs live at ``<dir>/<sha[:2]>/<sha>`` and are only ever created by an atomic
rename of a fully verified file, so a crash mid-upload leaves nothing but a partial file
to resume from. Downloads are served by the hub itself (sendfile-like, with ranges), or,
for a client on the hub's machine that can read this directory, not at all: it reads the
file (``local_token``, ``routes/localstore.py``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from starlette.responses import Response

from fedpact.common.digests import SHA256_RE
from fedpact.hub.blobstore import (
    BlobResponse,
    BlobStore,
    BlobStoreError,
    StoredBlob,
    check_sha,
    nothing_to_free,
)

READ = 1024 * 1024
#: A file in the blob directory whose content a client must read to prove it shares the
#: hub's filesystem (``routes/localstore.py``). Not a blob name, so no pass ever touches it.
TOKEN_FILE = ".fedpact-store"
#: Where :meth:`LocalBlobStore.retire` moves a blob before unlinking it; what a crash
#: leaves there goes when a store opens on the directory. Not a blob prefix (two hex digits).
RETIRED_DIR = "retired"


class LocalBlobStore(BlobStore):
    kind = "local"

    def __init__(self, blobs_dir: Path, uploads_dir: Path) -> None:
        super().__init__(uploads_dir)
        self.blobs_dir = blobs_dir
        self._token: str | None = None
        blobs_dir.mkdir(parents=True, exist_ok=True)
        self._retired = blobs_dir / RETIRED_DIR
        self._retired.mkdir(exist_ok=True)
        for left in os.scandir(self._retired):
            Path(left.path).unlink(missing_ok=True)

    @classmethod
    def from_url(cls, url: str, uploads_dir: Path) -> LocalBlobStore:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise BlobStoreError(f"a local blob store URL is file:///ABSOLUTE/PATH, not {url!r}")
        return cls(Path(parts.path), uploads_dir)

    def problem(self) -> str | None:
        if self.blobs_dir.is_dir() and os.access(self.blobs_dir, os.W_OK):
            return None
        return f"{self.blobs_dir} is missing or not writable"

    def local_token(self) -> str:
        """This directory's token, made once and then kept: whoever can read it reads this directory.

        Written whole to a temporary name, then hard-linked to its name, which fails if the
        name exists: threads and replicas sharing the directory that get here together all
        end up with the one token that was linked first.
        """
        if self._token is None:
            path = self.blobs_dir / TOKEN_FILE
            if not path.exists():
                tmp = self.blobs_dir / f"{TOKEN_FILE}.{secrets.token_hex(8)}"
                tmp.write_text(secrets.token_hex(32))
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink()
            self._token = path.read_text().strip()
        return self._token

    def blob_path(self, sha256: str) -> Path:
        return self.blobs_dir / check_sha(sha256)[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def size(self, sha256: str) -> int | None:
        try:
            return self.blob_path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def put_file(self, sha256: str, path: Path) -> None:
        dst = self.blob_path(sha256)
        if dst.is_file():
            path.unlink(missing_ok=True)
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dst)

    def read_range(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with open(self.blob_path(sha256), "rb") as f:
            f.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                block = f.read(READ if left is None else min(READ, left))
                if not block:
                    return
                if left is not None:
                    left -= len(block)
                yield block

    def read_all(self, sha256: str) -> bytes | None:
        try:
            return self.blob_path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, sha256: str) -> None:
        self.blob_path(sha256).unlink(missing_ok=True)

    def retire(self, sha256: str) -> Callable[[], None]:
        """Rename the file out of its name now (microseconds); the returned call unlinks it.

        Unlinking a 4 MB file frees a thousand cached pages: a pass that reclaimed a few
        rounds of updates held the write session for tens of milliseconds doing that.
        A reader that has the file open keeps reading it, as with an unlink.
        """
        gone = self._retired / f"{check_sha(sha256)}.{secrets.token_hex(4)}"
        try:
            os.rename(self.blob_path(sha256), gone)
        except FileNotFoundError:
            return nothing_to_free  # already gone
        return lambda: gone.unlink(missing_ok=True)

    def iter_blobs(self) -> Iterator[StoredBlob]:
        for sub in os.scandir(self.blobs_dir):
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub.path):
                if SHA256_RE.fullmatch(entry.name) and entry.is_file():
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    yield StoredBlob(entry.name, st.st_size, st.st_mtime)

    def download(self, sha256: str, *, filename: str | None = None, headers: dict[str, str] | None = None) -> Response:
        return BlobResponse(
            self.blob_path(sha256), media_type="application/octet-stream", filename=filename, headers=headers
        )
