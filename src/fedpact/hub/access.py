"""Finding a task and deciding who may touch it, in one place so every route agrees.

Tasks are public to logged-in users, so an unknown task is a 404 and a forbidden action
on a known task is a 403 that says who may do it. A task's public description is its
name, description, definition, status and history; everything else (mailboxes, blobs,
rounds, the hosted aggregator, who takes part) is for its creator and ADMITTED members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import HTTPException
from sqlalchemy import Select, bindparam, exists, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from fedpact.hub.auth import Principal
from fedpact.hub.tables import (
    ADMITTED,
    DECLINED,
    PENDING,
    REMOVED,
    Blob,
    Membership,
    Message,
    Task,
)

TERMINAL = frozenset({"COMPLETE", "FAILED", "CANCELLED"})


class TaskLike(Protocol):
    """What the permission checks need of a task: a :class:`Task` row or a :class:`TaskRef`."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def creator_id(self) -> int: ...


@dataclass(frozen=True)
class TaskRef:
    """The columns of a task that the relay's hot routes need, without loading the row's definition."""

    id: int
    name: str
    creator_id: int
    status: str
    #: The user whose membership was read with the task, and that membership (None: never asked).
    viewer: int | None = None
    viewer_membership: str | None = None
    #: What a :class:`TaskRefQuery`'s own look-ups read, in its order.
    extra: tuple[Any, ...] = ()


def _task_filter(ref: str) -> ColumnElement[bool]:
    """Task names are never all digits, so a number is an id and anything else a name."""
    if ref.isascii() and ref.isdigit():
        return Task.id == (int(ref) if len(ref) <= 18 else -1)
    return Task.name == ref


def _no_task(ref: str) -> HTTPException:
    return HTTPException(404, f"no task {ref!r}: list tasks with GET /api/v1/tasks")


def find_task(s: Session, ref: str, lock: bool = False) -> Task:
    """The task named or numbered ``ref``; task names are never all digits, so this is unambiguous.

    ``lock`` takes a row lock (PostgreSQL) for a read-then-write such as a status change;
    SQLite's ``BEGIN IMMEDIATE`` already serialises those.
    """
    query = select(Task).where(_task_filter(ref))
    if lock:
        query = query.with_for_update()
    task = s.scalars(query).first()
    if task is None:
        raise _no_task(ref)
    return task


def _task_ref_query(by_id: bool, extras: tuple[ColumnElement[Any], ...] = ()) -> Select[Any]:
    key = Task.id == bindparam("ref") if by_id else Task.name == bindparam("ref")
    return (
        select(Task.id, Task.name, Task.creator_id, Task.status, Membership.status, *extras)
        .outerjoin(Membership, (Membership.task_id == Task.id) & (Membership.user_id == bindparam("viewer")))
        .where(key)
    )


class TaskRefQuery:
    """The statement of :func:`find_task_ref`, plus scalar subqueries a route reads with it.

    Each is correlated to the task's row (``Task.id``), so it works whether the request named
    the task by id or by name, and comes back in :attr:`TaskRef.extra`, in order. On
    PostgreSQL every statement is a round trip, and on either database a statement's
    execution costs the hub more Python than its query costs the database: a poll reads its
    stored cursor, an update its quotas, in the statement that finds the task. Built once
    per route, at import: building a statement per request costs more than running it.
    """

    def __init__(self, *extras: ColumnElement[Any]) -> None:
        self.by_id = _task_ref_query(True, extras)
        self.by_name = _task_ref_query(False, extras)


#: The task and the viewer's membership, nothing more.
TASK_REF = TaskRefQuery()


