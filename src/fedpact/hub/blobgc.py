"""Reclaiming blobs nobody needs any more, and uploads nobody finished.

A task's blob stays while something can still ask for it:
- every stored model's blob (models outlive their tasks);
- the latest checkpoint of each task (what a resumed aggregator loads), with every blob its
  state names (``{"sha256": ...}`` anywhere in it, e.g. a strategy's optimiser moments);
- while the task is open (CREATED or RUNNING), everything except what belongs only to
  finished rounds: blobs carried by messages of rounds before the current one, and
  checkpoints that a newer checkpoint superseded (with the blobs their state names). Blobs
  no message or checkpoint names
  (evaluation data, for instance) stay until the task ends.
A blob is only dropped once it is older than the grace period, so an upload that has
not yet been referenced (the row that will name it comes in the next request) survives.
A blob row's age counts from the last time the task recorded those bytes: sending the
same content again renews it.

That pass runs every ``gc_interval_s`` (10 minutes) with a grace of an hour: a task that
moves 40 MB a round at three rounds a second would fill a disk with finished rounds in
that hour. So the hub also reclaims a running task's finished rounds as they finish
(:func:`reclaim_finished_rounds`): when a round record opens a new round, the blobs that
only messages of earlier rounds name go, unless the latest checkpoint or a stored model
names them or the task recorded them since the previous new round (or within
``gc_round_grace_s``). A reader still downloading one keeps its open file (local disk);
a reader that asks for it afterwards gets 404 and skips the finished round's message.

Dropping a task's reference deletes its ``blobs`` row; the bytes go from the store once
no task and no model references the sha256 any more. The pass is idempotent, so any
number of replicas may run it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.orm import Session

from fedpact.common.digests import SHA256_RE
from fedpact.hub.blobstore import BlobStore
from fedpact.hub.db import Database, lock_task_messages
from fedpact.hub.tables import (
    Blob,
    Checkpoint,
    Message,
    Round,
    StoredModel,
    Task,
    Upload,
)

log = logging.getLogger("fedpact.hub.gc")
OPEN = ("CREATED", "RUNNING")
#: Most of the collector's time that reclaiming one task's finished rounds may take.
ROUND_PASS_SHARE = 0.05
#: A hub that has not yet seen a task open a round (it just started, or another replica
#: took the earlier rounds) keeps what the task recorded in this many seconds before.
FIRST_SEEN_MARGIN_S = 60.0


@dataclass
class GcReport:
    """What one pass removed; the hub logs it and tests check it."""

    task_refs: int = 0
    blobs: list[str] = field(default_factory=list)
    bytes: int = 0
    uploads: int = 0


def state_blobs(state: Any) -> set[str]:
    """The sha256s a checkpoint's state names: any ``{"sha256": <64 hex>}`` inside it.

    The hub does not interpret the state; naming a blob this way is how an aggregator
    keeps it alive for as long as the checkpoint is the latest one.
    """
    found: set[str] = set()
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            sha = item.get("sha256")
            if isinstance(sha, str) and SHA256_RE.fullmatch(sha):
                found.add(sha)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _checkpoint_blobs(ckpt: Checkpoint) -> set[str]:
    return {ckpt.sha256} | state_blobs(ckpt.state)


def _task_keeps(s: Session, task: Task) -> set[str]:
    """The sha256s ``task`` must keep (see the module docstring)."""
    keep = set(s.scalars(select(StoredModel.sha256).where(StoredModel.task_id == task.id)))
    checkpoints = list(s.scalars(select(Checkpoint).where(Checkpoint.task_id == task.id).order_by(Checkpoint.id)))
    if checkpoints:
        keep |= _checkpoint_blobs(checkpoints[-1])
    if task.status not in OPEN:
        return keep
    current = s.scalar(select(func.max(Round.number)).where(Round.task_id == task.id)) or 0
    in_messages = select(Message.blob_sha256).where(Message.task_id == task.id, Message.blob_sha256.is_not(None))
    live_msgs = {x for x in s.scalars(in_messages.where(Message.round.is_(None) | (Message.round >= current))) if x}
    old_msgs = {x for x in s.scalars(in_messages.where(Message.round < current)) if x}
    old_ckpts = set().union(*(_checkpoint_blobs(c) for c in checkpoints[:-1])) - keep
    finished_only = (old_msgs | old_ckpts) - live_msgs
    held = set(s.scalars(select(Blob.sha256).where(Blob.task_id == task.id)))
    return keep | live_msgs | (held - finished_only)


def collect(db: Database, store: BlobStore, *, grace_s: float, upload_ttl_s: float) -> GcReport:
    """One pass: drop unneeded task references, then the bytes nobody references, then stale uploads."""
    report = GcReport()
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=grace_s)
    with db.session() as s:
        for task in list(s.scalars(select(Task))):
            keep = _task_keeps(s, task)
            rows = s.scalars(select(Blob).where(Blob.task_id == task.id, Blob.created_at < cutoff))
            for row in list(rows):
                if row.sha256 not in keep:
                    s.delete(row)
                    report.task_refs += 1
        s.commit()
    wall_cutoff = time.time() - grace_s
    with db.reading() as s:
        referenced = set(s.scalars(select(Blob.sha256).distinct()))
        referenced |= set(s.scalars(select(StoredModel.sha256).distinct()))
    candidates = [b for b in store.iter_blobs() if b.modified < wall_cutoff and b.sha256 not in referenced]
    for blob in candidates:
        # Checked and retired under the write session: an upload that records the same
        # content commits under it too (on SQLite), so it cannot slip in between.
        with db.session() as s:
            if not _unreferenced(s, blob.sha256):
                continue
            free = store.retire(blob.sha256)
        free()
        report.blobs.append(blob.sha256)
        report.bytes += blob.size
    report.uploads = expire_uploads(db, store, upload_ttl_s)
    return report


def reclaim_finished_rounds(db: Database, store: BlobStore, task_id: int, cutoff: datetime) -> GcReport:
    """Drop the blobs of an open task that only messages of its finished rounds name.

    A candidate is a blob row the task recorded before ``cutoff``; it goes when a message
    or a checkpoint names it, every message that names it belongs to a round before the
    newest round record, and neither the latest checkpoint nor a stored model names it
    (the model of a finished round is named by the checkpoint that superseded it, and
    the request that carried it names it only inside its body). Blobs that only the state
    of a superseded checkpoint names (a strategy's optimiser moments) are left to
    :func:`collect`. The work is bounded by what the task still holds, not by its history:
    earlier passes already took the finished rounds before.

    The row is deleted only if it is still older than ``cutoff`` as the DELETE runs, so
    content sent again meanwhile (which renews the row) stays; the message lock keeps a
    new message of the task from naming a candidate between the check and the delete.
    """
    report = GcReport()
    dropped: list[tuple[str, int]] = []
    with db.session() as s:
        lock_task_messages(s, task_id)
        task = s.get(Task, task_id)
        if task is None or task.status not in OPEN:
            return report
        rows = {sha: size for sha, size in s.execute(
            select(Blob.sha256, Blob.size).where(Blob.task_id == task_id, Blob.created_at < cutoff))}
        if not rows:
            return report
        current = s.scalar(select(func.max(Round.number)).where(Round.task_id == task_id)) or 0
        named: dict[str, bool] = {}  # sha256 -> whether only finished rounds name it
        candidates = list(rows)
        for i in range(0, len(candidates), 500):
            some = candidates[i:i + 500]
            for sha, rnd in s.execute(select(Message.blob_sha256, Message.round).where(
                    Message.task_id == task_id, Message.blob_sha256.in_(some))):
                if sha is not None:
                    named[sha] = named.get(sha, True) and rnd is not None and rnd < current
            for sha in s.scalars(select(Checkpoint.sha256).where(Checkpoint.task_id == task_id,
                                                                 Checkpoint.sha256.in_(some))):
                named.setdefault(sha, True)  # the latest checkpoint's is in ``keep`` below
        keep = set(s.scalars(select(StoredModel.sha256).where(StoredModel.task_id == task_id)))
        latest = s.scalars(select(Checkpoint).where(Checkpoint.task_id == task_id).order_by(Checkpoint.id.desc())
                           .limit(1)).first()
        if latest is not None:
            keep |= _checkpoint_blobs(latest)
        # A statement per batch, not per blob: the pass holds the task's message lock (and on
        # SQLite the write lock) throughout, and a round's updates wait for it.
        finished = sorted(sha for sha, only_finished in named.items() if only_finished and sha not in keep)
        for i in range(0, len(finished), 500):
            some = finished[i:i + 500]
            gone = s.execute(delete(Blob).where(Blob.task_id == task_id, Blob.sha256.in_(some),
                                                Blob.created_at < cutoff))
            report.task_refs += cast(CursorResult[Any], gone).rowcount
            # A row renewed meanwhile (PostgreSQL) was not deleted: it still holds its bytes,
            # which the check below sees.
            dropped.extend((sha, rows[sha]) for sha in some)
        s.commit()
    if dropped:
        # Checked and retired under one write session: an upload of the same content commits
        # under it too (SQLite). The bytes are freed after it, so writers do not wait for that.
        frees: list[Callable[[], None]] = []
        try:
            with db.session() as s:
                for i in range(0, len(dropped), 500):
                    sizes = dict(dropped[i:i + 500])
                    for sha in sorted(_unreferenced_among(s, list(sizes))):
                        frees.append(store.retire(sha))
                        report.blobs.append(sha)
                        report.bytes += sizes[sha]
        finally:  # what was retired goes even if a later batch failed
            for free in frees:
                free()
    return report


def _unreferenced(s: Session, sha256: str) -> bool:
    """Whether no task and no stored model holds ``sha256`` (checked under the write session)."""
    return bool(_unreferenced_among(s, [sha256]))


def _unreferenced_among(s: Session, shas: list[str]) -> set[str]:
    """Those of ``shas`` that no task and no stored model holds (checked under the write session)."""
    held = set(s.scalars(select(Blob.sha256).where(Blob.sha256.in_(shas))))
    held |= set(s.scalars(select(StoredModel.sha256).where(StoredModel.sha256.in_(shas))))
    return set(shas) - held


def expire_uploads(db: Database, store: BlobStore, ttl_s: float) -> int:
    """Drop uploads started more than ``ttl_s`` ago and not touched since, with their bytes."""
    old = datetime.now(UTC) - timedelta(seconds=ttl_s)
    wall_old = time.time() - ttl_s
    dropped = 0
    with db.session() as s:
        known = set(s.scalars(select(Upload.id)))
        for upload in list(s.scalars(select(Upload).where(Upload.created_at < old))):
            path = store.partial_path(upload.id)
            if path.exists() and path.stat().st_mtime >= wall_old:
                continue
            s.execute(delete(Upload).where(Upload.id == upload.id))
            store.discard(upload.id)
            store.direct_upload_abort(upload.id)
            known.discard(upload.id)
            dropped += 1
        s.commit()
    # Staged files and direct uploads that no row names (a crash mid-request) go too.
    for upload_id, mtime in list(store.staged()):
        if upload_id not in known and mtime < wall_old:
            store.discard(upload_id)
    for upload_id in list(store.stale_direct_uploads(wall_old)):
        if upload_id not in known:
            store.direct_upload_abort(upload_id)
    return dropped


class Collector:
    """Runs :func:`collect` every ``interval_s`` in a thread, and soon after :meth:`request`;
    :func:`reclaim_finished_rounds` for a task after :meth:`round_opened`.

    A task's round passes are spaced by their own cost: after a pass that took ``d``
    seconds the next waits ``d * (1 / ROUND_PASS_SHARE - 1)`` (and at least
    ``round_every_s``), so reclaiming takes at most ``ROUND_PASS_SHARE`` of the time while
    a fast task's finished rounds still go within a round or two. Prompt matters beyond
    disk space: a new file's page-cache pages come cheapest from pages just freed (a
    virtual machine that hands freed memory back to its host makes every page touched
    afresh cost a fault on the host, ten times the copy; docs/benchmarks.md, (k)).
    """

    def __init__(self, db: Database, store: BlobStore, *, interval_s: float, grace_s: float, upload_ttl_s: float,
                 round_grace_s: float = 1.0, round_every_s: float = 0.0):
        self.db = db
        self.store = store
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.upload_ttl_s = upload_ttl_s
        self.round_grace_s = round_grace_s
        self.round_every_s = round_every_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._full_pass = False
        #: Tasks that opened a round since their last pass, and when that pass may run.
        self._pending: dict[int, float] = {}
        #: When this hub saw each task open its latest round, and the round before it.
        self._opened: dict[int, tuple[datetime, datetime]] = {}
        #: When each task's next round pass may run at the earliest (see the class docstring).
        self._next_pass: dict[int, float] = {}
        self.passes = 0
        self.round_passes = 0
        #: Seconds spent in round passes, all tasks together.
        self.round_pass_seconds = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fedpact-blob-gc", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a pass now (a task ended)."""
        with self._lock:
            self._full_pass = True
        self._wake.set()

    def round_opened(self, task_id: int) -> None:
        """A round record opened a new round of ``task_id``: reclaim its finished rounds soon."""
        now = datetime.now(UTC)
        with self._lock:
            # A task this hub has not seen open a round keeps what it recorded in the last minute.
            latest = self._opened[task_id][0] if task_id in self._opened else now - timedelta(seconds=FIRST_SEEN_MARGIN_S)
            self._opened[task_id] = (now, latest)
            self._pending.setdefault(task_id, self._next_pass.get(task_id, -math.inf))
            if len(self._opened) > 10_000:  # tasks that ended long ago
                gone = next(iter(self._opened))
                self._opened.pop(gone)
                self._next_pass.pop(gone, None)
        self._wake.set()

    def reclaim_rounds(self, task_id: int) -> GcReport:
        """Reclaim the finished rounds of ``task_id``; what it recorded since the round before its latest stays."""
        started = time.monotonic()
        with self._lock:
            self._pending.pop(task_id, None)
            unseen = datetime.now(UTC) - timedelta(seconds=FIRST_SEEN_MARGIN_S)
            before = self._opened[task_id][1] if task_id in self._opened else unseen
        cutoff = min(before, datetime.now(UTC) - timedelta(seconds=self.round_grace_s))
        try:
            report = reclaim_finished_rounds(self.db, self.store, task_id, cutoff)
        finally:
            ended = time.monotonic()
            self.round_pass_seconds += ended - started
            with self._lock:
                spacing = max(self.round_every_s, (ended - started) * (1 / ROUND_PASS_SHARE - 1))
                self._next_pass[task_id] = ended + spacing
                if task_id in self._pending:  # a round opened during the pass: it waits its turn
                    self._pending[task_id] = ended + spacing
        self.round_passes += 1
        if report.blobs or report.task_refs:
            log.debug("finished rounds of task %d: %d references, %d blobs (%d bytes) reclaimed",
                      task_id, report.task_refs, len(report.blobs), report.bytes)
        return report

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def run_once(self) -> GcReport:
        report = collect(self.db, self.store, grace_s=self.grace_s, upload_ttl_s=self.upload_ttl_s)
        self.passes += 1
        if report.blobs or report.task_refs or report.uploads:
            log.info(
                "blob gc: %d task references, %d blobs (%d bytes), %d abandoned uploads reclaimed",
                report.task_refs, len(report.blobs), report.bytes, report.uploads,
            )  # fmt: skip
        return report

    def _run(self) -> None:
        due = time.monotonic() + self.interval_s
        while not self._stop.is_set():
            with self._lock:
                wake_at = min([due, *self._pending.values()])
            self._wake.wait(max(0.0, wake_at - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            with self._lock:
                ready = sorted(task for task, at in self._pending.items() if at <= now)
                full, self._full_pass = self._full_pass or now >= due, False
            for task_id in ready:
                try:
                    self.reclaim_rounds(task_id)
                except Exception:
                    log.exception("reclaiming the finished rounds of task %d failed; its next round retries", task_id)
            if not full:
                continue
            due = time.monotonic() + self.interval_s
            try:
                self.run_once()
            except Exception:
                log.exception("blob gc pass failed; the next one retries")
