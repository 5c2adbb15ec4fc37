"""Finding a task and deciding who may touch it, in one place so every route agrees.

Tasks are public to logged-in users, so an unknown task is a 404 and a forbidden action
on a known task is a 403 that says who may do it.
"""

from __future__ import annotations

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from fedpact.hub.auth import Principal
from fedpact.hub.tables import Membership, Task

TERMINAL = frozenset({"COMPLETE", "FAILED", "CANCELLED"})


def find_task(s: Session, ref: str, lock: bool = False) -> Task:
    """The task named or numbered ``ref``; task names are never all digits, so this is unambiguous.

    ``lock`` takes a row lock (PostgreSQL) for a read-then-write such as a status change;
    SQLite's ``BEGIN IMMEDIATE`` already serialises those.
    """
    if ref.isascii() and ref.isdigit():
        query = select(Task).where(Task.id == (int(ref) if len(ref) <= 18 else -1))
    else:
        query = select(Task).where(Task.name == ref)
    if lock:
        query = query.with_for_update()
    task = s.scalars(query).first()
    if task is None:
        raise HTTPException(404, f"no task {ref!r}: list tasks with GET /api/v1/tasks")
    return task


def is_joined(s: Session, task_id: int, user_id: int) -> bool:
    return (
        s.scalars(select(Membership.id).where(Membership.task_id == task_id, Membership.user_id == user_id)).first()
        is not None
    )


def is_member(s: Session, task: Task, user: Principal) -> bool:
    """Members are the creator and every user who joined."""
    return task.creator_id == user.id or is_joined(s, task.id, user.id)


def require_creator(task: Task, user: Principal, action: str) -> None:
    if task.creator_id != user.id:
        raise HTTPException(403, f"only the creator of task {task.name!r} may {action}")


def require_member(s: Session, task: Task, user: Principal, action: str) -> None:
    if not is_member(s, task, user):
        raise HTTPException(
            403,
            f"only members of task {task.name!r} may {action}: join it first with POST /api/v1/tasks/{task.name}/join",
        )
