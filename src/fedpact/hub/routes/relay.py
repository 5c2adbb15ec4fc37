"""The relay: per-task mailboxes between the aggregator and the participants.

A mailbox read can long-poll. While it waits it holds neither a database connection nor a
worker thread: each check is a short query in the thread pool, and between checks the
request sleeps on the notifier until a message for its task is committed (on this replica
or, through the broker, on another). It re-checks the database on its own only as a
safety net (``safety_recheck_s``), or every ``recheck_interval_s`` while the notifier
cannot be trusted (the broker is down).
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import Select, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from fedpact.hub.access import (
    TERMINAL,
    TaskLike,
    TaskRefQuery,
    find_task_ref,
    is_joined,
    require_member,
    require_participant,
)
from fedpact.hub.auth import CurrentUser, Principal, State
from fedpact.hub.db import lock_task_messages
from fedpact.hub.inserts import ADVANCE_CURSOR, INSERT_MESSAGE, INSERT_MESSAGE_AND_BLOB
from fedpact.hub.notify import BROADCAST, PARTICIPANT_PREFIX
from fedpact.hub.quotas import (
    check_free_space,
    check_mailbox,
    check_stored_bytes,
    mailbox_bound_columns,
    stored_bytes_columns,
)
from fedpact.hub.routes.blobs import declared_size, receive_verified, record_blob
from fedpact.hub.schemas import (
    INT32_MAX,
    INT64_MAX,
    NAME_CHARS,
    AckIn,
    AckOut,
    BlobRef,
    MailboxOut,
    MessageIn,
    MessageOut,
)
from fedpact.hub.state import HubState
from fedpact.hub.tables import Blob, Cursor, Message, Task, User, utcnow
from fedpact.hub.views import message_out

router = APIRouter(tags=["relay"])

AGGREGATOR = "aggregator"
#: Bounds of the query and header parameters (``routes.lean`` parses them too).
MAX_ADDRESS = 80
MAX_KIND = 64
MAX_KEY = 200
MAX_PAGE = 1000
DEFAULT_PAGE = 100
ADDRESS_HELP = "addresses are 'aggregator', 'participants' or 'participant/<user name>'"


def _keyed_in(task_id: Any) -> Select[int]:
    """The message of task ``task_id`` (a parameter, or ``Task.id`` to correlate with) that
    holds ``sender``'s idempotency ``key``."""
    return select(Message.id).where(
        Message.task_id == task_id, Message.sender == bindparam("sender"), Message.idempotency_key == bindparam("key")
    )


def _newest_in(task_id: Any) -> Select[int]:
    """The newest message id in task ``task_id`` addressed to ``recipients`` (as above)."""
    return select(func.max(Message.id)).where(
        Message.task_id == task_id, Message.recipient.in_(bindparam("recipients", expanding=True))
    )


