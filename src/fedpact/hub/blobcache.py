"""Recent small blobs in memory, and the response that sends one in a single write.

A round moves the same few blobs many times: the broadcast is read by every participant,
each update is written once and read back by the aggregator. Serving those from a file
costs a stat, an open and a read per MiB, each a hop to a worker thread; from memory it
is one write to the socket. Blobs are named by their content, so a cached copy can never
be stale on any replica; what is cached is only ever a blob already stored and verified,
and a request is served from here only after the route checked that the task holds it
and the caller may read it. Models above ``MAX_ITEM_BYTES`` are never cached: the hub
never holds a large model in memory.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import NamedTuple

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

#: The largest blob kept in memory: a relay payload of a typical model, not a large model.
MAX_ITEM_BYTES = 8 * 1024 * 1024
#: The memory all cached blobs together may take (the least recently used go first).
MAX_TOTAL_BYTES = 64 * 1024 * 1024


#: A blob in memory: its bytes as received, in pieces (never joined: joining 4 MB costs a copy).
Pieces = tuple[bytes, ...]


class Cached(NamedTuple):
    """A cached blob: its bytes, and their checksum when it was taken with the sha256 (common/checksums.py)."""

    pieces: Pieces
    checksum: str | None
    size: int


class BlobCache:
    """A thread-safe LRU of blob bytes by sha256, bounded in bytes."""

    def __init__(self, max_item: int = MAX_ITEM_BYTES, max_total: int = MAX_TOTAL_BYTES) -> None:
        self.max_item = max_item
        self.max_total = max_total
        self._items: OrderedDict[str, Cached] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def get(self, sha256: str) -> Cached | None:
        with self._lock:
            item = self._items.get(sha256)
            if item is None:
                return None
            self._items.move_to_end(sha256)
            return item

    def put(self, sha256: str, pieces: Pieces, checksum: str | None) -> None:
        """Keep a stored blob's bytes (immutable pieces, so nothing can change them afterwards),
        with the checksum taken of them as their sha256 was checked (None: none was)."""
        size = sum(len(p) for p in pieces)
        if size > self.max_item or self.max_total <= 0:
            return
        with self._lock:
            if sha256 in self._items:
                self._items.move_to_end(sha256)
                return
            self._items[sha256] = Cached(pieces, checksum, size)
            self._total += size
            while self._total > self.max_total:
                _, old = self._items.popitem(last=False)
                self._total -= old.size

    def discard(self, sha256: str) -> None:
        with self._lock:
            item = self._items.pop(sha256, None)
            if item is not None:
                self._total -= item.size

    @property
    def total_bytes(self) -> int:
        return self._total


class MemoryBlob(Response):
    """A blob from memory, sent as its pieces, honouring a single ``Range: bytes=a-b`` (416 past the end)."""

    def __init__(self, pieces: Pieces, headers: dict[str, str] | None = None) -> None:
        super().__init__(media_type="application/octet-stream", headers=headers)
        self.pieces = pieces

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = sum(len(p) for p in self.pieces)
        start, end, status = 0, size, 200
        for name, value in scope.get("headers", []):
            if name == b"range":
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", value.decode("latin-1").strip())
                if m and int(m.group(1)) >= size:
                    headers416 = [(b"content-range", f"bytes */{size}".encode()), (b"content-length", b"0")]
                    await send({"type": "http.response.start", "status": 416, "headers": headers416})
                    await send({"type": "http.response.body", "body": b""})
                    return
                if m and (not m.group(2) or int(m.group(2)) >= int(m.group(1))):
                    start = int(m.group(1))
                    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                    status = 206
        headers: list[tuple[bytes, bytes]] = [
            (k, v) for k, v in self.raw_headers if k not in (b"content-length",)
        ]
        headers += [(b"content-length", str(end - start).encode()), (b"accept-ranges", b"bytes")]
        if status == 206:
            headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        body = list(_slices(self.pieces, start, end))
        for i, piece in enumerate(body):
            await send({"type": "http.response.body", "body": piece, "more_body": i < len(body) - 1})
        if not body:
            await send({"type": "http.response.body", "body": b""})


def _slices(pieces: Pieces, start: int, end: int) -> Iterator[bytes]:
    """The bytes [start, end) of the pieces laid end to end: whole pieces as they are, edges sliced."""
    at = 0
    for p in pieces:
        lo, hi = max(start - at, 0), min(end - at, len(p))
        if lo < hi:
            yield p if (lo, hi) == (0, len(p)) else p[lo:hi]
        at += len(p)
        if at >= end:
            return
