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
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from fedpact.hub.access import TERMINAL, find_task, is_joined, require_member, require_participant
from fedpact.hub.auth import CurrentUser, Principal, State
from fedpact.hub.db import lock_task_messages
from fedpact.hub.notify import BROADCAST, PARTICIPANT_PREFIX
from fedpact.hub.quotas import check_free_space, check_mailbox, check_stored_bytes
from fedpact.hub.routes.blobs import declared_size, receive_verified, store_verified
from fedpact.hub.schemas import (
    INT32_MAX,
    INT64_MAX,
    NAME_CHARS,
    AckIn,
    AckOut,
    MailboxOut,
    MessageIn,
    MessageOut,
)
from fedpact.hub.state import HubState
from fedpact.hub.tables import Blob, Cursor, Message, Task, User, utcnow
from fedpact.hub.views import message_out

router = APIRouter(tags=["relay"])

AGGREGATOR = "aggregator"
ADDRESS_HELP = "addresses are 'aggregator', 'participants' or 'participant/<user name>'"


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


def _authorize_read(s: Session, task: Task, user: Principal, address: str) -> None:
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


def _authorize_send(s: Session, task: Task, user: Principal, sender: str, recipient: str) -> None:
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
def post_message(
    task: str,
    body: MessageIn,
    user: CurrentUser,
    state: State,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> MessageOut:
    payload = _decode_payload(body.payload, state.config.max_inline_bytes)
    with state.db.session() as s:
        row = find_task(s, task)
        _authorize_send(s, row, user, body.sender, body.recipient)
        if idempotency_key is not None:
            earlier = _by_key(s, row.id, body.sender, idempotency_key)
            if earlier is not None:
                response.headers["Idempotent-Replayed"] = "true"
                return message_out(earlier)
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
        msg = Message(
            task_id=row.id,
            sender=body.sender,
            recipient=body.recipient,
            kind=body.kind,
            round=body.round,
            headers=body.headers,
            payload=payload,
            blob_sha256=body.blob.sha256 if body.blob else None,
            blob_size=body.blob.size if body.blob else None,
            idempotency_key=idempotency_key,
        )
        lock_task_messages(s, row.id)
        s.add(msg)
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
            earlier = _by_key(s, row.id, body.sender, idempotency_key) if idempotency_key else None
            if earlier is None:
                raise
            response.headers["Idempotent-Replayed"] = "true"
            return message_out(earlier)
        out = message_out(msg)
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
    sender: Annotated[str, Query(max_length=80)],
    recipient: Annotated[str, Query(max_length=80)],
    kind: Annotated[str, Query(max_length=64)],
    round: Annotated[int | None, Query(ge=0, le=INT32_MAX)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> MessageOut:
    """A message whose raw body is its payload, stored as a blob: upload and send in one request.

    The payload is not forced to disk (no fsync): it belongs to a round in flight, which a
    resumed aggregator runs again after a power failure; checkpoints and models, uploaded
    through the blob routes, are.
    """
    try:
        head = MessageIn(sender=sender, recipient=recipient, kind=kind, round=round)
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(e["msg"] for e in exc.errors())) from None
    size = declared_size(request, state.config.max_blob_bytes)

    def authorize() -> tuple[int, MessageOut | None]:
        with state.db.reading() as s:
            row = find_task(s, task)
            _authorize_send(s, row, user, head.sender, head.recipient)
            earlier = _by_key(s, row.id, head.sender, idempotency_key) if idempotency_key else None
            if earlier is None:
                check_mailbox(s, state.config, row.id, head.recipient)
                check_stored_bytes(s, state.config, user.id, size)
                check_free_space(state.config, size)
            return row.id, message_out(earlier) if earlier is not None else None

    task_id, replay = await run_in_threadpool(authorize)
    if replay is not None:
        response.headers["Idempotent-Replayed"] = "true"
        return replay
    got = await receive_verified(request, state, size)
    partial = got.partial

    def store() -> tuple[MessageOut, bool]:
        sha256 = got.stage()
        state.store.prepare(partial, sha256)  # a network upload, outside the write lock
        with state.db.session() as s:
            earlier = _by_key(s, task_id, head.sender, idempotency_key) if idempotency_key else None
            if earlier is not None:
                state.store.discard(partial)
                return message_out(earlier), True
            # The blob and the message that names it: one transaction, one commit.
            store_verified(s, state, task_id, partial, sha256, size, user.id, commit=False)
            msg = Message(
                task_id=task_id, sender=head.sender, recipient=head.recipient, kind=head.kind, round=head.round,
                headers={}, payload=None, blob_sha256=sha256, blob_size=size, idempotency_key=idempotency_key,
            )
            lock_task_messages(s, task_id)
            s.add(msg)
            s.commit()
            return message_out(msg), False

    try:
        out, replayed = await run_in_threadpool(store)
    except BaseException:
        state.store.discard(partial)
        raise
    if got.data is not None and got.sha256 is not None:
        state.blob_cache.put(got.sha256, got.data)  # its reader (the aggregator) fetches it next
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        state.metrics.messages.inc()
        state.notifier.notify(task_id, head.recipient)
    return out


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
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ack: Annotated[
        bool,
        Query(description="also acknowledge `after`: the caller has handled everything up to it (saves a request)"),
    ] = False,
) -> MailboxOut:
    check_address(address, "address")
    if wait > state.config.max_wait_s:
        raise HTTPException(422, f"wait is at most {state.config.max_wait_s:g} seconds; poll again to wait longer")
    if ack and after is None:
        raise HTTPException(422, "ack=true acknowledges the cursor given as `after`; pass after=<cursor> too")

    def open_reader() -> _Reader:
        with state.db.reading() as s:
            row = find_task(s, task)
            _authorize_read(s, row, user, address)
            acked = s.scalars(
                select(Cursor.cursor).where(
                    Cursor.task_id == row.id, Cursor.address == address, Cursor.user_id == user.id
                )
            ).first()
            return _Reader(task_id=row.id, user_id=user.id, status=row.status, acked=acked or 0)

    reader = await run_in_threadpool(open_reader)
    if ack and after is not None and after > reader.acked:
        await run_in_threadpool(_acknowledge, state, task, address, user, after)
    start = reader.acked if after is None else after
    recipients = _recipients(address)

    page_bytes = state.config.max_poll_bytes

    def fetch() -> tuple[list[MessageOut], str, bool]:
        with state.db.reading() as s:
            status = s.scalars(select(Task.status).where(Task.id == reader.task_id)).first()
            if status is None:
                raise HTTPException(404, f"task {task!r} was deleted")
            rows = s.scalars(
                select(Message)
                .where(Message.task_id == reader.task_id, Message.recipient.in_(recipients), Message.id > start)
                .order_by(Message.id)
                .limit(limit + 1)
            )
            page: list[MessageOut] = []
            used = 0
            for m in rows:
                size = len(m.payload or b"")
                # The first message always fits, so a reader can never get stuck behind one.
                if len(page) == limit or (page and page_bytes > 0 and used + size > page_bytes):
                    return page, status, True
                page.append(message_out(m))
                used += size
            return page, status, False

    deadline = time.monotonic() + wait
    while True:
        mark = state.notifier.mark(reader.task_id, address)
        messages, status, more = await run_in_threadpool(fetch)
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


