"""Resumable, content-addressed blob uploads and streamed downloads.

The bytes received so far are the partial file's length on disk, not a counter in the
database, so a connection that breaks mid-chunk leaves exactly what arrived and the
client resumes from ``GET .../uploads/{id}``. Request bodies are written as they arrive,
in bounded pieces, never held whole in memory.

When the blob store presigns (S3), every non-empty upload session is *direct*: the hub
answers with presigned part URLs, the client PUTs the parts to the object store itself,
and the hub only assembles and verifies them on completion. Whether an upload is direct
follows from the store and the size, so every replica agrees without a database column,
and no session's bytes sit on one replica's disk.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO, NamedTuple

import anyio
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from fedpact.common import checksums
from fedpact.common.digests import SHA256_RE
from fedpact.hub.access import TaskRefQuery, can_read_blob, find_task, find_task_ref, require_member
from fedpact.hub.auth import CurrentUser, State
from fedpact.hub.blobcache import MAX_ITEM_BYTES, Cached, MemoryBlob, Pieces
from fedpact.hub.errors import is_disk_full
from fedpact.hub.quotas import check_free_space, check_stored_bytes, disk_full
from fedpact.hub.schemas import (
    INT64_MAX,
    BlobRef,
    DirectPartOut,
    DirectUpload,
    OffsetOut,
    UploadIn,
    UploadOut,
    UploadStatus,
)
from fedpact.hub.state import HubState
from fedpact.hub.tables import Blob, Task, Upload, utcnow

router = APIRouter(tags=["blobs"])

WRITE_BUFFER = 1024 * 1024
#: With a presigning store every non-empty upload session is direct: its state then lives
#: in the object store and the database only, so each of its requests may reach any
#: replica. (Small blobs need no session: they go in one request, PUT .../blobs/{sha256}.)
DIRECT_MIN_BYTES = 1
#: Part size of direct uploads (S3 needs >= 5 MiB for every part but the last).
DIRECT_PART_BYTES = 16 * 1024 * 1024
DIRECT_URL_TTL_S = 3600


def is_direct(state: HubState, size: int) -> bool:
    return state.store.presigns and size >= DIRECT_MIN_BYTES


def _direct(state: HubState, upload_id: str, size: int) -> DirectUpload:
    try:
        parts = state.store.direct_upload_parts(upload_id, size, DIRECT_PART_BYTES, DIRECT_URL_TTL_S)
    except FileNotFoundError:
        raise _parts_gone(upload_id) from None
    return DirectUpload(
        part_size=DIRECT_PART_BYTES,
        expires_in_s=DIRECT_URL_TTL_S,
        parts=[DirectPartOut(number=p.number, offset=p.offset, size=p.size, url=p.url) for p in parts],
    )


def _received(state: HubState, upload_id: str, size: int) -> int:
    if is_direct(state, size):
        try:
            return state.store.direct_upload_received(upload_id, size, DIRECT_PART_BYTES)
        except FileNotFoundError:
            raise _parts_gone(upload_id) from None
    return state.store.received(upload_id)


def _parts_gone(upload_id: str) -> HTTPException:
    return HTTPException(
        409,
        f"the parts of upload {upload_id} are gone from the object store (finished or expired); "
        "start it again with POST .../uploads",
    )


def _check_sha(sha256: str) -> None:
    if not SHA256_RE.fullmatch(sha256):
        raise HTTPException(422, f"{sha256!r} is not a sha256: use 64 lowercase hex digits")


@router.post(
    "/tasks/{task}/uploads",
    status_code=201,
    response_model=UploadOut,
    response_model_exclude_unset=True,
    responses={200: {"model": UploadOut, "description": "the blob is already stored; nothing to send"}},
)
def start_upload(task: str, body: UploadIn, user: CurrentUser, state: State) -> UploadOut | JSONResponse:
    """Open (or resume) the caller's own upload session for ``body.sha256``.

    Sessions are per user: two members sending the same content each get their own, so
    neither can write into or complete the other's.
    """
    limit = state.config.max_blob_bytes
    if body.size > limit:
        raise HTTPException(413, f"a blob of {body.size} bytes exceeds this hub's limit of {limit} bytes")
    with state.db.session() as s:
        row = find_task(s, task)
        require_member(s, row, user, "upload blobs")
        blob = s.scalars(select(Blob).where(Blob.task_id == row.id, Blob.sha256 == body.sha256)).first()
        if blob is not None:
            if blob.size != body.size:
                raise HTTPException(409, f"blob {body.sha256} is stored with {blob.size} bytes, not {body.size}")
            record_again(row, blob, user.id, body.private)
            s.commit()
            done = UploadOut(upload_id=None, offset=body.size, complete=True)
            return JSONResponse(done.model_dump(exclude_unset=True), status_code=200)
        mine = (Upload.task_id == row.id, Upload.sha256 == body.sha256, Upload.created_by == user.id)
        upload = s.scalars(select(Upload).where(*mine)).first()
        if upload is None:
            check_stored_bytes(s, state.config, user.id, body.size)
            check_free_space(state.config, body.size)
            upload = Upload(
                id=secrets.token_urlsafe(24), task_id=row.id, sha256=body.sha256, size=body.size,
                created_by=user.id, private=body.private,
            )
            s.add(upload)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                upload = s.scalars(select(Upload).where(*mine)).one()
            else:
                if not is_direct(state, upload.size):
                    state.store.start(upload.id)
        if upload.size != body.size:
            raise HTTPException(
                409,
                f"an upload of {body.sha256} declared as {upload.size} bytes is in progress; the same content cannot be {body.size} bytes",
            )
        upload_id, size = upload.id, upload.size
    if is_direct(state, size):
        # Also for an upload that already existed: its parts may have expired meanwhile.
        state.store.direct_upload_start(upload_id, size, DIRECT_PART_BYTES)
        return UploadOut(
            upload_id=upload_id,
            offset=_received(state, upload_id, size),
            complete=False,
            direct=_direct(state, upload_id, size),
        )
    return UploadOut(upload_id=upload_id, offset=state.store.received(upload_id), complete=False)


@dataclass
class _Target:
    upload_id: str
    sha256: str
    size: int
    task_id: int
    shared: bool | None


def _find_upload(state: HubState, task: str, upload_id: str, user: CurrentUser) -> _Target:
    with state.db.session() as s:
        row = find_task(s, task)
        require_member(s, row, user, "upload blobs")
        upload = s.get(Upload, upload_id)
        if upload is None or upload.task_id != row.id or upload.created_by != user.id:
            # Someone else's session is reported like a missing one: its id proves nothing.
            raise HTTPException(
                404,
                f"no upload {upload_id!r} of yours in task {row.name!r}: it finished, failed or never existed; "
                f"start one with POST /api/v1/tasks/{row.name}/uploads",
            )
        shared = (not upload.private) if row.creator_id == user.id else None
        return _Target(upload_id=upload.id, sha256=upload.sha256, size=upload.size, task_id=row.id, shared=shared)


@router.get("/tasks/{task}/uploads/{upload_id}", response_model=UploadStatus, response_model_exclude_unset=True)
def upload_status(task: str, upload_id: str, user: CurrentUser, state: State) -> UploadStatus:
    target = _find_upload(state, task, upload_id, user)
    status = UploadStatus(
        upload_id=target.upload_id,
        offset=_received(state, target.upload_id, target.size),
        size=target.size,
        sha256=target.sha256,
    )
    if is_direct(state, target.size):
        status.direct = _direct(state, target.upload_id, target.size)
    return status


def _busy(upload_id: str) -> HTTPException:
    return HTTPException(
        409,
        f"another request is writing to upload {upload_id}; wait for it to finish, then resume from GET .../uploads/{upload_id}",
    )


@router.put(
    "/tasks/{task}/uploads/{upload_id}",
    response_model=OffsetOut,
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "required": True,
        }
    },
)
async def put_chunk(
    task: str,
    upload_id: str,
    request: Request,
    user: CurrentUser,
    state: State,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX, description="the number of bytes already received")],
) -> OffsetOut | JSONResponse:
    target = await run_in_threadpool(_find_upload, state, task, upload_id, user)
    if is_direct(state, target.size):
        raise HTTPException(
            409,
            f"upload {upload_id} goes straight to the object store: PUT its parts to the URLs in GET .../uploads/{upload_id}",
        )
    if upload_id in state.busy_uploads:
        raise _busy(upload_id)
    state.busy_uploads.add(upload_id)
    try:
        return await _receive(state, target, request, offset)
    finally:
        state.busy_uploads.discard(upload_id)


async def _receive(state: HubState, target: _Target, request: Request, offset: int) -> OffsetOut | JSONResponse:
    store = state.store
    received = store.received(target.upload_id)
    if offset != received:
        raise HTTPException(
            409, f"offset {offset} does not match the {received} bytes received so far: resume with ?offset={received}"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and offset + int(declared) > target.size:
        raise HTTPException(
            413, f"a chunk of {declared} bytes at offset {offset} would pass the declared size of {target.size} bytes"
        )
    check_free_space(state.config, target.size - offset)
    path = store.partial_path(target.upload_id)
    f: BinaryIO = await anyio.to_thread.run_sync(open, path, "ab")
    written = 0
    buffer = bytearray()
    try:
        try:
            async for chunk in request.stream():
                if offset + written + len(buffer) + len(chunk) > target.size:
                    buffer.clear()
                    await anyio.to_thread.run_sync(_rewind, f, offset)
                    raise HTTPException(
                        413,
                        f"the chunk passes the declared size of {target.size} bytes (offset {offset}); nothing was kept",
                    )
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER:
                    await anyio.to_thread.run_sync(f.write, bytes(buffer))
                    written += len(buffer)
                    buffer.clear()
        except ClientDisconnect:
            # Keep what arrived: the client resumes from it.
            await anyio.to_thread.run_sync(_flush, f, bytes(buffer))
            return JSONResponse(
                {"detail": "the client disconnected; resume from GET the upload's offset"}, status_code=400
            )
        await anyio.to_thread.run_sync(_flush, f, bytes(buffer))
        written += len(buffer)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        # Put the upload back where this chunk found it, so a retry resumes cleanly.
        await anyio.to_thread.run_sync(_close_and_truncate, f, path, offset)
        raise disk_full() from None
    finally:
        if not f.closed:
            await anyio.to_thread.run_sync(f.close)
    return OffsetOut(offset=offset + written)


def _close_and_truncate(f: BinaryIO, path: Path, size: int) -> None:
    # Closing flushes what is still buffered, which may fail again on a full disk.
    try:
        f.close()
    except OSError:
        pass
    os.truncate(path, size)


def _flush(f: BinaryIO, data: bytes) -> None:
    if data:
        f.write(data)
    f.flush()


def _rewind(f: BinaryIO, size: int) -> None:
    f.flush()
    f.truncate(size)


@router.post("/tasks/{task}/uploads/{upload_id}/complete", status_code=201, response_model=BlobRef)
async def complete_upload(task: str, upload_id: str, user: CurrentUser, state: State) -> BlobRef:
    target = await run_in_threadpool(_find_upload, state, task, upload_id, user)
    if upload_id in state.busy_uploads:
        raise _busy(upload_id)
    state.busy_uploads.add(upload_id)
    try:
        return await run_in_threadpool(_complete, state, target, user.id)
    finally:
        state.busy_uploads.discard(upload_id)


def _complete(state: HubState, target: _Target, user_id: int) -> BlobRef:
    if is_direct(state, target.size):
        return _complete_direct(state, target, user_id)
    store = state.store
    if target.size == 0:
        store.start(target.upload_id)  # nothing was sent: the empty partial may be on another replica
    received = store.received(target.upload_id)
    if received != target.size:
        raise HTTPException(
            409,
            f"{target.size - received} bytes are missing: {received} of {target.size} arrived; resume with PUT ?offset={received}",
        )
    actual = store.hash_partial(target.upload_id)
    if actual == target.sha256:
        store.sync(target.upload_id)
        store.prepare(target.upload_id, target.sha256)
    with state.db.session() as s:
        upload = s.get(Upload, target.upload_id)
        if upload is None:
            raise HTTPException(404, f"upload {target.upload_id} was removed (its task was deleted?)")
        if actual != target.sha256:
            s.delete(upload)
            s.commit()
            store.discard(target.upload_id)
            raise HTTPException(
                422,
                f"sha256 mismatch: the {received} bytes received hash to {actual}, not the declared {target.sha256}; "
                "the upload was discarded, start again",
            )
        s.delete(upload)
        s.flush()
        store_verified(s, state, target.task_id, target.upload_id, target.sha256, target.size, user_id, target.shared)
    return BlobRef(sha256=target.sha256, size=target.size)


def _complete_direct(state: HubState, target: _Target, user_id: int) -> BlobRef:
    """Assemble a direct upload's parts in the bucket, verify them, then record the blob."""
    store = state.store
    received = _received(state, target.upload_id, target.size)
    if received != target.size:
        raise HTTPException(
            409,
            f"{target.size - received} bytes are missing: parts up to byte {received} of {target.size} arrived; "
            "PUT the remaining parts to the URLs in GET .../uploads/{id}".replace("{id}", target.upload_id),
        )
    try:
        landed, actual = store.direct_upload_finish(target.upload_id, target.sha256, target.size)
    except FileNotFoundError:
        raise _parts_gone(target.upload_id) from None
    with state.db.session() as s:
        upload = s.get(Upload, target.upload_id)
        if upload is not None:
            s.delete(upload)
        if actual != target.sha256:
            s.commit()
            raise HTTPException(
                422,
                f"sha256 mismatch: the {landed} bytes that landed hash to {actual}, not the declared "
                f"{target.sha256}; the upload was discarded, start again",
            )
        if upload is None:
            raise HTTPException(404, f"upload {target.upload_id} was removed (its task was deleted?)")
        blob = s.scalars(select(Blob).where(Blob.task_id == target.task_id, Blob.sha256 == target.sha256)).first()
        if blob is None:
            s.add(Blob(task_id=target.task_id, sha256=target.sha256, size=target.size, uploaded_by=user_id,
                       shared=bool(target.shared)))
        else:
            _renew(blob, target.shared)
        s.commit()
    return BlobRef(sha256=target.sha256, size=target.size)


