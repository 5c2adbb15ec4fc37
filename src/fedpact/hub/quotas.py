"""Operator quotas: what one user may make the hub store, queue or run.

Each check runs inside the transaction that would create the thing it limits, so a
refused request changes nothing. A refusal names the limit and its value, so the user
knows what to ask the operator for; sizes answer 413 (the request is too large for
what is left) and counts 429 (come back when some have gone).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from sqlalchemy import ScalarSelect, bindparam, func, select
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from fedpact.hub.config import HubConfig
from fedpact.hub.tables import Blob, Cursor, Message, Task, Upload

BROADCAST = "participants"
PARTICIPANT_PREFIX = "participant/"


def quota_exceeded(status: int, setting: str, value: int, what: str) -> HTTPException:
    """The one shape of every quota refusal: the limit's setting name, its value, what to do."""
    headers = {"X-Fedpact-Limit": setting}
    if status == 429:
        headers["Retry-After"] = "60"
    return HTTPException(status, f"quota {setting} = {value} reached: {what}", headers=headers)


def check_tasks(s: Session, config: HubConfig, user_id: int) -> None:
    limit = config.max_tasks_per_user
    if limit <= 0:
        return
    count = s.scalar(select(func.count()).select_from(Task).where(Task.creator_id == user_id)) or 0
    if count >= limit:
        raise quota_exceeded(
            429, "max_tasks_per_user", limit, f"you created {count} tasks; delete finished ones to create more"
        )


def stored_bytes_columns() -> tuple[ScalarSelect[Any], ScalarSelect[Any]]:
    """The two sums :func:`stored_bytes` adds, as scalar subqueries bound by ``user_id``: a
    route that reads other things in the same statement passes them to
    :func:`check_stored_bytes` (``sums``)."""
    return (
        select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.uploaded_by == bindparam("user_id")).scalar_subquery(),
        select(func.coalesce(func.sum(Upload.size), 0)).where(Upload.created_by == bindparam("user_id")).scalar_subquery(),
    )


#: Both sums in one prepared statement: every update a participant sends checks it.
_STORED_BYTES = select(*stored_bytes_columns())


def stored_bytes(s: Session, user_id: int, sums: Sequence[int | None] | None = None) -> int:
    """Bytes this user stores: blobs they uploaded (per task) and uploads they opened.
    ``sums``: :func:`stored_bytes_columns` as the caller read them already."""
    if sums is None:
        sums = s.connection().execute(_STORED_BYTES, {"user_id": user_id}).one()
    return sum(int(part or 0) for part in sums)


def check_stored_bytes(
    s: Session, config: HubConfig, user_id: int, adding: int, sums: Sequence[int | None] | None = None
) -> None:
    """``sums``: :func:`stored_bytes_columns` as read by the caller in the same transaction."""
    limit = config.max_stored_bytes_per_user
    if limit <= 0:
        return
    used = stored_bytes(s, user_id, sums)
    if used + adding > limit:
        raise quota_exceeded(
            413,
            "max_stored_bytes_per_user",
            limit,
            f"you store {used} bytes and this would add {adding}; delete tasks you no longer need",
        )


def pending_messages(s: Session, task_id: int, recipient: str) -> int:
    """Messages in a mailbox that its reader has not acknowledged yet.

    A broadcast is pending until every participant who acknowledged anything has
    acknowledged it, so one silent participant cannot hide the queue of the others.
    """
    if recipient == BROADCAST:
        seen = select(func.min(Cursor.cursor)).where(
            Cursor.task_id == task_id, Cursor.address.startswith(PARTICIPANT_PREFIX)
        )
    else:
        seen = select(func.max(Cursor.cursor)).where(Cursor.task_id == task_id, Cursor.address == recipient)
    return pending_after(s, task_id, recipient, s.scalar(seen) or 0)


def pending_after(s: Session, task_id: int, recipient: str, acked: int) -> int:
    return (
        s.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.task_id == task_id, Message.recipient == recipient, Message.id > acked)
        )
        or 0
    )


def _pending_bound(s: Session, task_id: int, recipient: str, read: tuple[int | None, int | None] | None = None) -> int:
    """An upper bound on :func:`pending_messages` that costs two index look-ups, not a count.

    Ids are unique and increase, so a mailbox holds at most (newest id) - (its reader's
    cursor) unacknowledged messages. Counting them is linear in the queue: at a thousand
    participants every update would count the aggregator's queue of up to a thousand, a
    cost per round that grows with the square of the participants. ``read``: the two
    look-ups (:func:`mailbox_bound_columns`) when the caller made them already.
    """
    if recipient == BROADCAST:
        return INT_UNBOUNDED  # a broadcast's reader is every participant: count (the aggregator sends few)
    acked, newest = read if read is not None else s.connection().execute(
        _BOUND, {"task_id": task_id, "address": recipient}
    ).one()
    return max(0, (newest or 0) - (acked or 0))


INT_UNBOUNDED = 2**63


def mailbox_bound_columns(task_id: ColumnElement[int] | QueryableAttribute[int]) -> tuple[ScalarSelect[Any], ScalarSelect[Any]]:
    """The look-ups of :func:`_pending_bound` as scalar subqueries: the mailbox ``address``'s
    reader's cursor in the task ``task_id`` (a column to correlate with, or a parameter),
    and the newest message id."""
    return (
        select(func.max(Cursor.cursor))
        .where(Cursor.task_id == task_id, Cursor.address == bindparam("address"))
        .scalar_subquery(),
        select(func.max(Message.id)).scalar_subquery(),
    )


# Built once, both look-ups in one statement: the relay's every message runs it.
_BOUND = select(*mailbox_bound_columns(bindparam("task_id")))


def check_mailbox(
    s: Session, config: HubConfig, task_id: int, recipient: str, bound: tuple[int | None, int | None] | None = None
) -> None:
    """``bound``: :func:`mailbox_bound_columns` as read by the caller in the same transaction."""
    limit = config.max_pending_messages
    if limit <= 0:
        return
    if _pending_bound(s, task_id, recipient, bound) < limit:
        return
    if pending_messages(s, task_id, recipient) >= limit:
        raise quota_exceeded(
            429,
            "max_pending_messages",
            limit,
            f"mailbox {recipient!r} holds {limit} messages its reader has not acknowledged; retry once it has read them",
        )


def check_free_space(config: HubConfig, adding: int, path: Path | None = None) -> None:
    """Refuse a write that would eat into the reserve kept free for logins and the database.

    A full disk breaks SQLite for everyone (a login writes a token row); keeping
    ``min_free_bytes`` free for them means bulk writes fail first, with a clear 507.
    """
    reserve = config.min_free_bytes
    if reserve <= 0:
        return
    free = shutil.disk_usage(path or config.data_dir).free
    if free - adding < reserve:
        raise disk_full()


def disk_full() -> HTTPException:
    return HTTPException(
        507,
        "the hub's disk is full: nothing was stored; retry later or tell the hub operator",
        headers={"X-Fedpact-Limit": "min_free_bytes"},
    )
