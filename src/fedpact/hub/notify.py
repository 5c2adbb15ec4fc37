"""Wake long-polling mailbox readers when a task gets a new message.

A reader takes ``mark(task_id)`` *before* it queries the database and then waits with
``since=mark``: a message committed after the query bumps the counter past the mark, so
the wait returns at once instead of sleeping through a notification it raced with. The
notifier is a hint, never the source of truth. When it is :attr:`Notifier.trusted` (it sees
every wake-up that matters: the only hub on its database, or replicas connected through
the broker of ``hub.broker``) a waiting poll costs nothing until woken and re-checks the
database only every ``safety_recheck_s``; otherwise every ``recheck_interval_s``.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

#: Recipient of a broadcast: it wakes every participant's mailbox of the task.
BROADCAST = "participants"
PARTICIPANT_PREFIX = "participant/"


def reaches(recipient: str | None, address: str | None) -> bool:
    """Whether a notification for ``recipient`` concerns a reader of ``address`` (None: any)."""
    if recipient is None or address is None or recipient == address:
        return True
    return recipient == BROADCAST and address.startswith(PARTICIPANT_PREFIX)


class Notifier(ABC):
    """Per-mailbox wake-ups between request handlers.

    A notification names a task and, for a new message, its recipient; it wakes only the
    readers it concerns (:func:`reaches`). A message to the aggregator therefore wakes the
    aggregator's poll, not the thousand participants waiting for the next round, which
    would each re-query the database for nothing. ``recipient=None`` (a task's status
    changed) wakes every reader of the task; ``address=None`` waits for anything.
    """

    @abstractmethod
    def mark(self, task_id: int, address: str | None = None) -> int:
        """The reader's current notification count, to pass to :meth:`wait` as ``since``."""

    @abstractmethod
    async def wait(self, task_id: int, timeout: float, since: int | None = None, address: str | None = None) -> bool:
        """Wait up to ``timeout`` s for a notification for ``address`` of ``task_id`` newer than ``since``.

        Returns True if one arrived (or already had), False on timeout.
        """

    @abstractmethod
    def notify(self, task_id: int, recipient: str | None = None) -> None:
        """Wake the readers ``recipient``'s new message concerns; safe to call from any thread."""

    @property
    def trusted(self) -> bool:
        """Whether every wake-up reaches this process, so waiters need only a rare safety re-check."""
        return True

    def revoked(self, digest: str) -> None:
        """Tell the other replicas that the token with this digest no longer holds.

        They drop it from their token caches at once instead of after ``TokenCache.ttl_s``;
        one process alone has nobody to tell. Safe to call from any thread.
        """

    async def close(self) -> None:
        """Release connections; the in-process notifier holds none."""


class AsyncioNotifier(Notifier):
    """An in-process notifier bound to the event loop that serves the requests.

    Counters only change on the loop's thread (``notify`` hops there with
    ``call_soon_threadsafe``), and ``mark`` runs there too (the mailbox route is async), so
    a mark registers its reader before any notification that could concern it is counted.
    """

    def __init__(self) -> None:
        #: Called with a token digest another replica revoked (the hub's token cache forgets it).
        self.on_revoke: Callable[[str], None] = lambda digest: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counts: dict[int, dict[str | None, int]] = {}
        self._events: dict[int, dict[str | None, asyncio.Event]] = {}
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loop = loop

    def mark(self, task_id: int, address: str | None = None) -> int:
        return self._counts.setdefault(task_id, {}).setdefault(address, 0)

    async def wait(self, task_id: int, timeout: float, since: int | None = None, address: str | None = None) -> bool:
        if self._loop is None:
            self.bind(asyncio.get_running_loop())
        if since is not None and self._counts.get(task_id, {}).get(address, 0) > since:
            return True
        events = self._events.setdefault(task_id, {})
        event = events.get(address)
        if event is None:
            event = events[address] = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), timeout=max(0.0, timeout))
            return True
        except TimeoutError:
            return False

    def notify(self, task_id: int, recipient: str | None = None) -> None:
        with self._lock:
            loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._fire, task_id, recipient)
        except RuntimeError:
            pass  # the loop is shutting down; nobody is left to wake

    def _fire_all(self) -> None:
        """Wake every waiter of every task (on the loop's thread): wake-ups may have been lost."""
        for task_id in set(self._events) | set(self._counts):
            self._fire(task_id, None)

    def _fire(self, task_id: int, recipient: str | None) -> None:
        counts = self._counts.get(task_id)
        if counts:
            for address in counts:
                if reaches(recipient, address):
                    counts[address] += 1
        events = self._events.get(task_id)
        if events:
            for address in [a for a in events if reaches(recipient, a)]:
                events.pop(address).set()