def store_verified(
    s: Session, state: HubState, task_id: int, partial: str, sha256: str, size: int, user_id: int,
    shared: bool | None = None, *, commit: bool = True,
) -> None:
    """Move a verified partial file into the store and record it for the task, then commit.

    ``shared`` (the creator's uploads only) opens the blob to the admitted participants or
    closes it again; None leaves that as it is. The move happens while this transaction
    holds the write lock (SQLite), so a task deletion cannot unlink the file between the
    move and the row that references it. ``commit=False`` leaves the commit to the caller,
    who adds more rows to the same transaction (the message that names the blob).
    """
    state.store.commit(partial, sha256)
    blob = s.scalars(select(Blob).where(Blob.task_id == task_id, Blob.sha256 == sha256)).first()
    if blob is None:
        s.add(Blob(task_id=task_id, sha256=sha256, size=size, uploaded_by=user_id, shared=bool(shared)))
    else:
        _renew(blob, shared)
    if commit:
        s.commit()


def record_blob(s: Session, state: HubState, task_id: int, partial: str, sha256: str, size: int, user_id: int) -> None:
    """:func:`store_verified` for the relay's raw messages, inside the caller's write (no commit).

    As there (``shared`` None): a new blob is not shared (who reads it follows from the
    message that names it), one the task already holds is left as it is. Two prepared
    statements instead of the ORM, which cost more than the rest of the route at a round's pace.
    """
    state.store.commit(partial, sha256)
    conn = s.connection()
    held = conn.execute(_BLOB_HELD, {"task_id": task_id, "sha256": sha256}).first()
    if held is None:
        conn.execute(_BLOB_INSERT, {"task_id": task_id, "sha256": sha256, "size": size, "uploaded_by": user_id,
                                    "shared": False, "created_at": utcnow()})
    else:
        conn.execute(_BLOB_RENEW, {"blob_id": held.id, "now": utcnow()})