# The hot routes' statements, built once with bound parameters: at a thousand participants
# building a statement per request (and the ORM around it) cost more than running it.
_KEYED = _keyed_in(bindparam("task_id"))
_INSERT = insert(Message).returning(Message.id)
_PAGE_COLUMNS = (
    Message.id, Message.task_id, Message.sender, Message.recipient, Message.kind, Message.round, Message.headers,
    Message.payload, Message.blob_sha256, Message.blob_size, Message.created_at,
)
_PAGE = (
    select(*_PAGE_COLUMNS)
    .where(Message.task_id == bindparam("task_id"), Message.recipient.in_(bindparam("recipients", expanding=True)),
           Message.id > bindparam("start"))
    .order_by(Message.id)
    .limit(bindparam("limit"))
)
_STATUS = select(Task.status).where(Task.id == bindparam("task_id"))
# Not named like the columns: an UPDATE reserves those names for its SET clause.
_MINE = (Cursor.task_id == bindparam("b_task")) & (Cursor.address == bindparam("b_address")) & (
    Cursor.user_id == bindparam("b_user")
)
_STORED_CURSOR = select(Cursor.cursor).where(_MINE)
_ADVANCE = (
    update(Cursor).where(_MINE, Cursor.cursor < bindparam("b_cursor"))
    .values(cursor=bindparam("b_cursor"), updated_at=bindparam("b_now"))
)
_NEWEST_FOR = _newest_in(bindparam("task_id"))
# A poll finds its task, the caller's membership and stored cursor (and, when it acknowledges,
# the newest id it may acknowledge) in one statement.
_STORED_FOR_VIEWER = (
    select(Cursor.cursor)
    .where(Cursor.task_id == Task.id, Cursor.address == bindparam("b_address"), Cursor.user_id == bindparam("viewer"))
    .scalar_subquery()
)
_READER = TaskRefQuery(_STORED_FOR_VIEWER)
_ACKING_READER = TaskRefQuery(_STORED_FOR_VIEWER, _newest_in(Task.id).scalar_subquery())
# An update finds its task with its idempotency key's message and the quotas' look-ups
# (``hub.quotas``): one statement where there were four.
_SENDER = TaskRefQuery(_keyed_in(Task.id).scalar_subquery(), *mailbox_bound_columns(Task.id), *stored_bytes_columns())


def _page_out(row: Any) -> MessageOut:
    """A message of a page, from its row (no ORM object: this runs for every reader of a broadcast)."""
    return MessageOut(
        id=row.id, task_id=row.task_id, sender=row.sender, recipient=row.recipient, kind=row.kind, round=row.round,
        headers=row.headers, payload=None if row.payload is None else base64.b64encode(row.payload).decode("ascii"),
        blob=None if row.blob_sha256 is None else BlobRef(sha256=row.blob_sha256, size=row.blob_size or 0),
        created_at=row.created_at,
    )


def _participant_name(address: str) -> str | None:
    if address.startswith(PARTICIPANT_PREFIX):
        name = address[len(PARTICIPANT_PREFIX) :]
        if 3 <= len(name) <= 64 and NAME_CHARS.match(name):
            return name
    return None


def check_address(address: str, field: str) -> None:
    if address not in (AGGREGATOR, BROADCAST) and _participant_name(address) is None:
        raise HTTPException(422, f"{field} {address!r} is not an address: {ADDRESS_HELP}")


def _recipients(address: str) -> tuple[str, ...]:
    """The stored recipients a reader of ``address`` receives: a participant also gets broadcasts."""
    return (address, BROADCAST) if _participant_name(address) else (address,)


def _authorize_read(s: Session, task: TaskLike, user: Principal, address: str) -> None:
    if address == AGGREGATOR:
        if task.creator_id != user.id:
            raise HTTPException(403, f"only the creator of task {task.name!r} may read the aggregator's mailbox")
        return
    if address == BROADCAST:
        require_member(s, task, user, "read its broadcasts")
        return
    if _participant_name(address) != user.name:
        raise HTTPException(
            403, f"you may read only your own mailbox 'participant/{user.name}' and 'participants', not {address!r}"
        )
    require_participant(s, task, user, "read their mailbox")


def _authorize_send(s: Session, task: TaskLike, user: Principal, sender: str, recipient: str) -> None:
    check_address(sender, "sender")
    check_address(recipient, "recipient")
    if sender == AGGREGATOR:
        if task.creator_id != user.id:
            raise HTTPException(403, f"only the creator of task {task.name!r} may send as 'aggregator'")
        if recipient == AGGREGATOR:
            raise HTTPException(
                403, "the aggregator sends to 'participants' or 'participant/<user name>', not to itself"
            )
        name = _participant_name(recipient)
        if name is not None:
            member = s.scalars(select(User.id).where(User.name == name)).first()
            if member is None or not is_joined(s, task.id, member):
                raise HTTPException(
                    404,
                    f"{name!r} is not a participant of task {task.name!r} (never admitted, or removed); "
                    f"nobody would read {recipient!r}",
                )
        return
    if sender == BROADCAST or _participant_name(sender) != user.name:
        raise HTTPException(
            403, f"you may send only as 'participant/{user.name}' (or 'aggregator' if you created the task)"
        )
    require_participant(s, task, user, "send messages")
    if recipient != AGGREGATOR:
        raise HTTPException(403, "participants send only to 'aggregator'")


