"""The relay's hot writes on PostgreSQL, each one statement: a message insert that takes its
task's lock itself, and a reader's cursor moving forward.

The relay serialises a task's message inserts on an advisory lock held until commit (the
ordering argument is in ``tables.Message``). Taken as its own statement, the lock is held
across every later round trip of the transaction, and in the hub each round trip also waits
for the GIL when it returns: with ten 4 MB updates arriving at once, a lock held for
milliseconds per insert made the updates queue (13 ms of waiting per lock taken, measured
with ``log_min_duration_statement`` over ``bench/round_overhead.py`` on PostgreSQL).

Here the lock, the blob row and the message row are one ``INSERT ... SELECT`` whose source
is the lock's CTE: the executor draws the id (``nextval``) only for a row the lock's
SELECT produced, so after the lock, as the ordering argument needs. Run in autocommit, the
statement is its own transaction: the lock is held only while the database executes it
and commits. An idempotency key that raced in from another request (another replica)
makes ``ON CONFLICT DO NOTHING`` return no row instead of failing the transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert, Integer, bindparam, func, select
from sqlalchemy.dialects import postgresql

from fedpact.hub.db import MESSAGE_LOCK_SPACE
from fedpact.hub.tables import Blob, Cursor, Message

#: The columns of a message row the relay writes (its id comes from the sequence).
MESSAGE_COLUMNS = (
    "task_id", "sender", "recipient", "kind", "round", "headers", "payload", "blob_sha256", "blob_size",
    "idempotency_key", "created_at",
)  # fmt: skip


def _param(table: Any, column: str, name: str | None = None) -> Any:
    """A bound parameter typed as the column, so PostgreSQL is told each value's type."""
    return bindparam(name or column, type_=table.c[column].type)


def _locked_insert(with_blob: bool) -> Insert:
    lock = select(
        func.pg_advisory_xact_lock(bindparam("lock_space", MESSAGE_LOCK_SPACE, type_=Integer),
                                   bindparam("task_id", type_=Integer)).label("held")
    ).cte("task_lock")
    source: Any = lock
    if with_blob:
        blobs = Blob.__table__
        upsert = postgresql.insert(Blob).from_select(
            ["task_id", "sha256", "size", "uploaded_by", "shared", "created_at"],
            select(_param(blobs, "task_id"), _param(blobs, "sha256", "blob_sha256"),
                   _param(blobs, "size", "blob_size"), _param(blobs, "uploaded_by"), _param(blobs, "shared"),
                   _param(blobs, "created_at")).select_from(lock),
        )
        # The task holds these bytes already: renew the row's age only (its uploader and
        # sharing stay), as ``routes.blobs.record_blob`` does on SQLite.
        source = upsert.on_conflict_do_update(
            index_elements=["task_id", "sha256"], set_={"created_at": upsert.excluded.created_at}
        ).returning(Blob.id).cte("blob_row")
    messages = Message.__table__
    insert = postgresql.insert(Message).from_select(
        list(MESSAGE_COLUMNS), select(*[_param(messages, c) for c in MESSAGE_COLUMNS]).select_from(source)
    )
    return insert.on_conflict_do_nothing(index_elements=["task_id", "sender", "idempotency_key"]).returning(Message.id)


#: Values: a message row's (``MESSAGE_COLUMNS``). Returns the new id, or no row when the
#: sender's idempotency key is taken.
INSERT_MESSAGE = _locked_insert(with_blob=False)
#: The same, plus the blob row the message names (``uploaded_by``, ``shared``), inserted or
#: renewed under the same lock, before the message: the order of a reclaiming pass
#: (``hub.blobgc``), which holds the lock while it deletes blob rows.
INSERT_MESSAGE_AND_BLOB = _locked_insert(with_blob=True)


def _advance_cursor() -> Insert:
    upsert = postgresql.insert(Cursor).values(
        task_id=bindparam("b_task"), address=bindparam("b_address"), user_id=bindparam("b_user"),
        cursor=bindparam("b_cursor"), updated_at=bindparam("b_now"),
    )  # fmt: skip
    return upsert.on_conflict_do_update(
        index_elements=["task_id", "address", "user_id"],
        set_={"cursor": upsert.excluded.cursor, "updated_at": upsert.excluded.updated_at},
        where=Cursor.cursor < upsert.excluded.cursor,
    ).returning(Cursor.cursor)


#: A reader's stored cursor moved forward to ``b_cursor`` (created if it has none), never
#: back. Returns the cursor it stored, or no row when the stored one was not behind. One
#: statement where UPDATE-else-INSERT took up to three, on every poll that acknowledges.
ADVANCE_CURSOR = _advance_cursor()