def _blob_column(column: Any) -> Any:
    return select(column).where(Blob.task_id == Task.id, Blob.sha256 == bindparam("sha256")).scalar_subquery()


# A download finds the task, the caller's membership and the blob's row in one statement:
# every participant downloads each round's model, and the aggregator each update.
_READ_BLOB = TaskRefQuery(_blob_column(Blob.size), _blob_column(Blob.uploaded_by), _blob_column(Blob.shared))


class _BlobRow(NamedTuple):
    """What deciding access needs of a blob's row (``access.BlobAccess``)."""

    uploaded_by: int
    shared: bool


_BLOB_HELD = select(Blob.id).where(Blob.task_id == bindparam("task_id"), Blob.sha256 == bindparam("sha256"))
_BLOB_INSERT = insert(Blob)
_BLOB_RENEW = update(Blob).where(Blob.id == bindparam("blob_id")).values(created_at=bindparam("now"))


def _renew(blob: Blob, shared: bool | None) -> None:
    """The task recorded these bytes again: the reclaiming passes' grace starts over (hub.blobgc).

    ``shared`` (the creator's uploads) opens or closes the blob as a first upload would; None leaves it.
    """
    blob.created_at = utcnow()
    if shared is not None:
        blob.shared = shared


def record_again(task: Task, blob: Blob, user_id: int, private: bool) -> None:
    """Content the task already holds, sent again: renewed, and the creator decides, like a
    first upload, whether it is shared."""
    _renew(blob, (not private) if task.creator_id == user_id else None)


