"""Joining tasks, the creator's admission decisions, and the tasks a participant should work on.

Who is admitted on joining follows the definition's ``admission`` (open, approval,
invite). Declined and removed users keep their row with that status, so joining again
cannot undo the creator's decision; only the creator's approval can.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedpact.common.definition import AdmissionSpec
from fedpact.hub.access import TERMINAL, find_task, require_creator
from fedpact.hub.auth import CurrentUser, Principal, State
from fedpact.hub.schemas import JoinOut, MemberItems, MemberOut, TaskItems
from fedpact.hub.tables import (
    ADMITTED,
    DECLINED,
    PENDING,
    REMOVED,
    Membership,
    Task,
    User,
    utcnow,
)
from fedpact.hub.views import tasks_out

router = APIRouter(tags=["membership"])


def admission_of(task: Task) -> AdmissionSpec:
    """The task's admission rule; definitions stored before the field existed mean approval."""
    try:
        return AdmissionSpec.model_validate(task.definition.get("admission", {}))
    except ValidationError:
        return AdmissionSpec()


def _membership(s: Session, task_id: int, user_id: int) -> Membership | None:
    return s.scalars(select(Membership).where(Membership.task_id == task_id, Membership.user_id == user_id)).first()


def _status_on_join(s: Session, task: Task, user: Principal) -> str:
    """ADMITTED or PENDING for a first join, or a 403 naming why the user cannot join."""
    if task.creator_id == user.id:
        return ADMITTED
    rule = admission_of(task)
    if rule.mode == "open":
        return ADMITTED
    if rule.mode == "approval":
        return PENDING
    organisation = user.organisation
    if rule.invites(user.name, organisation):
        return ADMITTED
    raise HTTPException(
        403,
        f"task {task.name!r} admits only the users and organisations it invites, and neither {user.name!r} "
        f"nor organisation {organisation!r} is invited: ask its creator to invite you",
    )


@router.post(
    "/tasks/{task}/join",
    response_model=JoinOut,
    responses={202: {"model": JoinOut, "description": "a request: the creator must approve it (status PENDING)"}},
)
def join(task: str, user: CurrentUser, state: State) -> JoinOut | JSONResponse:
    with state.db.session() as s:
        row = find_task(s, task)
        existing = _membership(s, row.id, user.id)
        if existing is None:
            if row.status in TERMINAL:
                raise HTTPException(409, f"task {row.name!r} is {row.status}: it takes no new participants")
            existing = Membership(task_id=row.id, user_id=user.id, status=_status_on_join(s, row, user))
            if existing.status == ADMITTED:
                existing.decided_at = utcnow()
            s.add(existing)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                existing = _membership(s, row.id, user.id)
                assert existing is not None
        elif existing.status == DECLINED:
            raise HTTPException(
                403, f"the creator of task {row.name!r} declined your request to join; ask them to approve it"
            )
        elif existing.status == REMOVED:
            raise HTTPException(
                403, f"the creator of task {row.name!r} removed you from it; ask them to approve you again"
            )
        out = JoinOut(
            task=row.name, task_id=row.id, user=user.name, joined_at=existing.joined_at,
            status=existing.status,  # type: ignore[arg-type]
        )
    if out.status == PENDING:
        return JSONResponse(out.model_dump(mode="json"), status_code=202)
    return out


@router.post("/tasks/{task}/leave", status_code=204)
def leave(task: str, user: CurrentUser, state: State) -> Response:
    with state.db.session() as s:
        row = find_task(s, task)
        membership = _membership(s, row.id, user.id)
        if membership is None or membership.status not in (ADMITTED, PENDING):
            raise HTTPException(404, f"you are not a participant of task {row.name!r}: nothing to leave")
        s.delete(membership)
        s.commit()
    return Response(status_code=204)


def _member_out(task: Task, m: Membership, u: User) -> MemberOut:
    return MemberOut(
        task=task.name, user=u.name, organisation=u.organisation,
        status=m.status, joined_at=m.joined_at, decided_at=m.decided_at,  # type: ignore[arg-type]
    )


@router.get("/tasks/{task}/requests", response_model=MemberItems)
def list_requests(task: str, user: CurrentUser, state: State) -> MemberItems:
    """Join requests waiting for the creator's decision, oldest first."""
    with state.db.session() as s:
        row = find_task(s, task)
        require_creator(row, user, "see its join requests")
        rows = s.execute(
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.task_id == row.id, Membership.status == PENDING)
            .order_by(Membership.joined_at, Membership.id)
        ).all()
        return MemberItems(items=[_member_out(row, m, u) for m, u in rows])