def _decode_payload(payload: str | None, limit: int) -> bytes | None:
    if payload is None:
        return None
    if len(payload) > (limit + 2) // 3 * 4:
        raise HTTPException(
            413, f"the inline payload exceeds {limit} bytes: upload it as a blob and reference it in 'blob'"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, "payload is not valid base64 (standard alphabet, with padding)") from None
    if len(data) > limit:
        raise HTTPException(
            413, f"the inline payload is {len(data)} bytes, over the limit of {limit}: upload it as a blob instead"
        )
    return data


@router.post("/tasks/{task}/messages", status_code=201, response_model=MessageOut)
async def post_message(
    task: str,
    body: MessageIn,
    user: CurrentUser,
    state: State,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=MAX_KEY)] = None,
) -> MessageOut:
    """Store one message. The checks and the insert are one write (a group commit on SQLite)."""
    payload = _decode_payload(body.payload, state.config.max_inline_bytes)

    def store(s: Session) -> tuple[MessageOut, bool]:
        row = find_task_ref(s, task, user.id)
        _authorize_send(s, row, user, body.sender, body.recipient)
        conn = s.connection()
        if idempotency_key is not None:
            keyed = {"task_id": row.id, "sender": body.sender, "key": idempotency_key}
            if conn.execute(_KEYED, keyed).first() is not None:
                earlier = _by_key(s, row.id, body.sender, idempotency_key)
                assert earlier is not None
                return message_out(earlier), True
        check_mailbox(s, state.config, row.id, body.recipient)
        check_free_space(state.config, len(payload or b""))
        if body.blob is not None:
            blob = s.scalars(select(Blob).where(Blob.task_id == row.id, Blob.sha256 == body.blob.sha256)).first()
            if blob is None:
                raise HTTPException(
                    404,
                    f"no blob {body.blob.sha256} in task {row.name!r}: upload it first with POST /api/v1/tasks/{row.name}/uploads",
                )
            if blob.size != body.blob.size:
                raise HTTPException(422, f"blob {body.blob.sha256} has {blob.size} bytes, not {body.blob.size}")
        values: dict[str, Any] = {
            "task_id": row.id,
            "sender": body.sender,
            "recipient": body.recipient,
            "kind": body.kind,
            "round": body.round,
            "headers": body.headers,
            "payload": payload,
            "blob_sha256": body.blob.sha256 if body.blob else None,
            "blob_size": body.blob.size if body.blob else None,
            "idempotency_key": idempotency_key,
            "created_at": utcnow(),
        }
        new_id, raced = _insert(s, values)
        if raced is not None:
            return raced, True
        return MessageOut(
            id=new_id, task_id=row.id, sender=body.sender, recipient=body.recipient, kind=body.kind,
            round=body.round, headers=body.headers,
            payload=None if payload is None else base64.b64encode(payload).decode("ascii"),
            blob=body.blob, created_at=values["created_at"],
        ), False

    out, replayed = await state.db.write(store)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
        return out
    state.metrics.messages.inc()
    state.notifier.notify(out.task_id, out.recipient)
    return out


