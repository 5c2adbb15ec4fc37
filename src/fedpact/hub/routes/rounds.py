"""Round records and the aggregator's checkpoint, which together make a task resumable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedpact.hub.access import find_task, require_creator, require_member
from fedpact.hub.auth import CurrentUser, State
from fedpact.hub.schemas import (
    BlobRef,
    CheckpointIn,
    CheckpointOut,
    RoundIn,
    RoundItems,
    RoundOut,
)
from fedpact.hub.tables import Blob, Checkpoint, Round, Task, utcnow
from fedpact.hub.views import checkpoint_out, round_out

router = APIRouter(tags=["rounds"])


def require_blob(s: Session, task: Task, ref: BlobRef) -> None:
    """A record may point only at a blob already uploaded to its task, with the right size."""
    blob = s.scalars(select(Blob).where(Blob.task_id == task.id, Blob.sha256 == ref.sha256)).first()
    if blob is None:
        raise HTTPException(
            404,
            f"no blob {ref.sha256} in task {task.name!r}: upload it first with POST /api/v1/tasks/{task.name}/uploads",
        )
    if blob.size != ref.size:
        raise HTTPException(422, f"blob {ref.sha256} has {blob.size} bytes, not {ref.size}")


@router.put("/tasks/{task}/rounds/{number}", response_model=RoundOut)
def put_round(
    task: str, number: Annotated[int, Path(ge=0, le=1_000_000)], body: RoundIn, user: CurrentUser, state: State
) -> RoundOut:
    if body.finished_at is not None and body.finished_at < body.started_at:
        raise HTTPException(422, "finished_at is before started_at")
    with state.db.session() as s:
        row = find_task(s, task)
        require_creator(row, user, "record its rounds")
        rnd = s.scalars(select(Round).where(Round.task_id == row.id, Round.number == number)).first()
        opened = rnd is None and number > (s.scalar(select(func.max(Round.number)).where(Round.task_id == row.id)) or 0)
        if rnd is None:
            rnd = Round(task_id=row.id, number=number)
            s.add(rnd)
        rnd.status = body.status
        rnd.participants = list(body.participants)
        rnd.started_at = body.started_at
        rnd.finished_at = body.finished_at
        rnd.metrics = dict(body.metrics)
        rnd.reason = body.reason
        rnd.updated_at = utcnow()
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
            raise HTTPException(409, f"round {number} was written concurrently; retry") from None
        state.metrics.rounds.labels(body.status).inc()
        if opened:
            state.gc.round_opened(row.id)  # the rounds before it are finished: their blobs can go
        return round_out(rnd)


@router.get("/tasks/{task}/rounds", response_model=RoundItems)
def list_rounds(task: str, user: CurrentUser, state: State) -> RoundItems:
    with state.db.reading() as s:
        row = find_task(s, task)
        require_member(s, row, user, "see its rounds")
        rounds = s.scalars(select(Round).where(Round.task_id == row.id).order_by(Round.number))
        return RoundItems(items=[round_out(r) for r in rounds])


@router.put("/tasks/{task}/checkpoint", response_model=CheckpointOut)
def put_checkpoint(task: str, body: CheckpointIn, user: CurrentUser, state: State) -> CheckpointOut:
    with state.db.session() as s:
        row = find_task(s, task)
        require_creator(row, user, "store its checkpoint")
        require_blob(s, row, body.blob)
        cp = Checkpoint(
            task_id=row.id, round=body.round, sha256=body.blob.sha256, size=body.blob.size, state=body.state
        )
        s.add(cp)
        s.commit()
        return checkpoint_out(cp, _history(s, row.id))


@router.get("/tasks/{task}/checkpoint", response_model=CheckpointOut)
def get_checkpoint(task: str, user: CurrentUser, state: State) -> CheckpointOut:
    with state.db.reading() as s:
        row = find_task(s, task)
        require_creator(row, user, "read its checkpoint")
        cp = s.scalars(select(Checkpoint).where(Checkpoint.task_id == row.id).order_by(Checkpoint.id.desc())).first()
        if cp is None:
            raise HTTPException(404, f"task {row.name!r} has no checkpoint yet")
        return checkpoint_out(cp, _history(s, row.id))


def _history(s: Session, task_id: int) -> list[int]:
    return list(s.scalars(select(Checkpoint.round).where(Checkpoint.task_id == task_id).order_by(Checkpoint.id)))
