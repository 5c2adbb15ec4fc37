"""Hosted aggregators: aggregator processes the hub runs for a task's creator.

The hub itself never imports training code. A hosted aggregator is a separate OS process,
``python -m fedpact aggregate TASK --hub URL``, the very command a creator would run on
their own machine, started with a bearer token the hub mints for the creator. It talks to
the hub over HTTP like any other aggregator; the hub only starts it, watches it, keeps
its output and stops it.

The database is the record of truth, so every replica answers alike:
- ``tables.HostedWorker`` holds the worker's state (running, finished, failed, stopped,
  exited), restarts, who started it, the reason it ended, its evaluation data as a blob
  (sha256, format, label: whichever replica starts the aggregator copies the blob from the
  store into its own scratch directory) and its MLflow server;
- ``tables.HostedLease`` names the one replica that runs it. A worker is *running* when
  its row says so and the lease is not expired: a replica that stops renewing it (dead,
  cut off) stops counting as running within ``hosted_lease_s``;
- the log: the process writes to ``<data_dir>/workers/<task id>/aggregator.log`` on its
  replica, and that replica ships the new bytes to ``tables.HostedLogChunk`` every
  ``LOG_SHIP_S`` and when the process ends. Offsets are positions in that shipped
  stream, the same on every replica and across take-overs (``hub.hosted_log``); the last ``LOG_KEEP_BYTES``
  are kept, and a read from an older offset starts at the oldest byte still kept;
- stopping: a replica that does not run the worker sets ``stop_requested`` and wakes the
  owner through the notifier (through RabbitMQ between replicas); the owner also checks
  the row every ``LOG_SHIP_S``, stops the process and records it.

What survives what:
- a browser closing: the process belongs to the hub, not to a page;
- a graceful hub stop (SIGTERM, Ctrl-C): the hub stops its workers and records that they
  are wanted; another replica, or the next hub on the same database, starts them again,
  with ``--resume`` for RUNNING tasks (they continue after their last checkpointed round);
- a hub crash (SIGKILL): workers run in their own session, so they keep running and their
  client retries while the hub is away; the next hub process on the same machine adopts a
  worker whose process is still alive (its pid and owner are in the row, the log is shipped
  on from where the dead process left it), and restarts (with ``--resume``) one that is not;
- the aggregator itself dying (killed, crashed, out of memory) while its task is not
  finished: the hub starts it again with ``--resume`` after a backoff (1, 2, 4... s), at most
  ``hosted_max_restarts`` times; after that it marks the task FAILED with the
  reason, so nobody waits for an aggregator that will not come.

Across replicas, the owner renews the lease every ``hosted_lease_s / 3``; when a replica
dies, its leases expire, and within ``hosted_lease_s`` plus one scan another replica takes
the lease over (one conditional UPDATE: exactly one wins), revokes the old aggregator's
token so a survivor of the dead replica can no longer act, and starts the aggregator again
with ``--resume``, the same evaluation data, label and MLflow server, and the restart count
and log history of the row. Every change the owner makes to the row is conditional on
still being its owner, so a replica that lost its lease cannot overwrite its successor's
record. Set ``FEDPACT_HUB_INTERNAL_URL`` to the load balancer's address so hosted
aggregators reach any replica.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from fedpact.hub import hosted_log
from fedpact.hub.auth import new_token
from fedpact.hub.blobstore import BlobStore
from fedpact.hub.config import HubConfig
from fedpact.hub.db import Database
from fedpact.hub.hosted_import import import_worker_files
from fedpact.hub.lifecycle import record
from fedpact.hub.tables import HostedLease, HostedWorker, Task, Token, User

log = logging.getLogger("fedpact.hub.workers")

#: Hosted aggregators may run for a long time; their token lives at least this long.
MIN_TOKEN_TTL_S = 30 * 24 * 3600.0
STOP_GRACE_S = 5.0
#: How long a stop asked of another replica waits for the owner to confirm before answering "stopping".
STOP_WAIT_S = STOP_GRACE_S + 5.0
TERMINAL = frozenset({"COMPLETE", "FAILED", "CANCELLED"})
#: Environment variable that overrides the URL workers use to reach this hub.
INTERNAL_URL_ENV = "FEDPACT_HUB_INTERNAL_URL"
#: Read by fedpact.client (the hub does not import the client package).
CA_ENV = "FEDPACT_CA"
#: The owner ships new log bytes to the database at least this often (and at once at exit).
LOG_SHIP_S = 1.0
#: The notifier address of stop requests (no mailbox has it): wakes the owner's monitor.
STOP_WAKE = "hosted/stop"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); /proc tells it apart.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _here(owner: str | None) -> bool:
    """Whether a replica name (``node:pid:nonce``) is of this machine; ``None`` (a pre-database record) is."""
    return owner is None or owner.partition(":")[0] == os.uname().nodename


def _dead_here(owner: str) -> bool:
    """Whether a lease owner (``node:pid:nonce``) is a hub process of this machine that is gone."""
    node, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return node == os.uname().nodename and pid.isdigit() and not _pid_alive(int(pid))


def _is_our_worker(pid: int, task_id: int) -> bool:
    """Whether ``pid`` is still the aggregator we started (pids get reused)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"aggregate" in argv and str(task_id).encode() in argv and any(b"fedpact" in a for a in argv)