def keep_private(s: Session, task: Task, sha256: str) -> None:
    """Close a blob to the participants (evaluation data handed to the hosted aggregator)."""
    blob = s.scalars(select(Blob).where(Blob.task_id == task.id, Blob.sha256 == sha256)).first()
    if blob is not None:
        blob.shared = False


def _blob_target(
    state: HubState, task: str, sha256: str, user: CurrentUser, private: bool, size: int
) -> tuple[int, bool, bool | None]:
    """(task id, whether the task already holds the blob, what to set ``shared`` to), for a member within quota.

    A blob already held is recorded as sent by this user now (the creator's choice to
    share it applies); its body is not read.
    """
    with state.db.session() as s:
        row = find_task(s, task)
        require_member(s, row, user, "upload blobs")
        shared = (not private) if row.creator_id == user.id else None
        blob = s.scalars(select(Blob).where(Blob.task_id == row.id, Blob.sha256 == sha256)).first()
        if blob is not None:
            record_again(row, blob, user.id, private)
            s.commit()
        else:
            check_stored_bytes(s, state.config, user.id, size)
            check_free_space(state.config, size)
        return row.id, blob is not None, shared


@router.put(
    "/tasks/{task}/blobs/{sha256}",
    status_code=201,
    response_model=BlobRef,
    responses={200: {"model": BlobRef, "description": "the blob is already stored; the body was not read"}},
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "required": True,
        }
    },
)
async def put_blob(
    task: str,
    sha256: str,
    request: Request,
    user: CurrentUser,
    state: State,
    private: Annotated[
        bool, Query(description="creator only: keep the blob from the participants (e.g. evaluation data)")
    ] = False,
) -> BlobRef | JSONResponse:
    """Upload a whole blob in one request, hashed as it arrives (for blobs small enough to resend)."""
    _check_sha(sha256)
    size = declared_size(request, state.config.max_blob_bytes)
    task_id, held, shared = await run_in_threadpool(_blob_target, state, task, sha256, user, private, size)
    if held:
        return JSONResponse(BlobRef(sha256=sha256, size=size).model_dump(), status_code=200)
    got = await receive_verified(request, state, size)
    partial = got.partial

    def store() -> None:
        actual = got.stage()
        if actual != sha256:
            raise HTTPException(
                422, f"sha256 mismatch: the {size} bytes received hash to {actual}, not {sha256}; nothing was kept"
            )
        state.store.sync(partial)
        state.store.prepare(partial, sha256)
        with state.db.session() as s:
            store_verified(s, state, task_id, partial, sha256, size, user.id, shared)

    try:
        await run_in_threadpool(store)
    except BaseException:
        state.store.discard(partial)
        raise
    if got.data is not None:
        state.blob_cache.put(sha256, got.data, got.checksum)  # checked by store(); the broadcast: every participant reads it next
    return BlobRef(sha256=sha256, size=size)


