"""The model registry: finished models, visible to their creator and contributors.

A stored model outlives its task and keeps its own copy of the task's name and
definition, so deleting a task never takes a delivered model away from anyone.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import FileResponse, Response
from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from fedpact.hub.access import find_task, require_creator
from fedpact.hub.auth import CurrentUser, Principal, State
from fedpact.hub.routes.rounds import require_blob
from fedpact.hub.schemas import ModelIn, ModelItems, ModelOut
from fedpact.hub.tables import ModelContributor, StoredModel, User
from fedpact.hub.views import models_out

router = APIRouter(tags=["models"])

ModelId = Annotated[int, Path(ge=1, le=2**62)]


@router.post("/tasks/{task}/models", status_code=201, response_model=ModelOut)
def store_model(task: str, body: ModelIn, user: CurrentUser, state: State) -> ModelOut:
    with state.db.session() as s:
        row = find_task(s, task)
        require_creator(row, user, "store its models")
        require_blob(s, row, body.blob)
        names = list(dict.fromkeys(body.contributors))
        found = dict(s.execute(select(User.name, User.id).where(User.name.in_(names))).all()) if names else {}
        unknown = [n for n in names if n not in found]
        if unknown:
            raise HTTPException(422, f"unknown contributor(s): {', '.join(unknown)}; list registered user names only")
        model = StoredModel(
            task_id=row.id,
            task_name=row.name,
            creator_id=row.creator_id,
            sha256=body.blob.sha256,
            size=body.blob.size,
            model_metadata=body.metadata,
            definition=row.definition,
            rounds=body.rounds,
            metrics=dict(body.metrics),
        )
        s.add(model)
        s.flush()
        for n in names:
            s.add(ModelContributor(model_id=model.id, user_id=found[n]))
        s.commit()
        return models_out(s, [model])[0]


def _visible(user: Principal) -> Select[Any]:
    return select(StoredModel).where(
        or_(
            StoredModel.creator_id == user.id,
            StoredModel.id.in_(select(ModelContributor.model_id).where(ModelContributor.user_id == user.id)),
        )
    )


@router.get("/models", response_model=ModelItems)
def list_models(
    user: CurrentUser,
    state: State,
    task: Annotated[str | None, Query(description="only models of this task (name or id)")] = None,
) -> ModelItems:
    query = _visible(user)
    if task is not None:
        if task.isascii() and task.isdigit() and len(task) <= 18:
            query = query.where(StoredModel.task_id == int(task))
        else:
            query = query.where(StoredModel.task_name == task)
    with state.db.session() as s:
        return ModelItems(items=models_out(s, list(s.scalars(query.order_by(StoredModel.id)))))


def _find_model(s: Session, model_id: int, user: Principal) -> StoredModel:
    model = s.get(StoredModel, model_id)
    if model is None:
        raise HTTPException(404, f"no model {model_id}: list yours with GET /api/v1/models")
    allowed = model.creator_id == user.id or (
        s.scalars(
            select(ModelContributor.id).where(
                ModelContributor.model_id == model_id, ModelContributor.user_id == user.id
            )
        ).first()
        is not None
    )
    if not allowed:
        raise HTTPException(403, f"model {model_id} is visible only to the creator of its task and its contributors")
    return model


@router.get("/models/{model_id}", response_model=ModelOut)
def get_model(model_id: ModelId, user: CurrentUser, state: State) -> ModelOut:
    with state.db.reading() as s:
        return models_out(s, [_find_model(s, model_id, user)])[0]


@router.get("/models/{model_id}/download", response_class=FileResponse)
@router.head("/models/{model_id}/download", response_class=FileResponse, operation_id="head_model_download")
def download_model(model_id: ModelId, user: CurrentUser, state: State) -> Response:
    with state.db.reading() as s:
        model = _find_model(s, model_id, user)
        sha256 = model.sha256
    if not state.store.exists(sha256):
        raise HTTPException(500, f"model {model_id}'s file is missing from the blob store; tell the hub operator")
    return state.store.download(
        sha256, filename=f"model-{model_id}.safetensors", headers={"X-Content-SHA256": sha256}
    )