@dataclass(frozen=True)
class EvalData:
    """Evaluation data of a hosted aggregator: a blob of its task, by content."""

    sha256: str
    format: str
    label: str | None = None


class Worker:
    """This replica's side of one task's hosted aggregator: its scratch files and, when alive here, its process."""

    def __init__(self, root: Path, task_id: int) -> None:
        self.task_id = task_id
        self.dir = root / str(task_id)
        self.log_path = self.dir / "aggregator.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: The process this replica watches: its child, or an orphan of a previous hub process.
        self.pid: int | None = None
        self.token_hash: str | None = None
        self.stopping = False
        #: Bytes of the local log file already in the database; None while this replica does not own the log.
        self.ship_pos: int | None = None
        self.ship_lock = threading.Lock()

    @property
    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid) and _is_our_worker(self.pid, self.task_id)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def own_log(self, pos: int | None = None) -> None:
        """From now on this replica ships the local log: from ``pos``, or what is appended from now."""
        if self.ship_pos is None or pos is not None:
            self.ship_pos = self.log_size() if pos is None else pos

    def log_append(self, line: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"[hub {_now().isoformat()[:19].replace('T', ' ')}] {line}\n")


def _none_status(task_id: int) -> dict[str, Any]:
    return {"task_id": task_id, "state": "none", "running": False, "pid": None, "started_at": None,
            "finished_at": None, "exit_code": None, "resume": False, "restarts": 0, "started_by": None,
            "reason": None, "log_size": 0}


