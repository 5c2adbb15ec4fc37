"""Tasks: creation, browsing, the status machine, cancellation and deletion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedpact.hub.access import find_task, require_creator
from fedpact.hub.auth import CurrentUser, State
from fedpact.hub.blobstore import BlobStore
from fedpact.hub.lifecycle import record, transition
from fedpact.hub.quotas import check_tasks
from fedpact.hub.schemas import (
    INT32_MAX,
    StatusIn,
    TaskCreate,
    TaskList,
    TaskOut,
    TaskStatus,
)
from fedpact.hub.tables import (
    ADMITTED,
    Blob,
    Checkpoint,
    Cursor,
    HostedLease,
    HostedLogChunk,
    HostedWorker,
    Membership,
    Message,
    Round,
    StoredModel,
    Task,
    TaskEvent,
    Upload,
    User,
)
from fedpact.hub.views import task_out, tasks_out

router = APIRouter(tags=["tasks"])


def _taken(name: str) -> HTTPException:
    return HTTPException(409, f"a task named {name!r} already exists: choose another name")


@router.post("/tasks", status_code=201, response_model=TaskOut)
def create_task(body: TaskCreate, user: CurrentUser, state: State) -> TaskOut:
    with state.db.session() as s:
        if s.scalars(select(Task.id).where(Task.name == body.name)).first() is not None:
            raise _taken(body.name)
        check_tasks(s, state.config, user.id)
        task = Task(
            name=body.name,
            description=body.description,
            definition=body.definition.model_dump(mode="json"),
            status="CREATED",
            creator_id=user.id,
        )
        s.add(task)
        try:
            s.flush()
        except IntegrityError:
            s.rollback()
            raise _taken(body.name) from None
        record(s, task, "CREATED", f"created by {user.name}")
        s.commit()
        return task_out(s, task, user)


@router.get("/tasks", response_model=TaskList)
def list_tasks(
    user: CurrentUser,
    state: State,
    status: Annotated[TaskStatus | None, Query(description="only tasks in this status")] = None,
    creator: Annotated[str | None, Query(description="only tasks created by this user name")] = None,
    joined: Annotated[bool, Query(description="only tasks the caller has been admitted to")] = False,
    mine: Annotated[bool, Query(description="only tasks the caller created")] = False,
    q: Annotated[str | None, Query(max_length=200, description="substring of name or description")] = None,
    privacy: Annotated[
        str | None, Query(min_length=1, max_length=64, description="only tasks with this privacy mode")
    ] = None,
    algorithm: Annotated[
        str | None, Query(min_length=1, max_length=200, description="only tasks using this aggregation algorithm")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
) -> TaskList:
    query = select(Task)
    if status is not None:
        query = query.where(Task.status == status)
    if creator is not None:
        query = query.join(User, User.id == Task.creator_id).where(User.name == creator)
    if joined:
        query = query.where(
            Task.id.in_(
                select(Membership.task_id).where(Membership.user_id == user.id, Membership.status == ADMITTED)
            )
        )
    if mine:
        query = query.where(Task.creator_id == user.id)
    if privacy is not None:
        query = query.where(Task.definition["privacy"]["mode"].as_string() == privacy)
    if algorithm is not None:
        query = query.where(Task.definition["algorithm"]["name"].as_string() == algorithm)
    if q:
        needle = q.lower()
        query = query.where(
            or_(
                func.lower(Task.name).contains(needle, autoescape=True),
                func.lower(Task.description).contains(needle, autoescape=True),
            )
        )
    with state.db.reading() as s:
        total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
        tasks = list(s.scalars(query.order_by(Task.id.desc()).limit(limit).offset(offset)))
        return TaskList(items=tasks_out(s, tasks, user), total=total)


@router.get("/tasks/{task}", response_model=TaskOut)
def get_task(task: str, user: CurrentUser, state: State) -> TaskOut:
    with state.db.reading() as s:
        return task_out(s, find_task(s, task), user)


@router.post("/tasks/{task}/cancel", response_model=TaskOut)
def cancel_task(task: str, user: CurrentUser, state: State) -> TaskOut:
    with state.db.session() as s:
        row = find_task(s, task, lock=True)
        require_creator(row, user, "cancel it")
        transition(s, row, "CANCELLED", f"cancelled by {user.name}")
        s.commit()
        out = task_out(s, row, user)
    state.notifier.notify(out.id)
    state.gc.request()
    return out


@router.post("/tasks/{task}/status", response_model=TaskOut)
def set_status(task: str, body: StatusIn, user: CurrentUser, state: State) -> TaskOut:
    with state.db.session() as s:
        row = find_task(s, task, lock=True)
        require_creator(row, user, "change its status")
        transition(s, row, body.status, body.reason)
        s.commit()
        out = task_out(s, row, user)
    state.notifier.notify(out.id)
    if body.status in ("COMPLETE", "FAILED", "CANCELLED"):
        state.gc.request()  # the task's finished rounds no longer need their blobs
    return out


@router.delete("/tasks/{task}", status_code=204)
def delete_task(task: str, user: CurrentUser, state: State) -> Response:
    with state.db.session() as s:
        row = find_task(s, task, lock=True)
        require_creator(row, user, "delete it")
        if row.status == "RUNNING":
            raise HTTPException(
                409, f"task {row.name!r} is RUNNING: cancel it first with POST /api/v1/tasks/{row.name}/cancel"
            )
        _delete_task(s, state.store, row)
        s.commit()
    return Response(status_code=204)


def _delete_task(s: Session, store: BlobStore, task: Task) -> None:
    """Remove everything of ``task`` but its stored models, and the blob files nobody else needs.

    Files are unlinked inside the transaction: on SQLite it holds the write lock, so an
    upload to another task cannot start referencing a file between the check and the
    unlink.
    """
    tid = task.id
    shas = set(s.scalars(select(Blob.sha256).where(Blob.task_id == tid)))
    upload_ids = list(s.scalars(select(Upload.id).where(Upload.task_id == tid)))
    for table in (Message, Cursor, Round, Checkpoint, Membership, Upload, Blob, TaskEvent,
                  HostedLease, HostedLogChunk, HostedWorker):
        s.execute(delete(table).where(table.task_id == tid))
    s.execute(update(StoredModel).where(StoredModel.task_id == tid).values(task_id=None))
    s.delete(task)
    s.flush()
    for sha in shas:
        in_blobs = s.scalars(select(Blob.id).where(Blob.sha256 == sha).limit(1)).first()
        in_models = s.scalars(select(StoredModel.id).where(StoredModel.sha256 == sha).limit(1)).first()
        if in_blobs is None and in_models is None:
            store.delete(sha)
    for upload_id in upload_ids:
        store.discard(upload_id)
        store.direct_upload_abort(upload_id)