def declared_size(request: Request, limit: int) -> int:
    """The request's Content-Length, which raw-body routes require and check against ``limit``."""
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise HTTPException(411, "send Content-Length, or use the resumable upload (POST .../uploads) for streams")
    size = int(declared)
    if size > limit:
        raise HTTPException(413, f"a blob of {size} bytes exceeds this hub's limit of {limit} bytes")
    return size


@dataclass
class Received:
    """A request body: its partial file's id, and its bytes when it was small enough to keep.

    A small body is hashed and written to its partial file by :meth:`stage`, which the
    route calls in the same worker-thread hop as its database work: one hop per request
    instead of two, and each hop is a thread wake-up that a loaded machine delays.
    """

    partial: str
    path: Path
    sha256: str | None
    data: Pieces | None
    #: The body's checksum, taken with its sha256: see common/checksums.py.
    checksum: str | None = None

    def stage(self) -> str:
        """Hash the body and write its partial file (once); its sha256.

        The file carries the body's checksum as an attribute, so that a client on the hub's
        machine reading it once it is a blob checks that instead of hashing it again.
        """
        if self.sha256 is None:
            assert self.data is not None  # a streamed body was hashed as it arrived
            digests = checksums.Digests(self.data)
            self.checksum = digests.checksum()
            with open(self.path, "wb") as f:
                f.writelines(self.data)
            checksums.write_xattr(self.path, self.checksum)
            self.sha256 = digests.sha256()
        return self.sha256


