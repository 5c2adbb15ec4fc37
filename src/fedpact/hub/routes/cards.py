"""Model cards: what a stored model is, how it was trained and under which terms.

A card is assembled on request from what the hub already records (the definition copied
into the model, the rounds and their metrics, the checkpoint written after each round,
the contributors), plus the two things only the creator can say: a description and a
licence, kept in the model's metadata so the card needs no table of its own. Readers are
the model's readers: its task's creator and its contributors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from fedpact.hub.auth import CurrentUser, State
from fedpact.hub.routes.models import _find_model
from fedpact.hub.tables import Checkpoint, Round, StoredModel, Task
from fedpact.hub.views import models_out

router = APIRouter(tags=["models"])

ModelId = Annotated[int, Path(ge=1, le=2**62)]


class CardIn(BaseModel):
    """What the creator says about a model; a field left out keeps its current value."""

    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(default=None, max_length=20_000)
    licence: str | None = Field(default=None, max_length=200)


class CardRound(BaseModel):
    number: int
    status: str
    participants: list[str]
    metrics: dict[str, float]
    #: sha256 of the global model after this round (the round's checkpoint), when recorded.
    global_model_sha256: str | None


class ModelCard(BaseModel):
    model_id: int
    task_name: str
    description: str
    licence: str | None
    created_at: datetime
    sha256: str
    size: int
    definition: dict[str, Any]
    data_schema: dict[str, Any]
    privacy: dict[str, Any]
    contributors: list[str]
    rounds_completed: int
    final_metrics: dict[str, float]
    rounds: list[CardRound]


def build_card(s: Session, model: StoredModel) -> ModelCard:
    out = models_out(s, [model])[0]
    card_meta = dict(model.model_metadata.get("card") or {})
    rounds: list[CardRound] = []
    task_description = ""
    if model.task_id is not None:
        task = s.get(Task, model.task_id)
        task_description = task.description if task is not None else ""
        shas = dict(s.execute(select(Checkpoint.round, Checkpoint.sha256).where(Checkpoint.task_id == model.task_id)
                              .order_by(Checkpoint.id)).all())
        for r in s.scalars(select(Round).where(Round.task_id == model.task_id).order_by(Round.number)):
            rounds.append(CardRound(number=r.number, status=r.status, participants=list(r.participants),
                                    metrics={k: float(v) for k, v in (r.metrics or {}).items()
                                             if isinstance(v, (int, float))},
                                    global_model_sha256=shas.get(r.number)))
    privacy = dict(model.definition.get("privacy") or {"mode": "open"})
    for key in ("epsilon", "delta"):
        if key in model.model_metadata:
            privacy[key] = model.model_metadata[key]
    return ModelCard(
        model_id=model.id,
        task_name=model.task_name,
        description=card_meta.get("description") or task_description,
        licence=card_meta.get("licence"),
        created_at=model.created_at,
        sha256=model.sha256,
        size=model.size,
        definition=model.definition,
        data_schema=dict(model.definition.get("data") or {}),
        privacy=privacy,
        contributors=out.contributors,
        rounds_completed=model.rounds,
        final_metrics=out.metrics,
        rounds=rounds,
    )


@router.get("/models/{model_id}/card", response_model=ModelCard)
def get_card(model_id: ModelId, user: CurrentUser, state: State) -> ModelCard:
    with state.db.session() as s:
        return build_card(s, _find_model(s, model_id, user))


@router.get("/tasks/{task}/models/{model_id}/card", response_model=ModelCard)
def get_task_model_card(task: str, model_id: ModelId, user: CurrentUser, state: State) -> ModelCard:
    with state.db.session() as s:
        model = _find_model(s, model_id, user)
        if task not in (model.task_name, str(model.task_id)):
            raise HTTPException(404, f"model {model_id} belongs to task {model.task_name!r}, not {task!r}")
        return build_card(s, model)


@router.put("/models/{model_id}/card", response_model=ModelCard)
def set_card(model_id: ModelId, body: CardIn, user: CurrentUser, state: State) -> ModelCard:
    with state.db.session() as s:
        model = _find_model(s, model_id, user)
        if model.creator_id != user.id:
            raise HTTPException(403, f"only the creator of task {model.task_name!r} may describe its model")
        card = dict(model.model_metadata.get("card") or {})
        card.update(body.model_dump(exclude_none=True))
        model.model_metadata = {**model.model_metadata, "card": card}  # a new dict, so the JSON column is saved
        s.commit()
        return build_card(s, model)
