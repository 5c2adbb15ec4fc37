"""A hosted aggregator's log in the database: one byte stream per task, with the same offsets on every replica.

The replica that runs the aggregator appends what its process printed (``append``); any
replica reads it (``read``). Positions count every byte ever appended, across restarts
and take-overs; only the newest ``LOG_KEEP_BYTES`` are kept, so a read from an older
offset starts at the oldest byte kept and says so in its ``offset``.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from fedpact.hub.tables import HostedLogChunk, HostedWorker

#: Rows of the log table are at most this long.
LOG_CHUNK_BYTES = 256 * 1024
#: The database keeps this much of each log (the newest bytes); older chunks are deleted.
LOG_KEEP_BYTES = 8 * 1024 * 1024


def chunks(task_id: int, pos: int, data: bytes) -> list[HostedLogChunk]:
    """Rows holding ``data`` from position ``pos``."""
    pieces = [(i, data[i:i + LOG_CHUNK_BYTES]) for i in range(0, len(data), LOG_CHUNK_BYTES)]
    return [HostedLogChunk(task_id=task_id, pos=pos + i, size=len(piece), data=piece) for i, piece in pieces]


def append(s: Session, row: HostedWorker, owner: str, data: bytes, file_pos: int) -> bool:
    """Append ``data`` (the local log file up to ``file_pos``) if ``owner`` still owns ``row``; the caller commits.

    The conditional UPDATE on owner and size makes a replica that lost the record, or a
    second writer, append nothing.
    """
    pos = row.log_size
    done = s.execute(
        update(HostedWorker)
        .where(HostedWorker.task_id == row.task_id, HostedWorker.owner == owner, HostedWorker.log_size == pos)
        .values(log_size=pos + len(data), log_file_pos=file_pos)
    )
    if not cast(CursorResult[Any], done).rowcount:
        return False
    s.add_all(chunks(row.task_id, pos, data))
    keep_from = pos + len(data) - LOG_KEEP_BYTES
    if keep_from > row.log_start + LOG_CHUNK_BYTES:
        s.flush()
        s.execute(delete(HostedLogChunk).where(
            HostedLogChunk.task_id == row.task_id, HostedLogChunk.pos + HostedLogChunk.size <= keep_from))
        first = s.scalar(select(func.min(HostedLogChunk.pos)).where(HostedLogChunk.task_id == row.task_id))
        s.execute(update(HostedWorker).where(HostedWorker.task_id == row.task_id)
                  .values(log_start=first if first is not None else pos + len(data)))
    return True


def read(s: Session, task_id: int, offset: int | None, limit: int) -> dict[str, Any]:
    """Bytes ``offset``.. of the log (``None``: the last ``limit`` bytes from a line start), as text."""
    row = s.get(HostedWorker, task_id)
    size, first = (row.log_size, row.log_start) if row is not None else (0, 0)
    start = max(first, size - limit) if offset is None else max(first, min(offset, size))
    end = min(size, start + limit)
    found = list(s.execute(
        select(HostedLogChunk.pos, HostedLogChunk.data)
        .where(HostedLogChunk.task_id == task_id, HostedLogChunk.pos < end, HostedLogChunk.pos + HostedLogChunk.size > start)
        .order_by(HostedLogChunk.pos)
    )) if end > start else []
    if found and found[0][0] > start:
        start = found[0][0]  # trimmed between the two reads
    data = b"".join(bytes(c[1]) for c in found)
    if found:
        data = data[start - found[0][0]:end - found[0][0]]
    else:
        start = min(start, size)
    if offset is None and start > first:
        cut = data.find(b"\n")
        if 0 <= cut < len(data) - 1:
            start, data = start + cut + 1, data[cut + 1:]
    return {"offset": start, "next_offset": start + len(data), "size": size,
            "text": data.decode("utf-8", errors="replace")}
