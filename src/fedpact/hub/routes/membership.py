"""Joining and leaving tasks, and the list of tasks a participant should be working on."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fedpact.hub.access import TERMINAL, find_task
from fedpact.hub.auth import CurrentUser, State
from fedpact.hub.schemas import JoinOut, TaskItems
from fedpact.hub.tables import Membership, Task
from fedpact.hub.views import tasks_out

router = APIRouter(tags=["membership"])


@router.post("/tasks/{task}/join", response_model=JoinOut)
def join(task: str, user: CurrentUser, state: State) -> JoinOut:
    with state.db.session() as s:
        row = find_task(s, task)
        existing = s.scalars(
            select(Membership).where(Membership.task_id == row.id, Membership.user_id == user.id)
        ).first()
        if existing is None:
            if row.status in TERMINAL:
                raise HTTPException(409, f"task {row.name!r} is {row.status}: it takes no new participants")
            existing = Membership(task_id=row.id, user_id=user.id)
            s.add(existing)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                existing = s.scalars(
                    select(Membership).where(Membership.task_id == row.id, Membership.user_id == user.id)
                ).one()
        return JoinOut(task=row.name, task_id=row.id, user=user.name, joined_at=existing.joined_at)


@router.post("/tasks/{task}/leave", status_code=204)
def leave(task: str, user: CurrentUser, state: State) -> Response:
    with state.db.session() as s:
        row = find_task(s, task)
        membership = s.scalars(
            select(Membership).where(Membership.task_id == row.id, Membership.user_id == user.id)
        ).first()
        if membership is None:
            raise HTTPException(404, f"you are not a participant of task {row.name!r}: nothing to leave")
        s.delete(membership)
        s.commit()
    return Response(status_code=204)


@router.get("/assignments", response_model=TaskItems)
def assignments(user: CurrentUser, state: State) -> TaskItems:
    with state.db.session() as s:
        tasks = list(
            s.scalars(
                select(Task)
                .join(Membership, Membership.task_id == Task.id)
                .where(Membership.user_id == user.id, Task.status.in_(("CREATED", "RUNNING")))
                .order_by(Task.id)
            )
        )
        return TaskItems(items=tasks_out(s, tasks))
