"""Turning rows into response bodies; batched so a task list costs a few queries, not one per task."""

from __future__ import annotations

import base64
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from fedpact.hub.auth import Principal
from fedpact.hub.schemas import (
    BlobRef,
    CheckpointOut,
    EventOut,
    MessageOut,
    ModelOut,
    RoundOut,
    TaskOut,
    UserOut,
)
from fedpact.hub.tables import (
    ADMITTED,
    PENDING,
    Checkpoint,
    Membership,
    Message,
    ModelContributor,
    Round,
    StoredModel,
    Task,
    TaskEvent,
    User,
)


def user_out(u: User) -> UserOut:
    return UserOut(id=u.id, name=u.name, organisation=u.organisation, created_at=u.created_at)


def tasks_out(s: Session, tasks: list[Task], viewer: Principal) -> list[TaskOut]:
    """Task bodies as ``viewer`` may see them: who takes part is for members, requests for the creator."""
    if not tasks:
        return []
    ids = [t.id for t in tasks]
    creators = dict(s.execute(select(User.id, User.name).where(User.id.in_({t.creator_id for t in tasks}))).all())
    mine: dict[int, str] = dict(
        s.execute(
            select(Membership.task_id, Membership.status)
            .where(Membership.task_id.in_(ids), Membership.user_id == viewer.id)
        ).all()
    )
    # Member lists only where the viewer may see them: a pending participant waiting for
    # approval reads its task every second, and must not cost the hub its N members each time.
    visible = [t.id for t in tasks if t.creator_id == viewer.id or mine.get(t.id) == ADMITTED]
    members: dict[int, list[str]] = defaultdict(list)
    pending: dict[int, list[str]] = defaultdict(list)
    if visible:
        for task_id, name, status in s.execute(
            select(Membership.task_id, User.name, Membership.status)
            .join(User, User.id == Membership.user_id)
            .where(Membership.task_id.in_(visible), Membership.status.in_((ADMITTED, PENDING)))
            .order_by(Membership.joined_at, Membership.id)
        ):
            (members if status == ADMITTED else pending)[task_id].append(name)
    events: dict[int, list[EventOut]] = defaultdict(list)
    for e in s.scalars(select(TaskEvent).where(TaskEvent.task_id.in_(ids)).order_by(TaskEvent.id)):
        events[e.task_id].append(EventOut(status=e.status, at=e.at, reason=e.reason))
    return [
        TaskOut(
            id=t.id,
            name=t.name,
            description=t.description,
            definition=t.definition,
            status=t.status,  # type: ignore[arg-type]
            creator=creators.get(t.creator_id, "?"),
            created_at=t.created_at,
            updated_at=t.updated_at,
            participants=members[t.id] if t.creator_id == viewer.id or mine.get(t.id) == ADMITTED else [],
            events=events[t.id],
            membership=mine.get(t.id),  # type: ignore[arg-type]
            requests=pending[t.id] if t.creator_id == viewer.id else [],
        )
        for t in tasks
    ]


def task_out(s: Session, task: Task, viewer: Principal) -> TaskOut:
    return tasks_out(s, [task], viewer)[0]


def message_out(m: Message) -> MessageOut:
    return MessageOut(
        id=m.id,
        task_id=m.task_id,
        sender=m.sender,
        recipient=m.recipient,
        kind=m.kind,
        round=m.round,
        headers=m.headers,
        payload=None if m.payload is None else base64.b64encode(m.payload).decode("ascii"),
        blob=None if m.blob_sha256 is None else BlobRef(sha256=m.blob_sha256, size=m.blob_size or 0),
        created_at=m.created_at,
    )


def round_out(r: Round) -> RoundOut:
    return RoundOut(
        task_id=r.task_id,
        number=r.number,
        status=r.status,
        participants=r.participants,
        started_at=r.started_at,
        finished_at=r.finished_at,
        metrics=r.metrics,
        reason=r.reason,
        updated_at=r.updated_at,
    )


def checkpoint_out(c: Checkpoint, history: list[int]) -> CheckpointOut:
    return CheckpointOut(
        task_id=c.task_id,
        round=c.round,
        blob=BlobRef(sha256=c.sha256, size=c.size),
        state=c.state,
        created_at=c.created_at,
        history=history,
    )


def models_out(s: Session, models: list[StoredModel]) -> list[ModelOut]:
    if not models:
        return []
    names: dict[int, list[str]] = defaultdict(list)
    for model_id, name in s.execute(
        select(ModelContributor.model_id, User.name)
        .join(User, User.id == ModelContributor.user_id)
        .where(ModelContributor.model_id.in_([m.id for m in models]))
        .order_by(ModelContributor.id)
    ):
        names[model_id].append(name)
    return [
        ModelOut(
            id=m.id,
            task_id=m.task_id,
            task_name=m.task_name,
            sha256=m.sha256,
            size=m.size,
            metadata=m.model_metadata,
            definition=m.definition,
            contributors=names[m.id],
            rounds=m.rounds,
            metrics=m.metrics,
            created_at=m.created_at,
        )
        for m in models
    ]
