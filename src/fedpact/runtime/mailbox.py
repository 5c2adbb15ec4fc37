"""Reading one mailbox with at-least-once semantics.

The reader starts from the hub's acknowledged cursor (or from the beginning), and
acknowledges a batch only after it has been handled, so a process that crashes
mid-batch sees the same messages again when it comes back.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

from fedpact.client.hub import HubClient
from fedpact.runtime.messages import meta_of

log = logging.getLogger("fedpact.runtime")


@dataclass
class Message:
    """A relay message with its body decoded lazily (blobs are fetched only when needed)."""

    raw: dict[str, Any]
    _client: HubClient
    _task: int
    _body: tuple[dict[str, Any], dict[str, Any]] | None = None

    @property
    def id(self) -> int:
        return int(self.raw["id"])

    @property
    def kind(self) -> str:
        return str(self.raw["kind"])

    @property
    def sender(self) -> str:
        return str(self.raw["sender"])

    @property
    def sender_name(self) -> str:
        return self.sender.split("/", 1)[1] if "/" in self.sender else self.sender

    @property
    def round(self) -> int:
        return int(self.raw.get("round") or 0)

    def body(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(meta, tensors); raises ValueError/TensorFormatError for a malformed body."""
        if self._body is None:
            # Decoded as it downloads: a model in a message is held once, in its arrays.
            decoded = self._client.message_tensors(self._task, self.raw)
            self._body = (meta_of(decoded[0]), decoded[1]) if decoded is not None else ({}, {})
        return self._body


class Mailbox:
    def __init__(self, client: HubClient, task_id: int, address: str, *, from_start: bool) -> None:
        self.client = client
        self.task_id = task_id
        self.address = address
        self.cursor: int | None = 0 if from_start else None
        #: The task's status as of the last fetch (the poll answer carries it).
        self.task_status: str | None = None

    def fetch(self, wait: float, *, ack: bool = True, via: HubClient | None = None) -> list[Message]:
        """The next batch; fetching acknowledges the previous one, which the caller has handled.

        ``ack=False`` when some of what was fetched is not handled yet (a reader that
        fetches ahead while bodies download): it is acknowledged by a later fetch. ``via``
        polls through another client (the messages still fetch their bodies through this one).
        """
        out = (via or self.client).read_mailbox(
            self.task_id, self.address, after=self.cursor, wait=wait, ack=ack and bool(self.cursor)
        )
        self.cursor = out["cursor"]
        self.task_status = out.get("task_status")
        return [Message(m, self.client, self.task_id) for m in out["messages"]]

    def ack(self) -> None:
        if self.cursor:
            self.client.ack(self.task_id, self.address, self.cursor)


class ReadAhead:
    """A mailbox read while the bodies of earlier messages download: one long-poll always out.

    The aggregator needs each update's body before it can take the update, and a body is
    a model: tens of milliseconds to download. Reading the mailbox only after the last
    batch's bodies had arrived left every update that came meanwhile waiting for a poll;
    here a poll runs in the background whenever bodies are downloading, each body starts
    downloading as soon as its message is seen, and :meth:`next` hands the messages over
    in arrival order, each once its body is there (a body that failed to download is
    fetched again, and its error reported, when the caller reads it).

    Messages are acknowledged only once handed over and handled: a poll that runs while
    some are still downloading does not acknowledge, the next one does.
    """

    def __init__(self, mailbox: Mailbox, downloads: Executor, wants_body: Callable[[Message], bool]) -> None:
        self.mailbox = mailbox
        self._downloads = downloads
        self._wants_body = wants_body
        self._changed = threading.Condition()
        self._queue: deque[tuple[Message, Future[None] | None]] = deque()
        self._poll: _Poll | None = None
        # The polls' own client: closing it cuts a poll still out when the reader is done,
        # which would otherwise wait out its long-poll (or a stopped hub) in the background.
        self._poller = mailbox.client.twin()

    def close(self) -> None:
        """Stop reading: a poll still out ends at its next answer, silently, and is dropped.

        Closing its client cannot interrupt a request that is waiting on the socket, but it
        ends the client's retries: if the hub goes away meanwhile (a notebook stopping its
        embedded hub after the run), the poll gives up at once instead of announcing an
        outage and retrying for minutes in the background.
        """
        self._poller.on_notice = lambda _text: None
        self._poller.close()

    def next(self, wait: float) -> list[Message]:
        """The messages ready to handle, in arrival order; waits up to ``wait`` s for one."""
        with self._changed:
            if self._poll is None:
                self._poll = _Poll(self.mailbox, self._poller, wait, ack=not self._queue, done=self._wake)
            self._changed.wait_for(self._ready, timeout=wait)
            poll = self._poll if self._poll.finished else None
        if poll is not None:
            self._poll = None
            if poll.error is not None:
                raise poll.error
            for msg in poll.batch:
                future = self._downloads.submit(_fetch_body, msg) if self._wants_body(msg) else None
                if future is not None:
                    future.add_done_callback(lambda _: self._wake())
                self._queue.append((msg, future))
            if self._queue and not self._head_ready():
                # Bodies are downloading: look for the next messages meanwhile.
                self._poll = _Poll(self.mailbox, self._poller, wait, ack=False, done=self._wake)
        out: list[Message] = []
        while self._queue and self._head_ready():
            out.append(self._queue.popleft()[0])
        return out

    def _head_ready(self) -> bool:
        future = self._queue[0][1]
        return future is None or future.done()

    def _ready(self) -> bool:
        return (self._poll is not None and self._poll.finished) or (bool(self._queue) and self._head_ready())

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()


class _Poll:
    """One long-poll of a mailbox in a daemon thread (a process may exit while it waits)."""

    def __init__(self, mailbox: Mailbox, via: HubClient, wait: float, *, ack: bool, done: Callable[[], None]) -> None:
        self.batch: list[Message] = []
        self.error: BaseException | None = None
        self.finished = False
        self._done = done
        self._thread = threading.Thread(target=self._run, args=(mailbox, via, wait, ack), name="fedpact-poll",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _run(self, mailbox: Mailbox, via: HubClient, wait: float, ack: bool) -> None:
        try:
            self.batch = mailbox.fetch(wait, ack=ack, via=via)
        except BaseException as exc:  # noqa: BLE001 - raised in the reader's thread by ReadAhead.next
            self.error = exc
        finally:
            self.finished = True
            self._done()


def _fetch_body(msg: Message) -> None:
    try:
        msg.body()
    except Exception:  # noqa: BLE001 - fetched again, and reported, when the message is handled
        pass
