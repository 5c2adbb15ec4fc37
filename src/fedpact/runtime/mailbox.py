"""Reading one mailbox with at-least-once semantics.

The reader starts from the hub's acknowledged cursor (or from the beginning), and
acknowledges a batch only after it has been handled, so a process that crashes
mid-batch sees the same messages again when it comes back.
"""

from __future__ import annotations

import logging
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

    def fetch(self, wait: float) -> list[Message]:
        """The next batch; fetching acknowledges the previous one, which the caller has handled."""
        out = self.client.read_mailbox(
            self.task_id, self.address, after=self.cursor, wait=wait, ack=bool(self.cursor)
        )
        self.cursor = out["cursor"]
        self.task_status = out.get("task_status")
        return [Message(m, self.client, self.task_id) for m in out["messages"]]

    def ack(self) -> None:
        if self.cursor:
            self.client.ack(self.task_id, self.address, self.cursor)