def find_task_ref(s: Session, ref: str, viewer: int, query: TaskRefQuery = TASK_REF, **params: Any) -> TaskRef:
    """Like :func:`find_task`, for the relay's hot routes: the columns the checks need and
    ``viewer``'s membership, in one query and without an ORM object. ``query`` adds a
    route's own look-ups, bound by ``params``."""
    key: int | str
    if ref.isascii() and ref.isdigit():
        statement, key = query.by_id, (int(ref) if len(ref) <= 18 else -1)
    else:
        statement, key = query.by_name, ref
    row = s.connection().execute(statement, {**params, "ref": key, "viewer": viewer}).first()
    if row is None:
        raise _no_task(ref)
    return TaskRef(
        id=row[0], name=row[1], creator_id=row[2], status=row[3], viewer=viewer, viewer_membership=row[4],
        extra=tuple(row[5:]),
    )


def _membership(s: Session, task: TaskLike, user_id: int) -> str | None:
    if isinstance(task, TaskRef) and task.viewer == user_id:
        return task.viewer_membership
    return membership_status(s, task.id, user_id)


def membership_status(s: Session, task_id: int, user_id: int) -> str | None:
    """PENDING, ADMITTED, DECLINED, REMOVED, or None for a user who never asked to join."""
    return s.scalars(
        select(Membership.status).where(Membership.task_id == task_id, Membership.user_id == user_id)
    ).first()


def is_joined(s: Session, task_id: int, user_id: int) -> bool:
    """Whether the user is an admitted participant; a pending request grants nothing."""
    return membership_status(s, task_id, user_id) == ADMITTED


def is_member(s: Session, task: TaskLike, user: Principal) -> bool:
    """Members are the creator and every admitted participant."""
    return task.creator_id == user.id or _membership(s, task, user.id) == ADMITTED


def not_admitted(s: Session, task: TaskLike, user: Principal, action: str) -> HTTPException:
    """The 403 for a non-member, saying where the user stands and what to do about it."""
    status = _membership(s, task, user.id)
    where = f"task {task.name!r}"
    if status == PENDING:
        why = f"your request to join {where} is pending: wait until its creator approves it"
    elif status == DECLINED:
        why = f"the creator of {where} declined your request to join; ask them to approve it"
    elif status == REMOVED:
        why = f"the creator of {where} removed you from it; ask them to approve you again"
    else:
        why = f"join it first with POST /api/v1/tasks/{task.name}/join"
    return HTTPException(403, f"only admitted members of {where} may {action}: {why}")


def require_creator(task: TaskLike, user: Principal, action: str) -> None:
    if task.creator_id != user.id:
        raise HTTPException(403, f"only the creator of task {task.name!r} may {action}")


def require_member(s: Session, task: TaskLike, user: Principal, action: str) -> None:
    if not is_member(s, task, user):
        raise not_admitted(s, task, user, action)


def require_participant(s: Session, task: TaskLike, user: Principal, action: str) -> None:
    """An admitted participant (the creator counts only if they also joined)."""
    if _membership(s, task, user.id) != ADMITTED:
        raise not_admitted(s, task, user, action)


class BlobAccess(Protocol):
    """What deciding access needs of a blob's row: the ORM object or a prepared query's row."""

    @property
    def uploaded_by(self) -> int: ...

    @property
    def shared(self) -> bool: ...


def can_read_blob(
    s: Session, task: TaskLike, user: Principal, sha256: str, blob: BlobAccess | None = None
) -> bool:
    """Whether a member may read one of the task's blobs.

    The creator (who runs the aggregator) reads every blob of the task. A participant
    reads what it uploaded itself, what the aggregator addressed to it or broadcast to
    all participants, and the creator's blobs not marked private (the global model and
    its checkpoints): never another participant's update. ``blob`` is the task's row for
    ``sha256`` when the caller has it already (saves a query per download).
    """
    if task.creator_id == user.id:
        return True
    if blob is None:
        blob = s.scalars(select(Blob).where(Blob.task_id == task.id, Blob.sha256 == sha256)).first()
    if blob is None:
        return False
    if blob.uploaded_by == user.id or blob.shared:
        return True
    addressed = select(Message.id).where(
        Message.task_id == task.id,
        Message.blob_sha256 == sha256,
        or_(Message.recipient == f"participant/{user.name}", Message.recipient == "participants"),
    )
    return bool(s.scalar(select(exists(addressed))))
