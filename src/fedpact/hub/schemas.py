"""Request and response bodies of the API (pydantic 2).

Request models forbid unknown fields, like the task definition does, so a misspelt field
is a 422 that names it rather than a setting silently ignored. Validators phrase their
errors as instructions because the message reaches the user unchanged.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedpact.common.definition import TaskDefinition

NAME_CHARS = re.compile(r"^[A-Za-z0-9_.-]+$")
KIND_RE = re.compile(r"^[a-z0-9_.-]{1,64}$")
TASK_STATUSES = ("CREATED", "RUNNING", "COMPLETE", "FAILED", "CANCELLED")
TaskStatus = Literal["CREATED", "RUNNING", "COMPLETE", "FAILED", "CANCELLED"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lowercase hex sha256")]


def _check_name(what: str, v: str, lo: int, hi: int) -> str:
    if not lo <= len(v) <= hi or not NAME_CHARS.match(v):
        raise ValueError(f"{what} names are {lo}-{hi} characters of letters, digits, '_', '.' and '-'; got {v!r}")
    return v


def _check_finite(v: Any, path: str = "") -> None:
    """Reject NaN and infinities anywhere in a JSON value: they are not JSON and PostgreSQL refuses them."""
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{path or 'value'} is {v}; only finite numbers can be stored")
    if isinstance(v, dict):
        for k, x in v.items():
            _check_finite(x, f"{path}.{k}" if path else str(k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_finite(x, f"{path}[{i}]")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(_In):
    name: str
    password: str = Field(min_length=8, max_length=1024)
    organisation: str = Field(min_length=1, max_length=200)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("user", v, 3, 64)


class UserOut(BaseModel):
    id: int
    name: str
    organisation: str
    created_at: datetime


class LoginIn(_In):
    name: str = Field(max_length=200)
    password: str = Field(max_length=1024)


class LoginOut(BaseModel):
    token: str
    user: UserOut
    expires_at: datetime


class TaskCreate(_In):
    name: str
    description: str = Field(default="", max_length=20_000)
    definition: TaskDefinition

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        _check_name("task", v, 3, 100)
        if v.isdigit():
            raise ValueError("a task name cannot be only digits: /tasks/{task} accepts ids and names, so add a letter")
        return v


class EventOut(BaseModel):
    status: str
    at: datetime
    reason: str


class TaskOut(BaseModel):
    id: int
    name: str
    description: str
    definition: dict[str, Any]
    status: TaskStatus
    creator: str
    created_at: datetime
    updated_at: datetime
    participants: list[str]
    events: list[EventOut]


class TaskList(BaseModel):
    items: list[TaskOut]
    total: int


class TaskItems(BaseModel):
    items: list[TaskOut]


class StatusIn(_In):
    status: TaskStatus
    reason: str = Field(default="", max_length=2000)


class JoinOut(BaseModel):
    task: str
    task_id: int
    user: str
    joined_at: datetime


class BlobRef(_In):
    sha256: Sha256
    size: int = Field(ge=0)


class MessageIn(_In):
    sender: str = Field(max_length=80)
    recipient: str = Field(max_length=80)
    kind: str
    round: int | None = Field(default=None, ge=0)
    headers: dict[str, str] = Field(default_factory=dict)
    payload: str | None = Field(default=None, description="base64 of at most max_inline_bytes bytes")
    blob: BlobRef | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if not KIND_RE.match(v):
            raise ValueError(f"kind is 1-64 characters of a-z, 0-9, '_', '.' and '-'; got {v!r}")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 64:
            raise ValueError(f"at most 64 headers are allowed, got {len(v)}; put bulk data in the payload")
        for k, x in v.items():
            if not 1 <= len(k) <= 128 or len(x) > 4096:
                raise ValueError(f"header {k[:40]!r}: names are 1-128 characters and values at most 4096")
        return v


class MessageOut(BaseModel):
    id: int
    task_id: int
    sender: str
    recipient: str
    kind: str
    round: int | None
    headers: dict[str, str]
    payload: str | None
    blob: BlobRef | None
    created_at: datetime


class MailboxOut(BaseModel):
    messages: list[MessageOut]
    cursor: int
    task_status: TaskStatus


class AckIn(_In):
    cursor: int = Field(ge=0)


class AckOut(BaseModel):
    cursor: int


class UploadIn(_In):
    sha256: Sha256
    size: int = Field(ge=0)


class UploadOut(BaseModel):
    upload_id: str | None
    offset: int
    complete: bool


class UploadStatus(BaseModel):
    upload_id: str
    offset: int
    size: int
    sha256: str


class OffsetOut(BaseModel):
    offset: int


def _finite_metrics(v: dict[str, float]) -> dict[str, float]:
    for k, x in v.items():
        if not math.isfinite(x):
            raise ValueError(f"metric {k!r} is {x}; only finite numbers can be recorded")
    return v


class RoundIn(_In):
    status: Literal["running", "complete", "failed"]
    participants: list[str] = Field(default_factory=list)
    started_at: datetime
    finished_at: datetime | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    reason: str | None = Field(default=None, max_length=2000)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: dict[str, float]) -> dict[str, float]:
        return _finite_metrics(v)


class RoundOut(BaseModel):
    task_id: int
    number: int
    status: str
    participants: list[str]
    started_at: datetime
    finished_at: datetime | None
    metrics: dict[str, float]
    reason: str | None
    updated_at: datetime


class RoundItems(BaseModel):
    items: list[RoundOut]


class CheckpointIn(_In):
    round: int = Field(ge=0)
    blob: BlobRef
    state: dict[str, Any] = Field(default_factory=dict)

    @field_validator("state")
    @classmethod
    def _state(cls, v: dict[str, Any]) -> dict[str, Any]:
        _check_finite(v, "state")
        return v


class CheckpointOut(BaseModel):
    task_id: int
    round: int
    blob: BlobRef
    state: dict[str, Any]
    created_at: datetime
    history: list[int]


class ModelIn(_In):
    blob: BlobRef
    metadata: dict[str, Any] = Field(default_factory=dict)
    contributors: list[str] = Field(default_factory=list)
    rounds: int = Field(ge=0)
    metrics: dict[str, float] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, Any]) -> dict[str, Any]:
        _check_finite(v, "metadata")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: dict[str, float]) -> dict[str, float]:
        return _finite_metrics(v)


class ModelOut(BaseModel):
    id: int
    task_id: int | None
    task_name: str
    sha256: str
    size: int
    metadata: dict[str, Any]
    definition: dict[str, Any]
    contributors: list[str]
    rounds: int
    metrics: dict[str, float]
    created_at: datetime


class ModelItems(BaseModel):
    items: list[ModelOut]


class BackendHealth(BaseModel):
    kind: str
    status: Literal["ok", "down"]
    detail: str = ""


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    backends: dict[str, BackendHealth] = {}