@router.post(
    "/tasks/{task}/messages/raw",
    status_code=201,
    response_model=MessageOut,
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "required": True,
        }
    },
)
async def post_raw_message(
    task: str,
    request: Request,
    user: CurrentUser,
    state: State,
    response: Response,
    sender: Annotated[str, Query(max_length=MAX_ADDRESS)],
    recipient: Annotated[str, Query(max_length=MAX_ADDRESS)],
    kind: Annotated[str, Query(max_length=MAX_KIND)],
    round: Annotated[int | None, Query(ge=0, le=INT32_MAX)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=MAX_KEY)] = None,
) -> MessageOut:
    """A message whose raw body is its payload, stored as a blob: upload and send in one request.

    The payload is not forced to disk (no fsync): it belongs to a round in flight, which a
    resumed aggregator runs again after a power failure; checkpoints and models, uploaded
    through the blob routes, are.
    """
    out, replayed = await store_raw_message(state, user, request, task, sender=sender, recipient=recipient, kind=kind,
                                            round=round, idempotency_key=idempotency_key)  # fmt: skip
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return out


async def store_raw_message(
    state: HubState, user: Principal, request: Request, task: str, *, sender: str, recipient: str, kind: str,
    round: int | None, idempotency_key: str | None,
) -> tuple[MessageOut, bool]:
    """Store a raw message from its parameters as parsed (by FastAPI, or by ``routes.lean``):
    (the message, whether an earlier request with the same idempotency key had stored it)."""
    try:
        head = MessageIn(sender=sender, recipient=recipient, kind=kind, round=round)
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(e["msg"] for e in exc.errors())) from None
    size = declared_size(request, state.config.max_blob_bytes)

    def authorize() -> tuple[int, MessageOut | None]:
        with state.db.reading() as s:
            row = find_task_ref(s, task, user.id, _SENDER, sender=head.sender, key=idempotency_key,
                                address=head.recipient, user_id=user.id)  # fmt: skip
            _authorize_send(s, row, user, head.sender, head.recipient)
            keyed, acked, newest, *stored = row.extra
            if idempotency_key and keyed is not None:
                earlier = _by_key(s, row.id, head.sender, idempotency_key)
                assert earlier is not None
                return row.id, message_out(earlier)
            check_mailbox(s, state.config, row.id, head.recipient, bound=(acked, newest))
            check_stored_bytes(s, state.config, user.id, size, sums=stored)
            check_free_space(state.config, size)
            return row.id, None

    task_id, replay = await run_in_threadpool(authorize)
    if replay is not None:
        return replay, True
    got = await receive_verified(request, state, size)
    partial = got.partial

    def stage() -> str:
        sha256 = got.stage()
        state.store.prepare(partial, sha256)  # a network upload, outside the write lock
        return sha256

    def keyed_before(s: Session) -> MessageOut | None:
        """The message this idempotency key already made: the body is dropped, nothing changes."""
        if not idempotency_key or not _keyed(s, task_id, head.sender, idempotency_key):
            return None
        earlier = _by_key(s, task_id, head.sender, idempotency_key)
        assert earlier is not None
        state.store.discard(partial)
        return message_out(earlier)

    def message(new_id: int, values: dict[str, Any]) -> MessageOut:
        return MessageOut(
            id=new_id, task_id=task_id, sender=head.sender, recipient=head.recipient, kind=head.kind,
            round=head.round, headers={}, payload=None, blob=BlobRef(sha256=sha256, size=size),
            created_at=values["created_at"],
        )

    def values() -> dict[str, Any]:
        return {
            "task_id": task_id, "sender": head.sender, "recipient": head.recipient, "kind": head.kind,
            "round": head.round, "headers": {}, "payload": None, "blob_sha256": sha256, "blob_size": size,
            "idempotency_key": idempotency_key, "created_at": utcnow(),
        }

    def store(s: Session) -> tuple[MessageOut, bool]:
        if (earlier := keyed_before(s)) is not None:
            return earlier, True
        # The blob and the message that names it: one transaction, one commit. The task's
        # message lock comes first, as in a reclaiming pass (hub.blobgc), which holds it and
        # then deletes blob rows: renewing a row before taking it could wait in a cycle.
        lock_task_messages(s, task_id)
        record_blob(s, state, task_id, partial, sha256, size, user.id)
        row = values()
        new_id, raced = _insert(s, row, locked=True)
        if raced is not None:
            return raced, True
        return message(new_id, row), False

    def store_in_one_statement() -> tuple[MessageOut, bool]:
        """PostgreSQL: the lock, the blob row and the message in one statement (``hub.inserts``)."""
        with state.db.statements() as s:
            # No second look for the key here (authorize() looked before the body came): a
            # retry racing this request is what ON CONFLICT catches, one round trip fewer.
            state.store.commit(partial, sha256)
            row = values() | {"uploaded_by": user.id, "shared": False}
            new_id = s.connection().execute(INSERT_MESSAGE_AND_BLOB, row).scalar()
            if new_id is None:
                return _raced(s, row), True
            return message(new_id, row), False

    try:
        sha256 = await run_in_threadpool(stage)
        if state.db.dialect == "postgresql":
            out, replayed = await run_in_threadpool(store_in_one_statement)
        else:
            out, replayed = await state.db.write(store)
    except BaseException:
        state.store.discard(partial)
        raise
    if got.data is not None and got.sha256 is not None:
        state.blob_cache.put(got.sha256, got.data, got.checksum)  # its reader (the aggregator) fetches it next
    if not replayed:
        state.metrics.messages.inc()
        state.notifier.notify(task_id, head.recipient)
    return out, replayed


