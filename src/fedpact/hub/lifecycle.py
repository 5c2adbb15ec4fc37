"""The task status machine; every change goes through :func:`transition` so none escapes the event log."""

from __future__ import annotations

from fastapi import HTTPException
from sqlalchemy.orm import Session

from fedpact.hub.tables import Task, TaskEvent, utcnow

ALLOWED: dict[str, frozenset[str]] = {
    "CREATED": frozenset({"RUNNING", "CANCELLED"}),
    # RUNNING -> RUNNING changes nothing but is logged, so a resumed aggregator shows in the history.
    "RUNNING": frozenset({"RUNNING", "COMPLETE", "FAILED", "CANCELLED"}),
    "COMPLETE": frozenset(),
    "FAILED": frozenset(),
    "CANCELLED": frozenset(),
}


def record(s: Session, task: Task, status: str, reason: str) -> None:
    now = utcnow()
    task.status = status
    task.updated_at = now
    s.add(TaskEvent(task_id=task.id, status=status, reason=reason, at=now))


def transition(s: Session, task: Task, status: str, reason: str) -> None:
    """Move ``task`` to ``status`` or raise 409 naming the moves that are possible."""
    allowed = ALLOWED[task.status]
    if status not in allowed:
        options = ", ".join(sorted(allowed)) if allowed else "none: it is finished"
        raise HTTPException(
            409, f"task {task.name!r} is {task.status} and cannot become {status}; possible next states: {options}"
        )
    record(s, task, status, reason)
