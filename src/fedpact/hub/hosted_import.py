"""Hosted-aggregator state files of hubs from before the database kept it, moved into the database.

Such a hub wrote ``<data_dir>/workers/<task id>/worker.json`` (state, pid, restarts, the
evaluation file's path...) beside ``aggregator.log``. A hub that starts on that directory
records each file as a ``HostedWorker`` row (the evaluation file as the task's blob of the
same content, the newest ``LOG_KEEP_BYTES`` of the log as its first chunks) and renames it
``worker.json.imported``; ``hub.workers`` then adopts or restarts what was wanted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from fedpact.hub import hosted_log
from fedpact.hub.db import Database
from fedpact.hub.tables import Blob, HostedWorker, Task

log = logging.getLogger("fedpact.hub.workers")


def import_worker_files(db: Database, root: Path) -> None:
    """Record every ``root/<task id>/worker.json`` not recorded yet, and rename it."""
    if not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        path = child / "worker.json"
        if not child.name.isdigit() or not path.is_file():
            continue
        try:
            st = json.loads(path.read_text())
            _import_one(db, int(child.name), st if isinstance(st, dict) else {}, child)
            path.rename(path.with_name("worker.json.imported"))
        except Exception:  # noqa: BLE001 - one unreadable file must not keep the others from recovering
            log.warning("could not import %s", path, exc_info=True)


def _import_one(db: Database, task_id: int, st: dict[str, Any], folder: Path) -> None:
    def when(key: str) -> datetime | None:
        try:
            return datetime.fromisoformat(str(st[key])) if st.get(key) else None
        except ValueError:
            return None

    log_path = folder / "aggregator.log"
    size = log_path.stat().st_size if log_path.is_file() else 0
    tail = b""
    if size:
        with open(log_path, "rb") as fh:
            fh.seek(max(0, size - hosted_log.LOG_KEEP_BYTES))
            tail = fh.read()
    eval_sha = eval_format = None
    eval_file = Path(st["eval_file"]) if st.get("eval_file") else None
    if eval_file is not None and eval_file.is_file():
        eval_sha = hashlib.sha256(eval_file.read_bytes()).hexdigest()
        eval_format = "npz" if eval_file.suffix == ".npz" else "csv"
    with db.session() as s:
        if s.get(Task, task_id) is None or s.get(HostedWorker, task_id) is not None:
            return
        if eval_sha and s.scalars(select(Blob.id).where(Blob.task_id == task_id, Blob.sha256 == eval_sha)).first() is None:
            eval_sha = eval_format = None
        s.add(HostedWorker(
            task_id=task_id, state=str(st.get("state") or "stopped")[:16], wanted=bool(st.get("wanted")), owner=None,
            pid=st.get("pid") if isinstance(st.get("pid"), int) else None, started_at=when("started_at"),
            finished_at=when("finished_at"), exit_code=st.get("exit_code") if isinstance(st.get("exit_code"), int) else None,
            resume=bool(st.get("resume")), restarts=int(st.get("restarts") or 0), started_by=st.get("started_by"),
            reason=st.get("reason"), token_hash=st.get("token_hash"), eval_sha256=eval_sha, eval_format=eval_format,
            eval_label=st.get("label") if eval_sha else None, mlflow_uri=st.get("mlflow_uri"),
            log_start=0, log_size=len(tail), log_file_pos=size,
        ))
        s.add_all(hosted_log.chunks(task_id, 0, tail))
        s.commit()