def _insert(s: Session, values: dict[str, Any], *, locked: bool = False) -> tuple[int, MessageOut | None]:
    """Insert a message row under its task's lock: (its id, None), or (0, the earlier message)
    when the same idempotency key raced in from another request (another replica).

    A Core INSERT: the ORM's unit of work costs more than the rest of the route. On SQLite
    the group commit's one writer already checked the key, so the insert cannot collide and
    needs no savepoint of its own. On PostgreSQL the lock and the insert are one statement
    (``hub.inserts``), so the lock is held for the COMMIT's round trip only. ``locked``: the
    caller holds the task's message lock already (taking it again would cost a round trip).
    """
    conn = s.connection()
    if conn.dialect.name == "postgresql" and not locked:
        new_id = conn.execute(INSERT_MESSAGE, values).scalar()
        return (new_id, None) if new_id is not None else (0, _raced(s, values))
    if not locked:
        lock_task_messages(s, values["task_id"])
    try:
        if conn.dialect.name == "sqlite":
            return conn.execute(_INSERT, values).scalar_one(), None
        with s.begin_nested():
            return conn.execute(_INSERT, values).scalar_one(), None
    except IntegrityError:
        key = values["idempotency_key"]
        earlier = _by_key(s, values["task_id"], values["sender"], key) if key else None
        if earlier is None:
            raise
        return 0, message_out(earlier)


def _raced(s: Session, values: dict[str, Any]) -> MessageOut:
    """The message that took this idempotency key first (``ON CONFLICT DO NOTHING`` inserted none)."""
    earlier = _by_key(s, values["task_id"], values["sender"], values["idempotency_key"])
    if earlier is None:  # only the key's unique constraint can make the insert do nothing
        raise RuntimeError(f"a message insert into task {values['task_id']} did nothing, and no message holds its key")
    return message_out(earlier)


def _keyed(s: Session, task_id: int, sender: str, key: str) -> bool:
    """Whether a message with this idempotency key exists: one index look-up, no ORM object."""
    return s.connection().execute(_KEYED, {"task_id": task_id, "sender": sender, "key": key}).first() is not None


def _by_key(s: Session, task_id: int, sender: str, key: str) -> Message | None:
    return s.scalars(
        select(Message).where(Message.task_id == task_id, Message.sender == sender, Message.idempotency_key == key)
    ).first()


@dataclass
class _Reader:
    task_id: int
    user_id: int
    status: str
    acked: int


