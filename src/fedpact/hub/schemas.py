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

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from fedpact.common.definition import TaskDefinition
from fedpact.hub.passwords import password_problem

NAME_CHARS = re.compile(r"^[A-Za-z0-9_.-]+$")
KIND_RE = re.compile(r"^[a-z0-9_.-]{1,64}$")
#: Largest values the database columns hold (INTEGER, BIGINT); anything larger is a 422, not a 500.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
#: Deepest JSON nesting accepted in free-form fields; deeper values break serialising them back.
MAX_JSON_DEPTH = 32
TASK_STATUSES = ("CREATED", "RUNNING", "COMPLETE", "FAILED", "CANCELLED")
TaskStatus = Literal["CREATED", "RUNNING", "COMPLETE", "FAILED", "CANCELLED"]
MembershipStatus = Literal["PENDING", "ADMITTED", "DECLINED", "REMOVED"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lowercase hex sha256")]


def _check_name(what: str, v: str, lo: int, hi: int) -> str:
    if not lo <= len(v) <= hi or not NAME_CHARS.match(v):
        raise ValueError(f"{what} names are {lo}-{hi} characters of letters, digits, '_', '.' and '-'; got {v!r}")
    return v


def _check_finite(v: Any, path: str = "", depth: int = 1) -> None:
    """Reject what a JSON column cannot store and give back: NaN and infinities (not JSON,
    PostgreSQL refuses them), integers beyond 64 bits and nesting deeper than MAX_JSON_DEPTH."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{path or 'value'} is nested more than {MAX_JSON_DEPTH} levels deep; flatten it")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{path or 'value'} is {v}; only finite numbers can be stored")
    if isinstance(v, int) and not isinstance(v, bool) and not -INT64_MAX - 1 <= v <= INT64_MAX:
        raise ValueError(f"{path or 'value'} is an integer beyond 64 bits; store it as a string")
    if isinstance(v, dict):
        for k, x in v.items():
            _check_finite(x, f"{path}.{k}" if path else str(k), depth + 1)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_finite(x, f"{path}[{i}]", depth + 1)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(_In):
    name: str
    password: str = Field(max_length=1024, description="at least 10 characters, not the user name, not common")
    organisation: str = Field(min_length=1, max_length=200)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("user", v, 3, 64)

    @field_validator("password")
    @classmethod
    def _password(cls, v: str, info: ValidationInfo) -> str:
        problem = password_problem(v, str(info.data.get("name", "")))
        if problem is not None:
            raise ValueError(problem)
        return v


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

    @field_validator("definition", mode="before")
    @classmethod
    def _definition_storable(cls, v: Any) -> Any:
        _check_finite(v, "definition")
        return v

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
    participants: list[str] = Field(
        description="admitted participants; shown only to the creator and admitted members, empty for others"
    )
    events: list[EventOut]
    membership: MembershipStatus | None = Field(
        default=None, description="the caller's own standing in the task; null if they never asked to join"
    )
    requests: list[str] = Field(
        default_factory=list, description="users waiting for approval; shown only to the creator"
    )


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
    status: MembershipStatus = Field(description="ADMITTED: take part now; PENDING: wait for the creator's approval")


class MemberOut(BaseModel):
    """One user's standing in a task, as the creator sees it."""

    task: str
    user: str
    organisation: str
    status: MembershipStatus
    joined_at: datetime
    decided_at: datetime | None


class MemberItems(BaseModel):
    items: list[MemberOut]


class BlobRef(_In):
    sha256: Sha256
    size: int = Field(ge=0, le=INT64_MAX)


class MessageIn(_In):
    sender: str = Field(max_length=80)
    recipient: str = Field(max_length=80)
    kind: str
    round: int | None = Field(default=None, ge=0, le=INT32_MAX)
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
    more: bool = Field(
        default=False,
        description="more messages are waiting: this page stopped at `limit` or at the hub's max_poll_bytes",
    )


class AckIn(_In):
    cursor: int = Field(ge=0, le=INT64_MAX)


class AckOut(BaseModel):
    cursor: int


class UploadIn(_In):
    sha256: Sha256
    size: int = Field(ge=0, le=INT64_MAX)
    private: bool = Field(
        default=False,
        description="creator only: keep the blob from the participants (e.g. evaluation data); "
        "a participant's blobs are always private to it and the creator",
    )


class DirectPartOut(BaseModel):
    """PUT bytes [offset, offset+size) of the blob to ``url`` (no hub credentials)."""

    number: int
    offset: int
    size: int
    url: str


class DirectUpload(BaseModel):
    """Present when the blob store takes the bytes directly: send each part, then complete."""

    part_size: int
    expires_in_s: int
    parts: list[DirectPartOut]


class UploadOut(BaseModel):
    upload_id: str | None
    offset: int
    complete: bool
    direct: DirectUpload | None = None


class UploadStatus(BaseModel):
    upload_id: str
    offset: int
    size: int
    sha256: str
    direct: DirectUpload | None = None


class OffsetOut(BaseModel):
    offset: int


def _finite_metrics(v: dict[str, float]) -> dict[str, float]:
    for k, x in v.items():
        if not math.isfinite(x):
            raise ValueError(f"metric {k!r} is {x}; only finite numbers can be recorded")
    return v


class RoundIn(_In):
    status: Literal["running", "complete", "failed"]
    participants: list[str] = Field(default_factory=list, max_length=100_000)
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
    round: int = Field(ge=0, le=INT32_MAX)
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
    contributors: list[str] = Field(default_factory=list, max_length=100_000)
    rounds: int = Field(ge=0, le=INT32_MAX)
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
