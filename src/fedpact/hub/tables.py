"""The hub's database tables (SQLAlchemy 2 typed declarative).

Only portable column types are used (JSON, not JSONB; integers and strings, no SQLite
quirks) so the same metadata creates the schema on SQLite and PostgreSQL. Deletion of a
task is done explicitly in code (``routes.tasks``) rather than by cascades, so the rules
about which blobs and models survive live in one readable place.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC.

    SQLite keeps no zone, PostgreSQL does; normalising here means every API response
    carries an explicit UTC offset whichever database is underneath.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class User(Base):
    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    organisation: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Token(Base):
    """A bearer token, stored only as its sha256 so a leaked database grants no access."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class Task(Base):
    """A learning task.

    Ids are never reused (``sqlite_autoincrement``): a client still holding the id of a
    deleted task must get 404, not someone else's task.
    """

    __tablename__ = "tasks"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    definition: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), index=True)
    creator_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TaskEvent(Base):
    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


#: Membership states. Only ADMITTED members take part; the row of a declined or removed
#: user is kept so that joining again cannot undo the creator's decision.
PENDING, ADMITTED, DECLINED, REMOVED = "PENDING", "ADMITTED", "DECLINED", "REMOVED"


class Membership(Base):
    """A user's relation to a task: a join request, an admission, or the creator's refusal.

    ``status`` defaults to ADMITTED on the database side so rows written before admission
    existed keep their access after the column is added.
    """

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("task_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=ADMITTED, server_default=ADMITTED)
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Message(Base):
    """A relayed message; its id is the readers' cursor.

    Readers page by ``id > cursor`` within one task, so the ids of one task must become
    visible in increasing order: a reader that saw id ``n`` must already be able to see
    every id below ``n`` of that task that will ever exist. Why that holds:

    - Every insert of a task's message first takes a lock that serialises that task's
      inserts until commit (``db.lock_task_messages``): SQLite's ``BEGIN IMMEDIATE``
      write lock, a PostgreSQL advisory lock keyed by the task. The id is drawn at the
      INSERT, after the lock: from SQLite's autoincrement, or from the PostgreSQL sequence
      (``nextval``, cache 1, so values grow in the order of the calls, whichever process
      or replica calls). So if message A of a task took the lock before message B, A's id
      is smaller and A committed before B even drew its id.
    - PostgreSQL releases a transaction's locks only after its commit is visible to new
      snapshots. A reader's query runs on one snapshot; if B is in it, B committed before
      the snapshot, hence A did too, and A is in it as well. No gap below a visible id can
      fill in later, so a cursor never moves past a message that is still to appear.
    - A rolled-back insert leaves a hole in the ids that never fills; skipping it is right.
      Ids of deleted messages are never reused (``sqlite_autoincrement``; sequences never
      go back), so a reader's old cursor cannot hide a new message.

    Different tasks never wait for each other; one task's senders queue only for the
    moment between their INSERT and COMMIT. This holds for any number of hub replicas on
    one database, since the lock lives in the database, not in a process.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("task_id", "sender", "idempotency_key"),
        Index("ix_messages_task_recipient_id", "task_id", "recipient", "id"),
        Index("ix_messages_task_blob", "task_id", "blob_sha256"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    sender: Mapped[str] = mapped_column(String(80))
    recipient: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(64))
    round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    headers: Mapped[dict[str, Any]] = mapped_column()
    payload: Mapped[bytes | None] = mapped_column(nullable=True)
    blob_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    blob_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Cursor(Base):
    """How far a reader has acknowledged one mailbox; unacknowledged messages are re-sent."""

    __tablename__ = "cursors"
    __table_args__ = (UniqueConstraint("task_id", "address", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    address: Mapped[str] = mapped_column(String(80))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Blob(Base):
    """A blob's membership in a task; the bytes live once in the content-addressed store.

    Who may read it follows from ``uploaded_by`` and ``shared`` (see ``hub.access``): a
    blob the creator uploads is shared with the admitted participants (the global model)
    unless the upload asks to keep it private (evaluation data); a participant's blob is
    read only by its uploader and the creator, even if another member sends the same bytes.
    """

    __tablename__ = "blobs"
    __table_args__ = (UniqueConstraint("task_id", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    #: Indexed for the max_stored_bytes_per_user quota, summed on every upload.
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    shared: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Upload(Base):
    """An unfinished upload; the bytes received so far are the partial file's length.

    A session belongs to the user who opened it: another user sending the same content
    gets a session of their own, so nobody can write into or finish someone else's.
    """

    __tablename__ = "uploads"
    __table_args__ = (UniqueConstraint("task_id", "sha256", "created_by"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    private: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("task_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    participants: Mapped[list[Any]] = mapped_column()
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column()
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """Every checkpoint is kept as a row; the latest one is what a resumed aggregator loads."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoredModel(Base):
    """A finished model. It outlives its task, so it copies the task's name and definition."""

    __tablename__ = "models"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), nullable=True, index=True)
    task_name: Mapped[str] = mapped_column(String(100))
    creator_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    model_metadata: Mapped[dict[str, Any]] = mapped_column("metadata")
    definition: Mapped[dict[str, Any]] = mapped_column()
    rounds: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HostedLease(Base):
    """Which hub replica runs a task's hosted aggregator, until when.

    The owner renews ``expires_at`` while its aggregator runs; a replica that finds the
    lease expired takes it over with one conditional UPDATE (only one can win), fences the
    old aggregator by revoking its token and starts a new one with ``--resume``. The row
    exists while the task wants a hosted aggregator.
    """

    __tablename__ = "hosted_leases"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column()
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class HostedWorker(Base):
    """The record of a task's hosted aggregator, readable by every replica.

    The replica named in ``owner`` (the one holding the task's :class:`HostedLease`) is the
    only one that changes the process fields; every write it makes is conditional on
    ``owner``, so a replica that lost its lease cannot overwrite its successor's record. Any
    replica may set ``stop_requested``; the owner acts on it. Evaluation data is named by
    its blob (``eval_sha256``), not a path, so whichever replica starts the aggregator copies
    it from the blob store. ``log_start`` .. ``log_size`` are the byte offsets of the log kept
    in :class:`HostedLogChunk`.
    """

    __tablename__ = "hosted_workers"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    wanted: Mapped[bool] = mapped_column(default=False)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pid: Mapped[int | None] = mapped_column(nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    exit_code: Mapped[int | None] = mapped_column(nullable=True)
    resume: Mapped[bool] = mapped_column(default=False)
    restarts: Mapped[int] = mapped_column(default=0)
    started_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    stop_requested: Mapped[str | None] = mapped_column(Text, nullable=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    eval_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    eval_format: Mapped[str | None] = mapped_column(String(8), nullable=True)
    eval_label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    mlflow_uri: Mapped[str | None] = mapped_column(String(500), nullable=True)
    log_start: Mapped[int] = mapped_column(BigInteger, default=0)
    log_size: Mapped[int] = mapped_column(BigInteger, default=0)
    #: How far the owner has shipped its local log file (only meaningful to the owner's machine).
    log_file_pos: Mapped[int] = mapped_column(BigInteger, default=0)


class HostedLogChunk(Base):
    """Bytes ``pos`` .. ``pos + size`` of a hosted aggregator's log, appended by its owner."""

    __tablename__ = "hosted_log_chunks"
    __table_args__ = (UniqueConstraint("task_id", "pos"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    pos: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column()


class ModelContributor(Base):
    __tablename__ = "model_contributors"
    __table_args__ = (UniqueConstraint("model_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