@router.get("/tasks/{task}/mailbox/{address:path}", response_model=MailboxOut)
async def read_mailbox(
    task: str,
    address: str,
    user: CurrentUser,
    state: State,
    after: Annotated[
        int | None, Query(ge=0, le=INT64_MAX, description="return messages with a larger id; default: the acknowledged cursor")
    ] = None,
    wait: Annotated[float, Query(ge=0, description="long-poll for up to this many seconds")] = 0.0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    ack: Annotated[
        bool,
        Query(description="also acknowledge `after`: the caller has handled everything up to it (saves a request)"),
    ] = False,
) -> MailboxOut:
    return await answer_poll(state, user, task, address, after=after, wait=wait, limit=limit, ack=ack)


async def answer_poll(
    state: HubState, user: Principal, task: str, address: str, *, after: int | None, wait: float, limit: int, ack: bool
) -> MailboxOut:
    """A poll's answer, from its parameters as parsed (by FastAPI, or by ``routes.lean``)."""
    check_address(address, "address")
    if wait > state.config.max_wait_s:
        raise HTTPException(422, f"wait is at most {state.config.max_wait_s:g} seconds; poll again to wait longer")
    if ack and after is None:
        raise HTTPException(422, "ack=true acknowledges the cursor given as `after`; pass after=<cursor> too")

    recipients = _recipients(address)
    page_bytes = state.config.max_poll_bytes
    acknowledged = after if ack else None  # the cursor this poll acknowledges, if any

    def page_after(s: Session, task_id: int, start: int) -> tuple[list[MessageOut], bool]:
        rows = s.connection().execute(
            _PAGE, {"task_id": task_id, "recipients": list(recipients), "start": start, "limit": limit + 1}
        )
        page: list[MessageOut] = []
        used = 0
        for m in rows:
            size = len(m.payload or b"")
            # The first message always fits, so a reader can never get stuck behind one.
            if len(page) == limit or (page and page_bytes > 0 and used + size > page_bytes):
                return page, True
            page.append(_page_out(m))
            used += size
        return page, False

    def open_reader() -> tuple[_Reader, int, list[MessageOut], bool]:
        """Authorise, read the stored cursor and the first page in one read transaction."""
        with state.db.reading() as s:
            if acknowledged is not None:
                row = find_task_ref(s, task, user.id, _ACKING_READER, b_address=address, recipients=list(recipients))
            else:
                row = find_task_ref(s, task, user.id, _READER, b_address=address)
            _authorize_read(s, row, user, address)
            reader = _Reader(task_id=row.id, user_id=user.id, status=row.status, acked=row.extra[0] or 0)
            if acknowledged is not None and acknowledged > reader.acked:
                _check_newest(row.extra[1], address, acknowledged)
            start = reader.acked if after is None else after
            page, more = page_after(s, row.id, start)
            return reader, start, page, more

    def fetch(known: str) -> tuple[list[MessageOut], str, bool]:
        """The next page; the task's status is read only when the page is empty (the wait
        goes on unless the task ended): a page answers with ``known``, the status read when
        the poll began, as the first page does."""
        with state.db.reading() as s:
            page, more = page_after(s, reader.task_id, start)
            if page:
                return page, known, more
            status = s.connection().execute(_STATUS, {"task_id": reader.task_id}).scalar()
            if status is None:
                raise HTTPException(404, f"task {task!r} was deleted")
            return page, status, more

    def advance(cursor: int) -> None:
        """PostgreSQL: the acknowledgement is one statement (:func:`_store_cursor`), run in autocommit."""
        with state.db.statements() as s:
            _store_cursor(s, reader.task_id, address, user.id, cursor)

    # A wait's mark must come before the query it follows, so that a message committed in
    # between wakes it. Clients poll by task id, which gives the mark before the first query;
    # a poll by name takes it after, and queries once more before it waits.
    known_id = int(task) if task.isascii() and task.isdigit() and len(task) <= 18 else None
    mark = state.notifier.mark(known_id, address) if known_id is not None else None
    reader, start, messages, more = await run_in_threadpool(open_reader)
    if acknowledged is not None and acknowledged > reader.acked:
        done = acknowledged
        if state.db.dialect == "postgresql":
            await run_in_threadpool(advance, done)
        else:
            await state.db.write(lambda s: _store_cursor(s, reader.task_id, address, user.id, done))
    status = reader.status
    if mark is None:
        mark = state.notifier.mark(reader.task_id, address)
        if not messages and wait > 0:
            messages, status, more = await run_in_threadpool(fetch, status)
    deadline = time.monotonic() + wait
    while True:
        remaining = deadline - time.monotonic()
        ended = status in TERMINAL and status != reader.status
        if messages or remaining <= 0 or ended:
            cursor = messages[-1].id if messages else start
            return MailboxOut(messages=messages, cursor=cursor, task_status=status, more=more)  # type: ignore[arg-type]
        recheck = state.config.safety_recheck_s if state.notifier.trusted else state.config.recheck_interval_s
        state.metrics.waiting_polls.inc()
        try:
            await state.notifier.wait(reader.task_id, min(recheck, remaining), since=mark, address=address)
        finally:
            state.metrics.waiting_polls.dec()
        mark = state.notifier.mark(reader.task_id, address)
        messages, status, more = await run_in_threadpool(fetch, status)