class WorkerManager:
    """Starts, watches, stops and restarts the hosted aggregators this replica owns; answers for all of them."""

    def __init__(self, config: HubConfig, db: Database, store: BlobStore | None = None) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.root = config.data_dir / "workers"
        self._workers: dict[int, Worker] = {}
        self._lock = threading.RLock()
        self._hub_url: str | None = os.environ.get(INTERNAL_URL_ENV) or None
        self._recovered = False
        self._closing = False
        #: Wakes the readers of a task (``notify(task_id, recipient)``), on every replica (set by the app).
        self.notify: Callable[..., None] = lambda task_id, recipient=None: None
        #: Tells the other replicas a token was revoked (hub.notify.Notifier.revoked).
        self.revoked: Callable[[str], None] = lambda digest: None
        #: The app's notifier (hub.notify.Notifier): owners wait on it for stop requests.
        self.notifier: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: This replica's name in lease rows: unique per process, readable in the database.
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # -- the hub's own address ---------------------------------------------------------
    def learn_url(self, scope: dict[str, Any]) -> None:
        """Remember where this hub listens (from the first request), then restart wanted workers."""
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
        if self._hub_url is None:
            server = scope.get("server")
            if server and server[1]:
                host = str(server[0])
                if host in ("0.0.0.0", "::", ""):
                    host = "127.0.0.1"
                if ":" in host:
                    host = f"[{host}]"
                self._hub_url = f"{scope.get('scheme', 'http')}://{host}:{server[1]}"
        if not self._recovered and self._hub_url is not None:
            self._recovered = True
            threading.Thread(target=self._recover_safely, name="fedpact-worker-recovery", daemon=True).start()
            threading.Thread(target=self._lease_loop, name="fedpact-worker-leases", daemon=True).start()

    @property
    def hub_url(self) -> str | None:
        return self._hub_url

    # -- queries (any replica) -----------------------------------------------------------
    def worker(self, task_id: int) -> Worker:
        with self._lock:
            w = self._workers.get(task_id)
            if w is None:
                w = self._workers[task_id] = Worker(self.root, task_id)
            return w

    def running_tasks(self) -> list[int]:
        """Ids of the tasks whose hosted aggregator runs now, on any replica (for the hosted quotas)."""
        with self.db.reading() as s:
            return list(s.scalars(
                select(HostedWorker.task_id).join(HostedLease, HostedLease.task_id == HostedWorker.task_id)
                .where(HostedWorker.state == "running", HostedLease.expires_at > _now())
            ))

    def status(self, task_id: int) -> dict[str, Any]:
        """The worker as the database records it: the same answer on every replica."""
        with self.db.reading() as s:
            row = s.get(HostedWorker, task_id)
            lease = s.get(HostedLease, task_id)
            s.expunge_all()  # the session rolls back when it closes: keep what was read
        if row is None:
            return _none_status(task_id)
        held = lease is not None and lease.expires_at > _now()
        running = row.state == "running" and held
        state = row.state
        reason = row.reason
        if row.state == "running" and not held:
            state = "lost"
            reason = (f"its hub replica ({row.owner}) stopped renewing its lease; "
                      "another replica takes it over" if row.wanted else reason)
        elif running and row.stop_requested:
            state = "stopping"
        return {
            "task_id": task_id,
            "state": state,
            "running": running,
            "pid": row.pid if running else None,
            "started_at": _iso(row.started_at),
            "finished_at": None if running else _iso(row.finished_at),
            "exit_code": None if running else row.exit_code,
            "resume": row.resume,
            "restarts": row.restarts,
            "started_by": row.started_by,
            "reason": None if running else reason,
            "log_size": row.log_size,
        }

    def read_log(self, task_id: int, offset: int | None, limit: int) -> dict[str, Any]:
        """Bytes ``offset``.. of the shipped log (``None``: the tail), the same on every replica (``hub.hosted_log``)."""
        with self.db.reading() as s:
            return hosted_log.read(s, task_id, offset, limit)

    # -- starting and stopping ---------------------------------------------------------
    def start(
        self,
        task: Task,
        creator_name: str,
        *,
        resume: bool,
        started_by: str,
        eval_data: EvalData | None = None,
        restarts: int | None = None,
        mlflow_uri: str | None = None,
    ) -> dict[str, Any]:
        """Start ``task``'s aggregator on this replica; the caller checked permission and state.

        ``restarts`` None means a start asked for by a user: it clears an earlier stop request.
        """
        if self._hub_url is None:
            raise RuntimeError("the hub does not know its own address yet")
        with self._lock:
            w = self.worker(task.id)
            if w.running:
                raise RuntimeError(f"task {task.name!r} already has a hosted aggregator (pid {w.pid})")
            holder = self._claim(task.id)
            if holder is not None:
                raise RuntimeError(f"task {task.name!r} already has a hosted aggregator, run by hub replica {holder}")
            w.own_log()
            eval_file = self._fetch_eval(w, eval_data) if eval_data is not None else None
            token, digest = new_token()
            expires = _now() + timedelta(seconds=max(self.config.token_ttl_s, MIN_TOKEN_TTL_S))
            with self.db.session() as s:
                s.add(Token(user_id=task.creator_id, token_hash=digest, expires_at=expires))
                s.commit()
            argv = [sys.executable, "-m", "fedpact", "aggregate", str(task.id), "--hub", self._hub_url]
            if resume:
                argv.append("--resume")
            if eval_file is not None and eval_data is not None:
                argv += ["--eval-data", str(eval_file)]
                if eval_data.label:
                    argv += ["--label", eval_data.label]
            if mlflow_uri:
                argv += ["--mlflow-uri", mlflow_uri]
            home = w.dir / "home"
            home.mkdir(parents=True, exist_ok=True)
            env = {
                **os.environ,
                "FEDPACT_TOKEN": token,
                "FEDPACT_HUB": self._hub_url,
                "FEDPACT_HOME": str(home),
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
                "TERM": "dumb",
                "COLUMNS": "160",
            }
            env.pop(INTERNAL_URL_ENV, None)
            if self.config.tls_cert is not None and not env.get(CA_ENV):
                # The worker checks the hub's certificate like any client; the chain the hub
                # serves (ending in its CA, or a self-signed certificate) is what to trust.
                env[CA_ENV] = str(self.config.tls_cert)
            mode = "resuming after the last checkpointed round" if resume else "starting"
            w.log_append(f"{mode}: aggregator of task {task.name!r} for {creator_name}, asked by {started_by}")
            # The record becomes ours before the process starts, so what led to this start is
            # in the shipped log by the time any replica reports the new process running.
            self._write_row(task.id, {"owner": self.owner})
            self._ship(w)
            with open(w.log_path, "ab") as out:
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    cwd=str(w.dir), start_new_session=True,
                )
            w.proc, w.pid, w.token_hash, w.stopping = proc, proc.pid, digest, False
            values: dict[str, Any] = {
                "state": "running", "wanted": True, "owner": self.owner, "pid": proc.pid, "started_at": _now(),
                "finished_at": None, "exit_code": None, "resume": resume,
                "restarts": restarts if restarts is not None else 0, "started_by": started_by, "reason": None,
                "token_hash": digest, "mlflow_uri": mlflow_uri,
                "eval_sha256": eval_data.sha256 if eval_data else None,
                "eval_format": eval_data.format if eval_data else None,
                "eval_label": eval_data.label if eval_data else None,
            }
            if restarts is None:
                values["stop_requested"] = None
            self._write_row(task.id, values)
            self._set_lease_token(task.id, digest)
            self._watch_threads(w, proc)
            log.info("hosted aggregator for task %s started (pid %s)", task.name, proc.pid)
        self._ship(w)
        return self.status(task.id)

    def _fetch_eval(self, w: Worker, eval_data: EvalData) -> Path | None:
        """Copy the evaluation blob into this replica's scratch directory (once per content)."""
        path = w.dir / f"eval-{eval_data.sha256[:16]}.{eval_data.format}"
        if path.is_file():
            return path
        try:
            if self.store is None:
                raise RuntimeError("this hub has no blob store")
            w.dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            self.store.copy_to(eval_data.sha256, tmp)
            os.replace(tmp, path)
            return path
        except Exception as e:  # noqa: BLE001 - the aggregator still runs, on the participants' hold-out data
            w.log_append(f"could not fetch the evaluation data (blob {eval_data.sha256}): {e}; "
                         "the aggregator runs without it")
            log.warning("could not fetch the evaluation data of task %s", w.task_id, exc_info=True)
            return None

    def _watch_threads(self, w: Worker, proc: subprocess.Popen[bytes] | None) -> None:
        pid = w.pid
        threading.Thread(target=self._watch, args=(w, proc, pid), name=f"fedpact-worker-{w.task_id}",
                         daemon=True).start()
        threading.Thread(target=self._monitor, args=(w, pid), name=f"fedpact-worker-log-{w.task_id}",
                         daemon=True).start()

    def stop(self, task_id: int, reason: str, *, wanted: bool = False) -> dict[str, Any]:
        """Stop this replica's worker (SIGTERM to its process group, SIGKILL after a grace period)."""
        with self._lock:
            w = self.worker(task_id)
            pid = w.pid
            alive = w.running
            if alive:
                w.stopping = True
        values: dict[str, Any] = {"wanted": wanted, "reason": reason, "stop_requested": None}
        if alive and pid:
            proc = w.proc
            self._terminate(w, int(pid))
            w.log_append(f"stopped: {reason}")
            # One write records the whole end (the watcher leaves a stopped process to us).
            values.update(state="stopped", finished_at=_now(), exit_code=proc.poll() if proc is not None else None)
        # The log first, then the state: a reader that sees the worker stopped has its last lines.
        self._ship(w)
        self._write_row(task_id, values, owned=True)
        self._release(task_id, keep=wanted)
        return self.status(task_id)

    def request_stop(self, task_id: int, reason: str) -> tuple[dict[str, Any], bool]:
        """Stop the worker wherever it runs; returns its status and whether the stop is confirmed.

        Here: stopped at once. On another replica: the request is recorded in the row, the
        owner is woken, and this waits up to ``STOP_WAIT_S`` for it to record the stop.
        """
        with self._lock:
            here = self.worker(task_id).running
        if here:
            return self.stop(task_id, reason), True
        with self.db.session() as s:
            s.execute(update(HostedWorker).where(HostedWorker.task_id == task_id, HostedWorker.state == "running")
                      .values(stop_requested=reason))
            s.commit()
        self.notify(task_id, STOP_WAKE)
        deadline = time.monotonic() + STOP_WAIT_S
        while True:
            st = self.status(task_id)
            if not st["running"] and st["state"] != "lost":
                return st, True
            if time.monotonic() >= deadline:
                return st, False
            time.sleep(0.1)

    def _terminate(self, w: Worker, pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            if w.proc is not None and w.proc.poll() is not None:
                return
            if w.proc is None and not _pid_alive(pid):
                return
            time.sleep(0.05)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if w.proc is not None:
            w.proc.wait()

    def _watch(self, w: Worker, proc: subprocess.Popen[bytes] | None, pid: int | None) -> None:
        """Wait for the process to end, record how, and revoke its token."""
        if proc is not None:
            code: int | None = proc.wait()
        else:
            while pid and _pid_alive(pid) and _is_our_worker(pid, w.task_id):
                time.sleep(0.5)
            code = None
        with self._lock:
            if w.pid != pid:
                return  # a newer process took over
            stopping, w.stopping = w.stopping, False
            w.proc, w.pid = None, None
            digest, w.token_hash = w.token_hash, None
        if stopping:  # stop() records the end
            if digest and not self._closing:
                self._revoke(digest)
            return
        reason = (
            "the aggregator finished" if code == 0
            else f"the aggregator exited with status {code}: see its log" if code is not None
            else "the aggregator exited"
        )
        # A failure stays wanted until _after_death decides: a replica adopting the task during
        # the restart backoff (this one died meanwhile) restarts it.
        values = {"exit_code": code, "finished_at": _now(), "reason": reason, "wanted": code != 0,
                  "state": "finished" if code == 0 else "failed" if code is not None else "exited"}
        w.log_append(reason)
        self._ship(w)
        mine = self._write_row(w.task_id, values, pid=pid)
        if digest and not self._closing:
            self._revoke(digest)
        if not mine:
            return
        if code != 0 and not self._closing:
            self._after_death(w, code)
        else:
            self._release(w.task_id, keep=False)

    def _monitor(self, w: Worker, pid: int | None) -> None:
        """Ship the log of this replica's process and act on stop requests, until the process is gone."""
        since = self._pause(w.task_id, None)
        while not self._closing and w.pid == pid and pid is not None:
            stop = self._ship(w)
            if w.pid != pid:
                break
            if stop == "lost":
                # The record is gone (task deleted) or another replica took it over: end ours quietly.
                with self._lock:
                    w.stopping = True
                log.warning("hosted aggregator of task %s is no longer this replica's; stopping it", w.task_id)
                self._terminate(w, pid)
                break
            if stop is not None:
                self.stop(w.task_id, stop)
                break
            since = self._pause(w.task_id, since)

    def _pause(self, task_id: int, since: int | None) -> int | None:
        """Wait up to ``LOG_SHIP_S`` or until a stop request for the task wakes us; returns the next mark."""
        loop, notifier = self._loop, self.notifier
        if loop is not None and notifier is not None and not loop.is_closed():

            async def wake() -> int:
                if since is not None:
                    await notifier.wait(task_id, LOG_SHIP_S, since, STOP_WAKE)
                return int(notifier.mark(task_id, STOP_WAKE))

            try:
                return asyncio.run_coroutine_threadsafe(wake(), loop).result(LOG_SHIP_S + 5)
            except Exception:  # noqa: BLE001 - the loop is stopping: fall back to a plain sleep
                pass
        time.sleep(LOG_SHIP_S)
        return None

    def _ship(self, w: Worker) -> str | None:
        """Append the local log's new bytes to the database.

        Returns the row's stop request, or ``"lost"`` when the row is gone or no longer ours.
        """
        with w.ship_lock:
            if w.ship_pos is None:
                return None
            size = w.log_size()
            data = b""
            if size > w.ship_pos:
                with open(w.log_path, "rb") as fh:
                    fh.seek(w.ship_pos)
                    data = fh.read(min(size - w.ship_pos, 16 * hosted_log.LOG_CHUNK_BYTES))
            try:
                if not data:  # nothing to write: a read, which takes no write lock on SQLite
                    with self.db.reading() as s:
                        row = s.get(HostedWorker, w.task_id)
                        return "lost" if row is None or row.owner != self.owner else row.stop_requested
                with self.db.session() as s:
                    row = s.get(HostedWorker, w.task_id)
                    if row is None or row.owner != self.owner:
                        return "lost"
                    stop = row.stop_requested
                    if not hosted_log.append(s, row, self.owner, data, w.ship_pos + len(data)):
                        s.rollback()
                        return "lost"
                    s.commit()
            except Exception:
                log.warning("could not ship the log of task %s", w.task_id, exc_info=True)
                return None
            w.ship_pos += len(data)
            return stop

    def _after_death(self, w: Worker, code: int | None) -> None:
        """The aggregator died on its own: restart it with --resume, or fail its task for good."""
        how = f"exit status {code}" if code is not None else "an unknown exit status"
        with self.db.session() as s:
            task = s.get(Task, w.task_id)
            row = s.get(HostedWorker, w.task_id)
            gone = task is None or task.status in TERMINAL or row is None
            creator = None if task is None else s.scalars(select(User.name).where(User.id == task.creator_id)).first()
            restarts = row.restarts if row is not None else 0
            failed = None
            if not gone and task is not None and (restarts >= self.config.hosted_max_restarts or creator is None):
                failed = (
                    f"the hosted aggregator died {restarts + 1} times since it was started (last with {how}); "
                    f"see its log (GET /api/v1/tasks/{task.name}/aggregator/log) and start it again with resume"
                )
                record(s, task, "FAILED", failed)
            s.commit()
            if task is not None:
                s.expunge(task)
            eval_data = _eval_of(row) if row is not None else None
            mlflow_uri = row.mlflow_uri if row is not None else None
        if gone or task is None or creator is None or failed is not None:
            if failed is not None and task is not None:
                w.log_append(f"task marked FAILED: {failed}")
                log.warning("task %s FAILED: %s", task.name, failed)
                self.notify(task.id)
            self._ship(w)
            self._write_row(w.task_id, {"wanted": False}, owned=True)
            self._release(w.task_id, keep=False)
            return
        delay = self.config.hosted_restart_backoff_s * 2**restarts
        w.log_append(f"the aggregator died ({how}); restarting it with --resume in {delay:g} s "
                     f"(restart {restarts + 1} of at most {self.config.hosted_max_restarts})")
        self._ship(w)
        time.sleep(delay)
        with self._lock:
            if self._closing or w.running:
                return
            with self.db.reading() as s:
                row = s.get(HostedWorker, w.task_id)
                s.expunge_all()
            if row is None or row.owner != self.owner or row.state == "stopped":
                return
            if row.stop_requested:
                self._write_row(w.task_id, {"state": "stopped", "wanted": False, "reason": row.stop_requested,
                                            "stop_requested": None}, owned=True)
                self._release(w.task_id, keep=False)
                return
            try:
                self.start(task, creator, resume=task.status == "RUNNING", started_by="the hub (restart after death)",
                           eval_data=eval_data, restarts=restarts + 1, mlflow_uri=mlflow_uri)
            except RuntimeError:
                log.warning("could not restart the hosted aggregator of task %s", w.task_id, exc_info=True)

    def _revoke(self, digest: str) -> None:
        try:
            with self.db.session() as s:
                s.execute(delete(Token).where(Token.token_hash == digest))
                s.commit()
        except Exception:
            log.warning("could not revoke a hosted aggregator's token", exc_info=True)
            return
        self.revoked(digest)

    def _write_row(self, task_id: int, values: dict[str, Any], *, owned: bool = False, pid: int | None = None) -> bool:
        """Change the task's record; ``owned`` or ``pid``: only while this replica (and that process) owns it.

        Without either it is a start: the caller holds the lease, so the row becomes ours.
        """
        try:
            with self.db.session() as s:
                if owned or pid is not None:
                    cond = [HostedWorker.task_id == task_id, HostedWorker.owner == self.owner]
                    if pid is not None:
                        cond.append(HostedWorker.pid == pid)
                    done = s.execute(update(HostedWorker).where(*cond).values(**values))
                    s.commit()
                    return bool(cast(CursorResult[Any], done).rowcount)
                row = s.get(HostedWorker, task_id)
                if row is None:
                    row = HostedWorker(task_id=task_id, state="none", log_start=0, log_size=0, log_file_pos=0)
                    s.add(row)
                for key, value in values.items():
                    setattr(row, key, value)
                s.commit()
                return True
        except Exception:
            log.warning("could not record the hosted aggregator of task %s", task_id, exc_info=True)
            return False

    # -- hub start and stop ------------------------------------------------------------
    def shutdown(self) -> None:
        """The hub is stopping: stop every worker but record it as wanted, so another replica or the next hub resumes it."""
        self._closing = True
        with self._lock:
            alive = [w for w in self._workers.values() if w.running]
        for w in alive:
            digest = w.token_hash
            self.stop(w.task_id, "the hub is shutting down; it resumes when the hub starts again", wanted=True)
            if digest:
                self._revoke(digest)

    def _recover_safely(self) -> None:
        try:
            import_worker_files(self.db, self.root)
            self.recover()
        except Exception:
            log.exception("restarting hosted aggregators failed")

    def recover(self) -> None:
        """Adopt live workers of a previous hub process on this machine, restart the wanted ones nobody runs."""
        with self.db.reading() as s:
            rows = list(s.scalars(select(HostedWorker).where(HostedWorker.wanted.is_(True))))
            s.expunge_all()
        for row in rows:
            if self._closing:
                return
            task_id = row.task_id
            with self._lock:
                if self.worker(task_id).running:
                    continue
            if self._claim(task_id) is not None:
                continue  # another live replica runs it
            pid = row.pid
            if (row.state == "running" and pid and _here(row.owner) and _pid_alive(pid)
                    and _is_our_worker(pid, task_id) and self._take_row(task_id, row.owner)):
                with self._lock:
                    w = self.worker(task_id)
                    w.pid, w.proc, w.token_hash, w.stopping = pid, None, row.token_hash, False
                    w.own_log(row.log_file_pos if w.log_size() >= row.log_file_pos else None)
                    w.log_append(f"the hub restarted; the aggregator (pid {pid}) kept running and is watched again")
                    self._set_lease_token(task_id, row.token_hash)
                    self._watch_threads(w, None)
                continue
            self._restart(task_id, row.owner, None, started_by="the hub (restart)", extra_restart=1)

    def _take_row(self, task_id: int, old_owner: str | None) -> bool:
        with self.db.session() as s:
            done = s.execute(update(HostedWorker).where(
                HostedWorker.task_id == task_id,
                HostedWorker.owner.is_(None) if old_owner is None else HostedWorker.owner == old_owner,
            ).values(owner=self.owner))
            s.commit()
        return bool(cast(CursorResult[Any], done).rowcount)

    def _restart(self, task_id: int, old_owner: str | None, old_token: str | None, *, started_by: str,
                 extra_restart: int, note: str | None = None) -> None:
        """Start the aggregator whose lease this replica just took, as its record says."""
        with self.db.session() as s:
            task = s.get(Task, task_id)
            creator = None if task is None else s.scalars(select(User.name).where(User.id == task.creator_id)).first()
            row = s.get(HostedWorker, task_id)
            if task is not None:
                s.expunge(task)
            if row is not None:
                s.expunge(row)
        if old_token:
            self._revoke(old_token)  # fences an aggregator that outlived its replica
        if row is not None and row.token_hash and row.token_hash != old_token:
            self._revoke(row.token_hash)
        pid = row.pid if row is not None else None
        with self._lock:
            w = self.worker(task_id)
            if pid and w.proc is None and _here(old_owner) and _pid_alive(pid) and _is_our_worker(pid, task_id):
                try:
                    os.killpg(pid, signal.SIGKILL)  # an orphan on this machine: stop it outright
                except ProcessLookupError:
                    pass
        unwanted = row is not None and not row.wanted  # e.g. a start that never got its process going
        if task is None or task.status in TERMINAL or creator is None or unwanted or (row is not None and row.stop_requested):
            if row is not None and not unwanted and self._take_row(task_id, row.owner):
                ended = row.stop_requested or "not restarted: the task is gone or finished"
                w.own_log()
                w.log_append(f"hub replica {self.owner} took over from {old_owner} and did not restart it: {ended}")
                self._ship(w)
                self._write_row(task_id, {"state": "stopped", "wanted": False, "reason": ended,
                                          "stop_requested": None}, owned=True)
            self._release(task_id, keep=False)
            return
        with self._lock:
            w.own_log()
            if note:
                w.log_append(note)
            try:
                self.start(task, creator, resume=task.status == "RUNNING", started_by=started_by,
                           eval_data=_eval_of(row) if row is not None else None,
                           restarts=(row.restarts if row is not None else 0) + extra_restart,
                           mlflow_uri=row.mlflow_uri if row is not None else None)
            except RuntimeError:
                log.warning("could not start the hosted aggregator of task %s", task_id, exc_info=True)

    # -- leases across replicas ---------------------------------------------------------
    def _claim(self, task_id: int) -> str | None:
        """Take or renew the task's lease; returns the other live owner if it is not ours to take."""
        now = _now()
        until = now + timedelta(seconds=self.config.hosted_lease_s)
        with self.db.session() as s:
            holder = s.scalars(select(HostedLease.owner).where(HostedLease.task_id == task_id)).first()
            takeable = or_(HostedLease.owner == self.owner, HostedLease.expires_at < now)
            if holder is not None and _dead_here(holder):
                takeable = or_(takeable, HostedLease.owner == holder)
            result = s.execute(
                update(HostedLease).where(and_(HostedLease.task_id == task_id, takeable))
                .values(owner=self.owner, expires_at=until)
            )
            if cast(CursorResult[Any], result).rowcount:
                s.commit()
                return None
            if holder is not None:
                return holder
            s.add(HostedLease(task_id=task_id, owner=self.owner, expires_at=until))
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                return s.scalars(select(HostedLease.owner).where(HostedLease.task_id == task_id)).first() or "?"
        return None

    def _set_lease_token(self, task_id: int, digest: str | None) -> None:
        with self.db.session() as s:
            s.execute(update(HostedLease).where(HostedLease.task_id == task_id, HostedLease.owner == self.owner)
                      .values(token_hash=digest))
            s.commit()

    def _release(self, task_id: int, *, keep: bool) -> None:
        """Give the lease up: delete it, or (``keep``: still wanted) let it expire now for another replica."""
        w = self._workers.get(task_id)
        if w is not None and not w.running:
            with w.ship_lock:
                w.ship_pos = None
        try:
            with self.db.session() as s:
                mine = (HostedLease.task_id == task_id) & (HostedLease.owner == self.owner)
                if keep:
                    s.execute(update(HostedLease).where(mine).values(expires_at=_now()))
                else:
                    s.execute(delete(HostedLease).where(mine))
                s.commit()
        except Exception:
            log.warning("could not release the lease of task %s", task_id, exc_info=True)

    def _lease_loop(self) -> None:
        """Renew our leases and adopt expired ones, every third of the lease time, until the hub stops."""
        while not self._closing:
            time.sleep(self.config.hosted_lease_s / 3)
            try:
                self._renew_and_adopt()
            except Exception:
                log.warning("renewing or adopting hosted-aggregator leases failed", exc_info=True)

    def _renew_and_adopt(self) -> None:
        with self._lock:
            mine = [w.task_id for w in self._workers.values() if w.running]
        now = _now()
        until = now + timedelta(seconds=self.config.hosted_lease_s)
        with self.db.session() as s:
            if mine:
                s.execute(update(HostedLease).where(HostedLease.owner == self.owner, HostedLease.task_id.in_(mine))
                          .values(expires_at=until))
            expired = list(s.scalars(select(HostedLease).where(HostedLease.expires_at < now)))
            s.commit()
        for lease in expired:
            if self._closing or self._hub_url is None:
                return
            self._adopt(lease.task_id, lease.owner, lease.token_hash)

    def _adopt(self, task_id: int, old_owner: str, old_token: str | None) -> None:
        with self._lock:
            if self.worker(task_id).running:
                return  # ours already
        if self._claim(task_id) is not None:
            return  # another replica was faster
        self._restart(task_id, old_owner, old_token, started_by=f"hub replica {self.owner} (adopted)", extra_restart=0,
                      note=f"hub replica {self.owner} took over from {old_owner}, whose lease expired")


def _eval_of(row: HostedWorker) -> EvalData | None:
    if not row.eval_sha256 or not row.eval_format:
        return None
    return EvalData(row.eval_sha256, row.eval_format, row.eval_label)


class LearnUrlMiddleware:
    """Tells the worker manager where this hub listens, from the first request it serves."""

    def __init__(self, app: Any, manager: WorkerManager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.manager._recovered:
            self.manager.learn_url(scope)
        await self.app(scope, receive, send)
