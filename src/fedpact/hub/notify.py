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


class Notifier(ABC):
    """Per-task wake-ups between request handlers."""

    @abstractmethod
    def mark(self, task_id: int) -> int:
        """The task's current notification count, to pass to :meth:`wait` as ``since``."""

    @abstractmethod
    async def wait(self, task_id: int, timeout: float, since: int | None = None) -> bool:
        """Wait up to ``timeout`` s for a notification of ``task_id`` newer than ``since``.

        Returns True if one arrived (or already had), False on timeout.
        """

    @abstractmethod
    def notify(self, task_id: int) -> None:
        """Wake the task's waiters; safe to call from any thread."""

    @property
    def trusted(self) -> bool:
        """Whether every wake-up reaches this process, so waiters need only a rare safety re-check."""
        return True

    async def close(self) -> None:
        """Release connections; the in-process notifier holds none."""


class AsyncioNotifier(Notifier):
    """An in-process notifier bound to the event loop that serves the requests.

    Counters only change on the loop's thread (``notify`` hops there with
    ``call_soon_threadsafe``), so ``mark`` and ``wait`` never see a half-made change.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counts: dict[int, int] = {}
        self._events: dict[int, asyncio.Event] = {}
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loop = loop

    def mark(self, task_id: int) -> int:
        return self._counts.get(task_id, 0)

    async def wait(self, task_id: int, timeout: float, since: int | None = None) -> bool:
        if self._loop is None:
            self.bind(asyncio.get_running_loop())
        if since is not None and self._counts.get(task_id, 0) > since:
            return True
        event = self._events.get(task_id)
        if event is None:
            event = self._events[task_id] = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), timeout=max(0.0, timeout))
            return True
        except TimeoutError:
            return False

    def notify(self, task_id: int) -> None:
        with self._lock:
            loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._fire, task_id)
        except RuntimeError:
            pass  # the loop is shutting down; nobody is left to wake

    def _fire_all(self) -> None:
        """Wake every waiter of every task (on the loop's thread): wake-ups may have been lost."""
        for task_id in list(self._events) + list(self._counts):
            self._fire(task_id)

    def _fire(self, task_id: int) -> None:
        self._counts[task_id] = self._counts.get(task_id, 0) + 1
        event = self._events.pop(task_id, None)
        if event is not None:
            event.set()
