"""Throttling of failed logins and of registrations, per user name and per client address.

A sliding window of recent events per key, kept in this process's memory: enough to stop
password guessing and registration floods against one hub process. Several hub processes
behind a load balancer each keep their own windows (documented in docs/security.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from fastapi import HTTPException

#: Keys tracked at most; the oldest are dropped first, so memory stays bounded under a flood.
MAX_KEYS = 100_000


class Throttle:
    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= MAX_KEYS:
                self._events.pop(next(iter(self._events)))
            events = self._events[key] = deque()
        while events and events[0] <= now - self.window_s:
            events.popleft()
        return events

    def retry_after(self, key: str, limit: int) -> int | None:
        """Seconds until ``key`` may try again, or None if it is under ``limit`` events."""
        if limit <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            events = self._recent(key, now)
            if len(events) < limit:
                return None
            return max(1, math.ceil(events[-limit] + self.window_s - now))

    def add(self, key: str) -> None:
        with self._lock:
            self._recent(key, time.monotonic()).append(time.monotonic())

    def clear(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)


def too_many(what: str, setting: str, limit: int, window_s: float, retry_after: int) -> HTTPException:
    return HTTPException(
        429,
        f"too many {what} (limit {setting} = {limit} per {window_s:g} s); retry in {retry_after} s",
        headers={"Retry-After": str(retry_after), "X-Fedpact-Limit": setting},
    )