async def receive_verified(request: Request, state: HubState, size: int) -> Received:
    """Receive exactly ``size`` body bytes for a new partial file.

    A body up to ``MAX_ITEM_BYTES`` (a relay payload) is kept as the pieces the server
    handed over, never joined or copied (no hop to a worker thread; :meth:`Received.stage`
    hashes and writes it, and the pieces go to the blob cache once stored). A larger body is streamed to the file
    in 1 MiB writes, hashed on the way, never held whole. Any shortfall, overrun or
    disconnect leaves nothing behind.
    """
    partial = secrets.token_urlsafe(24)
    path = state.store.partial_path(partial)
    try:
        if size <= MAX_ITEM_BYTES:
            return Received(partial, path, None, await _receive_small(request, size))
        sha256, checksum = await _receive_streamed(request, path, size)
        return Received(partial, path, sha256, None, checksum)
    except ClientDisconnect:
        state.store.discard(partial)
        raise HTTPException(400, "the client disconnected; nothing was kept, send it again") from None
    except BaseException:
        state.store.discard(partial)
        raise


async def _receive_small(request: Request, size: int) -> Pieces:
    pieces: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > size:
            raise HTTPException(413, f"the body passes its Content-Length of {size} bytes; nothing was kept")
        if chunk:
            pieces.append(bytes(chunk))  # (already bytes from the server: no copy)
    if received != size:
        raise HTTPException(400, f"the body ended after {received} of {size} bytes; nothing was kept, send it again")
    return tuple(pieces)


