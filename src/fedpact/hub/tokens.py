"""A short-lived, in-process memory of verified tokens.

Every request carries a bearer token, and looking it up was one database round trip per
request, the largest fixed cost of a poll or a message. Verified tokens are remembered for
``ttl_s`` seconds (``token_cache_s`` in the hub's settings). Logging out forgets the token
in this process at once, and replicas joined by a broker tell each other (hub.broker); a
replica that misses the message (its broker connection is down) or runs without a broker
beside another hub process may accept a revoked token for at most ``ttl_s`` seconds.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Generic, TypeVar

P = TypeVar("P")


class TokenCache(Generic[P]):
    def __init__(self, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[P, datetime, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str, now: datetime) -> P | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            principal, expires_at, cached_at = entry
            if expires_at <= now or time.monotonic() - cached_at > self.ttl_s:
                del self._entries[digest]
                return None
            return principal

    def put(self, digest: str, principal: P, expires_at: datetime) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[digest] = (principal, expires_at, time.monotonic())

    def forget(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)
