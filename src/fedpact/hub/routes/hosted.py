"""Hosted aggregators: the creator asks the hub to run a task's aggregator (see ``fedpact.hub.workers``)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fedpact.hub.access import TERMINAL, find_task, require_creator, require_member
from fedpact.hub.auth import CurrentUser, State
from fedpact.hub.config import HubConfig
from fedpact.hub.quotas import quota_exceeded
from fedpact.hub.routes.blobs import keep_private
from fedpact.hub.routes.rounds import require_blob
from fedpact.hub.schemas import INT64_MAX, BlobRef
from fedpact.hub.tables import Task, User
from fedpact.hub.workers import STOP_WAIT_S, EvalData, WorkerManager

router = APIRouter(tags=["hosted aggregator"])

_LABEL = re.compile(r"^[A-Za-z0-9_.\- ]{1,200}$")


class EvalDataIn(BaseModel):
    """Evaluation data for the hosted aggregator: a blob already uploaded to the task."""

    model_config = ConfigDict(extra="forbid")
    blob: BlobRef
    format: Literal["csv", "npz"] = "csv"
    label: str | None = Field(default=None, max_length=200, description="label column of a CSV file")


class HostedStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resume: bool = Field(default=False, description="continue a RUNNING task after its last checkpointed round")
    eval_data: EvalDataIn | None = None
    mlflow_uri: str | None = Field(
        default=None, max_length=500, pattern=r"^https?://[^\s]+$",
        description="track the task as a run on this MLflow server (http or https; the hub needs fedpact[mlflow])",
    )


class HostedStatus(BaseModel):
    task_id: int
    state: str = Field(
        description="none | running | stopping (a stop was asked, its replica has not confirmed it yet) | finished | "
        "failed | stopped | exited | lost (its replica stopped renewing its lease; another replica takes it over)"
    )
    running: bool
    pid: int | None
    started_at: str | None
    finished_at: str | None
    exit_code: int | None
    resume: bool
    restarts: int
    started_by: str | None
    reason: str | None
    log_size: int


class HostedLog(BaseModel):
    offset: int
    next_offset: int
    size: int
    text: str


def _manager(request: Request) -> WorkerManager:
    manager: WorkerManager = request.app.state.workers
    return manager


@router.post("/tasks/{task}/aggregator", status_code=202, response_model=HostedStatus)
def start_hosted(task: str, body: HostedStart, request: Request, user: CurrentUser, state: State) -> HostedStatus:
    manager = _manager(request)
    with state.db.session() as s:
        row = find_task(s, task)
        require_creator(row, user, "run its aggregator on the hub")
        if row.status in TERMINAL:
            raise HTTPException(409, f"task {row.name!r} is {row.status}; there is nothing to aggregate")
        current = manager.status(row.id)
        if current["state"] == "lost":
            raise HTTPException(
                409,
                f"the hub replica that ran the aggregator of task {row.name!r} stopped renewing its lease; another "
                f"replica takes it over within {state.config.hosted_lease_s:g} s: retry then",
            )
        if current["running"]:
            raise HTTPException(
                409,
                f"the hub is already running the aggregator of task {row.name!r}; "
                f"stop it first with DELETE /api/v1/tasks/{row.name}/aggregator",
            )
        if row.status == "RUNNING" and not body.resume:
            raise HTTPException(
                409,
                f"task {row.name!r} is already RUNNING, so an aggregator is running it somewhere; "
                "if that aggregator stopped, ask again with resume=true to continue after the last completed round",
            )
        eval_data = None
        label = None
        if body.eval_data is not None:
            require_blob(s, row, body.eval_data.blob)
            keep_private(s, row, body.eval_data.blob.sha256)
            label = body.eval_data.label
            if label is not None and not _LABEL.match(label):
                raise HTTPException(422, "eval_data.label must be a column name of letters, digits, '_', '.', '-' or spaces")
            if body.eval_data.format == "npz" and label is not None:
                raise HTTPException(422, "eval_data.label applies to CSV files only; an NPZ archive holds arrays 'x' and 'y'")
            eval_data = EvalData(body.eval_data.blob.sha256, body.eval_data.format, label)
        _check_hosted_quotas(s, state.config, manager, user.id)
        creator = s.scalars(select(User.name).where(User.id == row.creator_id)).first() or user.name
        s.commit()
        s.expunge(row)
    if manager.hub_url is None:
        raise HTTPException(503, "the hub does not know its own address yet; retry in a moment")
    try:
        out = manager.start(row, creator, resume=body.resume, started_by=user.name, eval_data=eval_data,
                            mlflow_uri=body.mlflow_uri)
    except RuntimeError as exc:
        raise HTTPException(409, str(exc)) from None
    return HostedStatus(**out)


def _check_hosted_quotas(s: Session, config: HubConfig, manager: WorkerManager, user_id: int) -> None:
    running = manager.running_tasks()
    if 0 < config.max_hosted_per_hub <= len(running):
        raise quota_exceeded(
            429, "max_hosted_per_hub", config.max_hosted_per_hub,
            f"the hub runs {len(running)} hosted aggregators; run this one yourself with 'fedpact aggregate', or retry later",
        )  # fmt: skip
    if config.max_hosted_per_user <= 0 or not running:
        return
    mine = s.scalar(
        select(func.count()).select_from(Task).where(Task.id.in_(running), Task.creator_id == user_id)
    ) or 0
    if mine >= config.max_hosted_per_user:
        raise quota_exceeded(
            429, "max_hosted_per_user", config.max_hosted_per_user,
            f"the hub runs {mine} aggregators of your tasks; stop one, or run this one yourself with 'fedpact aggregate'",
        )  # fmt: skip


@router.get("/tasks/{task}/aggregator", response_model=HostedStatus)
def hosted_status(task: str, request: Request, user: CurrentUser, state: State) -> HostedStatus:
    with state.db.session() as s:
        row = find_task(s, task)
        require_member(s, row, user, "see its hosted aggregator")
        task_id = row.id
    return HostedStatus(**_manager(request).status(task_id))


@router.get("/tasks/{task}/aggregator/log", response_model=HostedLog)
def hosted_log(
    task: str,
    request: Request,
    user: CurrentUser,
    state: State,
    offset: Annotated[int | None, Query(ge=0, le=INT64_MAX, description="byte offset to read from; omitted: the tail")] = None,
    limit: Annotated[int, Query(ge=1, le=1024 * 1024, description="most bytes returned")] = 64 * 1024,
) -> HostedLog:
    with state.db.session() as s:
        row = find_task(s, task)
        require_member(s, row, user, "read its aggregator's log")
        task_id = row.id
    return HostedLog(**_manager(request).read_log(task_id, offset, limit))


@router.delete(
    "/tasks/{task}/aggregator",
    response_model=HostedStatus,
    responses={202: {"model": HostedStatus, "description": "the stop is asked of the replica that runs the aggregator, "
                    f"which did not confirm it within {STOP_WAIT_S:g} s: state 'stopping'"}},
)
def stop_hosted(task: str, request: Request, user: CurrentUser, state: State) -> HostedStatus | JSONResponse:
    """Stop the aggregator, whichever replica runs it: 200 once it is stopped, 202 while its replica has not confirmed."""
    manager = _manager(request)
    with state.db.session() as s:
        row = find_task(s, task)
        require_creator(row, user, "stop its aggregator")
        task_id, name = row.id, row.name
    current = manager.status(task_id)
    if not current["running"] and current["state"] != "lost":
        raise HTTPException(409, f"the hub is not running an aggregator for task {name!r}")
    out, confirmed = manager.request_stop(task_id, f"stopped by {user.name}")
    if not confirmed:
        return JSONResponse(HostedStatus(**out).model_dump(), status_code=202)
    return HostedStatus(**out)