@router.post("/tasks/{task}/mailbox/{address:path}/ack", response_model=AckOut)
async def ack(task: str, address: str, body: AckIn, user: CurrentUser, state: State) -> AckOut:
    check_address(address, "address")
    return AckOut(cursor=await state.db.write(lambda s: _acknowledge(s, task, address, user, body.cursor)))


def _check_ack_cursor(s: Session, task_id: int, address: str, cursor: int) -> None:
    """Only ids the reader can have read may be acknowledged."""
    newest = s.connection().execute(_NEWEST_FOR, {"task_id": task_id, "recipients": list(_recipients(address))}).scalar()
    _check_newest(newest, address, cursor)


def _check_newest(newest: int | None, address: str, cursor: int) -> None:
    newest = newest or 0
    if cursor > newest:
        raise HTTPException(
            422,
            f"cursor {cursor} is beyond the newest message in {address!r} ({newest}): acknowledge only ids you have read",
        )


def _store_cursor(s: Session, task_id: int, address: str, user_id: int, cursor: int) -> int:
    """Move the stored cursor forward to ``cursor`` (never back); the stored value.

    One statement in the usual case (the reader's cursor moves on): this runs once per poll
    of every participant. On PostgreSQL an upsert (``hub.inserts``) also makes a missing
    cursor; elsewhere an UPDATE, then an INSERT if there was none.
    """
    conn = s.connection()
    mine = {"b_task": task_id, "b_address": address, "b_user": user_id}
    moving = {**mine, "b_cursor": cursor, "b_now": utcnow()}
    if conn.dialect.name == "postgresql":
        if conn.execute(ADVANCE_CURSOR, moving).first() is not None:
            return cursor
    elif conn.execute(_ADVANCE, moving).rowcount:
        return cursor
    stored: int | None = conn.execute(_STORED_CURSOR, mine).scalar()
    if stored is None:
        s.add(Cursor(task_id=task_id, address=address, user_id=user_id, cursor=cursor))
        return cursor
    return stored


def _acknowledge(s: Session, task: str, address: str, user: Principal, cursor: int) -> int:
    """Record that ``user`` handled ``address`` up to ``cursor``; the stored cursor never moves back."""
    row = find_task_ref(s, task, user.id)
    _authorize_read(s, row, user, address)
    _check_ack_cursor(s, row.id, address, cursor)
    return _store_cursor(s, row.id, address, user.id, cursor)