async def _receive_streamed(request: Request, path: Path, size: int) -> tuple[str, str]:
    """Stream the body to ``path``: its sha256 and checksum (see :meth:`Received.stage`)."""
    digests = checksums.Digests()
    received = 0
    buffer = bytearray()
    f: BinaryIO = await anyio.to_thread.run_sync(open, path, "wb")
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > size:
                raise HTTPException(413, f"the body passes its Content-Length of {size} bytes; nothing was kept")
            buffer += chunk
            if len(buffer) >= WRITE_BUFFER:
                data, buffer = buffer, bytearray()  # hand the full buffer over, no copy
                await anyio.to_thread.run_sync(_hash_and_write, digests, f, data)
        await anyio.to_thread.run_sync(_hash_and_write, digests, f, buffer)
    finally:
        await anyio.to_thread.run_sync(f.close)
    if received != size:
        raise HTTPException(400, f"the body ended after {received} of {size} bytes; nothing was kept, send it again")
    checksum = digests.checksum()
    await anyio.to_thread.run_sync(checksums.write_xattr, path, checksum)
    return digests.sha256(), checksum


def _hash_and_write(digests: checksums.Digests, f: BinaryIO, data: bytes | bytearray) -> None:
    if data:
        digests.update(data)
        f.write(data)


def _read_verified(state: HubState, sha256: str) -> Cached | None:
    """A stored blob read whole into the cache once its bytes hash to its name (None: no file)."""
    whole = state.store.read_all(sha256)
    if whole is None:
        return None
    digests = checksums.Digests((whole,))
    if digests.sha256() != sha256:
        raise HTTPException(
            500, f"the stored file of blob {sha256} does not match its sha256; tell the hub operator to check the disk"
        )
    checksum = digests.checksum()
    state.blob_cache.put(sha256, (whole,), checksum)
    return Cached((whole,), checksum, len(whole))


@router.get("/tasks/{task}/blobs/{sha256}", response_class=FileResponse)
@router.head("/tasks/{task}/blobs/{sha256}", response_class=FileResponse, operation_id="head_blob")
def get_blob(task: str, sha256: str, user: CurrentUser, state: State) -> Response:
    _check_sha(sha256)
    with state.db.reading() as s:
        row = find_task_ref(s, task, user.id, _READ_BLOB, sha256=sha256)
        require_member(s, row, user, "read its blobs")
        size, uploaded_by, shared = row.extra
        if size is None:
            raise HTTPException(404, f"no blob {sha256} in task {row.name!r}")
        if not can_read_blob(s, row, user, sha256, _BlobRow(uploaded_by, bool(shared))):
            raise HTTPException(
                403,
                f"blob {sha256} of task {row.name!r} is not yours to read: a participant reads the blobs it uploaded, "
                "those the aggregator sent to it or to all participants, and the global model",
            )
    headers = {"X-Content-SHA256": sha256}
    cached = state.blob_cache.get(sha256)
    if cached is None and not state.store.presigns and size <= state.blob_cache.max_item:
        # Small and local: one read here (this route already runs in a worker thread), one write
        # to the socket, and the next reader of the same blob is served from memory. The
        # copy is checked once, here, so that every reader may check its checksum instead.
        cached = _read_verified(state, sha256)
    if cached is not None:
        if cached.checksum is not None:
            headers[checksums.HEADER] = cached.checksum
        return MemoryBlob(cached.pieces, headers)
    if not state.store.exists(sha256):
        raise HTTPException(
            500, f"blob {sha256} is recorded but its file is missing from the store; tell the hub operator"
        )
    return state.store.download(sha256, headers=headers)