@router.post("/tasks/{task}/mailbox/{address:path}/ack", response_model=AckOut)
def ack(task: str, address: str, body: AckIn, user: CurrentUser, state: State) -> AckOut:
    check_address(address, "address")
    return AckOut(cursor=_acknowledge(state, task, address, user, body.cursor))


def _acknowledge(state: HubState, task: str, address: str, user: Principal, cursor: int) -> int:
    """Record that ``user`` handled ``address`` up to ``cursor``; the stored cursor never moves back."""
    with state.db.session() as s:
        row = find_task(s, task)
        _authorize_read(s, row, user, address)
        newest = (
            s.scalar(
                select(func.max(Message.id)).where(
                    Message.task_id == row.id, Message.recipient.in_(_recipients(address))
                )
            )
            or 0
        )
        if cursor > newest:
            raise HTTPException(
                422,
                f"cursor {cursor} is beyond the newest message in {address!r} ({newest}): acknowledge only ids you have read",
            )
        stored = s.scalars(
            select(Cursor).where(Cursor.task_id == row.id, Cursor.address == address, Cursor.user_id == user.id)
        ).first()
        if stored is None:
            stored = Cursor(task_id=row.id, address=address, user_id=user.id, cursor=cursor)
            s.add(stored)
        elif cursor > stored.cursor:
            stored.cursor = cursor
            stored.updated_at = utcnow()
        value = stored.cursor
        s.commit()
        return value