@router.get("/tasks/{task}/members", response_model=MemberItems)
def list_members(task: str, user: CurrentUser, state: State) -> MemberItems:
    """Everyone who ever asked to join, with their standing (creator only)."""
    with state.db.session() as s:
        row = find_task(s, task)
        require_creator(row, user, "see its members and requests")
        rows = s.execute(
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.task_id == row.id)
            .order_by(Membership.joined_at, Membership.id)
        ).all()
        return MemberItems(items=[_member_out(row, m, u) for m, u in rows])


def _decide(state: State, task: str, name: str, user: Principal, action: str, new: str) -> MemberOut:
    """Apply the creator's decision ``new`` to ``name``'s membership, or refuse with what to do instead.

    Repeating a decision is harmless (the current standing comes back), so a client may
    retry; a decision that does not fit the standing changes nothing and says why.
    """
    with state.db.session() as s:
        row = find_task(s, task, lock=True)
        require_creator(row, user, f"{action} its members")
        target = s.scalars(select(User).where(User.name == name)).first()
        if target is None:
            raise HTTPException(404, f"no user {name!r} on this hub")
        m = _membership(s, row.id, target.id)
        if m is None:
            raise HTTPException(
                404,
                f"{name!r} has not asked to join task {row.name!r}: see who has with GET /api/v1/tasks/{row.name}/requests",
            )
        if m.status != new:
            problem = _conflict(row, name, m.status, new)
            if problem:
                raise HTTPException(409, problem)
            m.status = new
            m.decided_at = utcnow()
            s.commit()
        out, task_id = _member_out(row, m, target), row.id
    state.notifier.notify(task_id)
    return out


def _conflict(task: Task, name: str, status: str, new: str) -> str | None:
    """Why ``status`` cannot become ``new``, or None if it can."""
    if new == ADMITTED and task.status in TERMINAL:
        return f"task {task.name!r} is {task.status}: it takes no new participants"
    if new == DECLINED and status != PENDING:
        if status == ADMITTED:
            return (f"{name!r} is already admitted to task {task.name!r}: remove them with "
                    f"DELETE /api/v1/tasks/{task.name}/members/{name}")
        return f"{name!r} has no pending request (their standing is {status})"
    if new == REMOVED and status != ADMITTED:
        if status == PENDING:
            return (f"{name!r} is not admitted, only asking to join: decline the request with "
                    f"POST /api/v1/tasks/{task.name}/requests/{name}/decline")
        return f"{name!r} is not an admitted member (their standing is {status})"
    return None


@router.post("/tasks/{task}/requests/{name}/approve", response_model=MemberOut)
def approve(task: str, name: str, user: CurrentUser, state: State) -> MemberOut:
    """Admit a user who asked to join (or admit again one declined or removed earlier)."""
    return _decide(state, task, name, user, "approve", ADMITTED)


@router.post("/tasks/{task}/requests/{name}/decline", response_model=MemberOut)
def decline(task: str, name: str, user: CurrentUser, state: State) -> MemberOut:
    """Refuse a pending request; joining again does not undo it, only an approval does."""
    return _decide(state, task, name, user, "decline", DECLINED)


@router.delete("/tasks/{task}/members/{name}", response_model=MemberOut)
def remove(task: str, name: str, user: CurrentUser, state: State) -> MemberOut:
    """Take an admitted member out: from now on the hub refuses their messages and reads.

    The aggregator learns of it when their next update does not arrive, so the removal
    takes effect from the next round.
    """
    return _decide(state, task, name, user, "remove", REMOVED)


@router.get("/assignments", response_model=TaskItems)
def assignments(user: CurrentUser, state: State) -> TaskItems:
    with state.db.session() as s:
        tasks = list(
            s.scalars(
                select(Task)
                .join(Membership, Membership.task_id == Task.id)
                .where(
                    Membership.user_id == user.id,
                    Membership.status == ADMITTED,
                    Task.status.in_(("CREATED", "RUNNING")),
                )
                .order_by(Task.id)
            )
        )
        return TaskItems(items=tasks_out(s, tasks, user))
