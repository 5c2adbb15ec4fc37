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
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

#: The largest blob kept in memory: a relay payload of a typical model, not a large model.
MAX_ITEM_BYTES = 8 * 1024 * 1024
#: The memory all cached blobs together may take (the least recently used go first).
MAX_TOTAL_BYTES = 64 * 1024 * 1024


class BlobCache:
    """A thread-safe LRU of blob bytes by sha256, bounded in bytes."""

    def __init__(self, max_item: int = MAX_ITEM_BYTES, max_total: int = MAX_TOTAL_BYTES) -> None:
        self.max_item = max_item
        self.max_total = max_total
        self._items: OrderedDict[str, bytes | bytearray] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def get(self, sha256: str) -> bytes | bytearray | None:
        with self._lock:
            data = self._items.get(sha256)
            if data is not None:
                self._items.move_to_end(sha256)
            return data

    def put(self, sha256: str, data: bytes | bytearray) -> None:
        """Keep ``data``, which nobody may change afterwards (a received body is handed over, not copied)."""
        if len(data) > self.max_item or self.max_total <= 0:
            return
        with self._lock:
            if sha256 in self._items:
                self._items.move_to_end(sha256)
                return
            self._items[sha256] = data
            self._total += len(data)
            while self._total > self.max_total:
                _, old = self._items.popitem(last=False)
                self._total -= len(old)

    def discard(self, sha256: str) -> None:
        with self._lock:
            old = self._items.pop(sha256, None)
            if old is not None:
                self._total -= len(old)

    @property
    def total_bytes(self) -> int:
        return self._total


class MemoryBlob(Response):
    """A blob from memory in one body message, honouring a single ``Range: bytes=a-b`` (416 past the end)."""

    def __init__(self, data: bytes | bytearray, headers: dict[str, str] | None = None) -> None:
        super().__init__(media_type="application/octet-stream", headers=headers)
        self.data = data

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = len(self.data)
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
        body: Any = b"" if scope.get("method") == "HEAD" else (
            self.data if (start, end) == (0, size) else bytes(memoryview(self.data)[start:end])
        )
        await send({"type": "http.response.body", "body": body})
