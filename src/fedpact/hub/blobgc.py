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

Dropping a task's reference deletes its ``blobs`` row; the bytes go from the store once
no task and no model references the sha256 any more. The pass is idempotent, so any
number of replicas may run it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from fedpact.hub.blobstore import SHA256_RE, BlobStore
from fedpact.hub.db import Database
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
        # Checked and deleted under the write session: an upload that records the same
        # content commits under it too (on SQLite), so it cannot slip in between.
        with db.session() as s:
            used = s.scalars(select(Blob.id).where(Blob.sha256 == blob.sha256).limit(1)).first()
            used = used or s.scalars(select(StoredModel.id).where(StoredModel.sha256 == blob.sha256).limit(1)).first()
            if used is None:
                store.delete(blob.sha256)
                report.blobs.append(blob.sha256)
                report.bytes += blob.size
    report.uploads = expire_uploads(db, store, upload_ttl_s)
    return report


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
    """Runs :func:`collect` every ``interval_s`` in a thread, and soon after :meth:`request`."""

    def __init__(self, db: Database, store: BlobStore, *, interval_s: float, grace_s: float, upload_ttl_s: float):
        self.db = db
        self.store = store
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.upload_ttl_s = upload_ttl_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fedpact-blob-gc", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a pass now (a task ended)."""
        self._wake.set()

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
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once()
            except Exception:
                log.exception("blob gc pass failed; the next one retries")
