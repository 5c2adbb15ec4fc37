"""Hosted aggregators: aggregator processes the hub runs for a task's creator.

The hub itself never imports training code. A hosted aggregator is a separate OS process,
``python -m fedpact aggregate TASK --hub URL``, the very command a creator would run on
their own machine, started with a bearer token the hub mints for the creator. It talks to
the hub over HTTP like any other aggregator; the hub only starts it, watches it, keeps
its output in ``<data_dir>/workers/<task id>/aggregator.log`` and stops it.

What survives what:
- a browser closing: the process belongs to the hub, not to a page;
- a graceful hub stop (SIGTERM, Ctrl-C): the hub stops its workers and remembers that they
  were wanted; the next hub on the same data directory starts them again, with
  ``--resume`` for RUNNING tasks (they continue after their last checkpointed round);
- a hub crash (SIGKILL): workers run in their own session, so they keep running and their
  client retries while the hub is away; the next hub adopts a worker whose process is still
  alive, and restarts (with ``--resume``) one that is not;
- the aggregator itself dying (killed, crashed, out of memory) while its task is not
  finished: the hub starts it again with ``--resume`` after a backoff (1, 2, 4... s), at most
  ``hosted_max_restarts`` times; after that it marks the task FAILED with the
  reason, so nobody waits for an aggregator that will not come.

The state of each worker is a small JSON file beside its log, so it outlives the hub
process.

Across replicas, a lease row in the database (``tables.HostedLease``) names the one
replica that runs a task's aggregator. The owner renews it every ``hosted_lease_s / 3``;
when a replica dies, its leases expire, and within ``hosted_lease_s`` plus one scan
another replica takes the lease over (one conditional UPDATE: exactly one wins), revokes
the old aggregator's token so a survivor of the dead replica can no longer act, and starts
the aggregator again with ``--resume``. Set ``FEDPACT_HUB_INTERNAL_URL`` to the load
balancer's address so hosted aggregators reach any replica.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError

from fedpact.hub.auth import new_token
from fedpact.hub.config import HubConfig
from fedpact.hub.db import Database
from fedpact.hub.lifecycle import record
from fedpact.hub.tables import HostedLease, Task, Token, User

log = logging.getLogger("fedpact.hub.workers")

#: Hosted aggregators may run for a long time; their token lives at least this long.
MIN_TOKEN_TTL_S = 30 * 24 * 3600.0
STOP_GRACE_S = 5.0
TERMINAL = frozenset({"COMPLETE", "FAILED", "CANCELLED"})
#: Environment variable that overrides the URL workers use to reach this hub.
INTERNAL_URL_ENV = "FEDPACT_HUB_INTERNAL_URL"
#: Read by fedpact.client (the hub does not import the client package).
CA_ENV = "FEDPACT_CA"


def _now() -> str:
    return datetime.now(UTC).isoformat()


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


class Worker:
    """One task's hosted aggregator: its files, its persisted state and, when alive, its process."""

    def __init__(self, root: Path, task_id: int) -> None:
        self.task_id = task_id
        self.dir = root / str(task_id)
        self.state_path = self.dir / "worker.json"
        self.log_path = self.dir / "aggregator.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        os.replace(tmp, self.state_path)

    @property
    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        pid = self.state.get("pid")
        return (self.state.get("state") == "running" and isinstance(pid, int) and _pid_alive(pid)
                and _is_our_worker(pid, self.task_id))

    def log_append(self, line: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"[hub {_now()[:19].replace('T', ' ')}] {line}\n")


class WorkerManager:
    """Starts, watches, stops and restarts the hub's hosted aggregators."""

    def __init__(self, config: HubConfig, db: Database) -> None:
        self.config = config
        self.db = db
        self.root = config.data_dir / "workers"
        self._workers: dict[int, Worker] = {}
        self._lock = threading.RLock()
        self._hub_url: str | None = os.environ.get(INTERNAL_URL_ENV) or None
        self._recovered = False
        self._closing = False
        #: Wakes the pollers of a task whose status the manager changed (set by the app).
        self.notify: Any = lambda task_id: None
        #: Tells the other replicas a token was revoked (hub.notify.Notifier.revoked).
        self.revoked: Callable[[str], None] = lambda digest: None
        #: This replica's name in lease rows: unique per process, readable in the database.
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leases_started = False

    # -- the hub's own address ---------------------------------------------------------
    def learn_url(self, scope: dict[str, Any]) -> None:
        """Remember where this hub listens (from the first request), then restart wanted workers."""
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

    # -- queries -----------------------------------------------------------------------
    def worker(self, task_id: int) -> Worker:
        with self._lock:
            w = self._workers.get(task_id)
            if w is None:
                w = self._workers[task_id] = Worker(self.root, task_id)
            return w

    def running_tasks(self) -> list[int]:
        """Ids of the tasks whose hosted aggregator is running now (for the hosted quotas)."""
        with self._lock:
            return [task_id for task_id, w in self._workers.items() if w.running]

    def status(self, task_id: int) -> dict[str, Any]:
        with self._lock:
            w = self.worker(task_id)
            st = dict(w.state)
            running = w.running
        size = w.log_path.stat().st_size if w.log_path.exists() else 0
        if not st:
            return {"task_id": task_id, "state": "none", "running": False, "pid": None, "started_at": None,
                    "finished_at": None, "exit_code": None, "resume": False, "restarts": 0, "started_by": None,
                    "reason": None, "log_size": size}
        return {
            "task_id": task_id,
            "state": "running" if running else st.get("state", "none"),
            "running": running,
            "pid": st.get("pid") if running else None,
            "started_at": st.get("started_at"),
            "finished_at": None if running else st.get("finished_at"),
            "exit_code": None if running else st.get("exit_code"),
            "resume": bool(st.get("resume")),
            "restarts": int(st.get("restarts", 0)),
            "started_by": st.get("started_by"),
            "reason": None if running else st.get("reason"),
            "log_size": size,
        }

    def read_log(self, task_id: int, offset: int | None, limit: int) -> dict[str, Any]:
        """Bytes ``offset``.. of the log (``None``: the last ``limit`` bytes), as text."""
        path = self.worker(task_id).log_path
        size = path.stat().st_size if path.exists() else 0
        start = max(0, size - limit) if offset is None else min(offset, size)
        data = b""
        if size > start:
            with open(path, "rb") as fh:
                fh.seek(start)
                data = fh.read(limit)
        if offset is None and start > 0:
            cut = data.find(b"\n")
            if 0 <= cut < len(data) - 1:
                start, data = start + cut + 1, data[cut + 1:]
        return {"offset": start, "next_offset": start + len(data), "size": size,
                "text": data.decode("utf-8", errors="replace")}

    # -- starting and stopping ---------------------------------------------------------
    def start(
        self,
        task: Task,
        creator_name: str,
        *,
        resume: bool,
        started_by: str,
        eval_file: Path | None = None,
        label: str | None = None,
        restarts: int | None = None,
        mlflow_uri: str | None = None,
    ) -> dict[str, Any]:
        """Start ``task``'s aggregator; the caller checked permission and state."""
        if self._hub_url is None:
            raise RuntimeError("the hub does not know its own address yet")
        with self._lock:
            w = self.worker(task.id)
            if w.running:
                raise RuntimeError(f"task {task.name!r} already has a hosted aggregator (pid {w.state.get('pid')})")
            holder = self._claim(task.id)
            if holder is not None:
                raise RuntimeError(f"task {task.name!r} already has a hosted aggregator, run by hub replica {holder}")
            token, digest = new_token()
            expires = datetime.now(UTC) + timedelta(seconds=max(self.config.token_ttl_s, MIN_TOKEN_TTL_S))
            with self.db.session() as s:
                s.add(Token(user_id=task.creator_id, token_hash=digest, expires_at=expires))
                s.commit()
            argv = [sys.executable, "-m", "fedpact", "aggregate", str(task.id), "--hub", self._hub_url]
            if resume:
                argv.append("--resume")
            if eval_file is not None:
                argv += ["--eval-data", str(eval_file)]
                if label:
                    argv += ["--label", label]
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
            with open(w.log_path, "ab") as out:
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    cwd=str(w.dir), start_new_session=True,
                )
            w.proc = proc
            w.state = {
                "task_id": task.id,
                "task_name": task.name,
                "state": "running",
                "pid": proc.pid,
                "started_at": _now(),
                "finished_at": None,
                "exit_code": None,
                "resume": resume,
                "restarts": restarts if restarts is not None else 0,
                "started_by": started_by,
                "reason": None,
                "wanted": True,
                "token_hash": digest,
                "eval_file": str(eval_file) if eval_file else None,
                "label": label,
                "mlflow_uri": mlflow_uri,
            }
            w.save()
            self._set_lease_token(task.id, digest)
            threading.Thread(target=self._watch, args=(w, proc), name=f"fedpact-worker-{task.id}", daemon=True).start()
            log.info("hosted aggregator for task %s started (pid %s)", task.name, proc.pid)
        return self.status(task.id)

    def stop(self, task_id: int, reason: str, *, wanted: bool = False) -> dict[str, Any]:
        """Stop the worker (SIGTERM to its process group, SIGKILL after a grace period)."""
        with self._lock:
            w = self.worker(task_id)
            pid = w.state.get("pid")
            alive = w.running
            w.state.update({"wanted": wanted, "reason": reason, "state": "stopped" if alive else w.state.get("state")})
            if alive:
                w.state["stopping"] = True
            w.save()
        if alive and pid:
            self._terminate(w, int(pid))
            w.log_append(f"stopped: {reason}")
        self._release(task_id, keep=wanted)
        return self.status(task_id)

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

    def _watch(self, w: Worker, proc: subprocess.Popen[bytes] | None) -> None:
        """Wait for the process to end, record how, and revoke its token."""
        pid = proc.pid if proc is not None else int(w.state.get("pid") or 0)
        if proc is not None:
            code: int | None = proc.wait()
        else:
            while _pid_alive(pid) and _is_our_worker(pid, w.task_id):
                time.sleep(0.5)
            code = None
        with self._lock:
            if w.state.get("pid") != pid:
                return  # a newer process took over
            stopping = bool(w.state.pop("stopping", False))
            if not stopping:
                w.state["state"] = "finished" if code == 0 else "failed" if code is not None else "exited"
                w.state["reason"] = (
                    "the aggregator finished" if code == 0
                    else f"the aggregator exited with status {code}: see its log" if code is not None
                    else "the aggregator exited"
                )
                w.state["wanted"] = False
            w.state["exit_code"] = code
            w.state["finished_at"] = _now()
            w.proc = None
            digest = w.state.get("token_hash")
            w.save()
        if not stopping:
            w.log_append(w.state["reason"])
        if digest and not self._closing:
            self._revoke(digest)
        if not stopping and code != 0 and not self._closing:
            self._after_death(w, code)
        elif not stopping:
            self._release(w.task_id, keep=False)

    def _after_death(self, w: Worker, code: int | None) -> None:
        """The aggregator died on its own: restart it with --resume, or fail its task for good."""
        with self.db.session() as s:
            task = s.get(Task, w.task_id)
            if task is None or task.status in TERMINAL:
                return
            creator = s.scalars(select(User.name).where(User.id == task.creator_id)).first()
            restarts = int(w.state.get("restarts", 0))
            how = f"exit status {code}" if code is not None else "an unknown exit status"
            if restarts >= self.config.hosted_max_restarts or creator is None:
                reason = (
                    f"the hosted aggregator died {restarts + 1} times since it was started (last with {how}); "
                    f"see its log (GET /api/v1/tasks/{task.name}/aggregator/log) and start it again with resume"
                )
                record(s, task, "FAILED", reason)
                s.commit()
                w.log_append(f"task marked FAILED: {reason}")
                log.warning("task %s FAILED: %s", task.name, reason)
                self.notify(task.id)
                self._release(task.id, keep=False)
                return
            s.expunge(task)
        delay = self.config.hosted_restart_backoff_s * 2**restarts
        w.log_append(f"the aggregator died ({how}); restarting it with --resume in {delay:g} s "
                     f"(restart {restarts + 1} of at most {self.config.hosted_max_restarts})")
        time.sleep(delay)
        with self._lock:
            if self._closing or w.running or w.state.get("state") == "stopped":
                return
            eval_file = Path(w.state["eval_file"]) if w.state.get("eval_file") else None
            self.start(task, creator, resume=task.status == "RUNNING", started_by="the hub (restart after death)",
                       eval_file=eval_file if eval_file and eval_file.is_file() else None,
                       label=w.state.get("label"), restarts=restarts + 1)

    def _revoke(self, digest: str) -> None:
        try:
            with self.db.session() as s:
                s.execute(delete(Token).where(Token.token_hash == digest))
                s.commit()
        except Exception:
            log.warning("could not revoke a hosted aggregator's token", exc_info=True)
            return
        self.revoked(digest)

    # -- hub start and stop ------------------------------------------------------------
    def shutdown(self) -> None:
        """The hub is stopping: stop every worker but remember it is wanted, so the next hub resumes it."""
        self._closing = True
        with self._lock:
            alive = [w for w in self._workers.values() if w.running]
        for w in alive:
            self.stop(w.task_id, "the hub is shutting down; it resumes when the hub starts again", wanted=True)
            digest = w.state.get("token_hash")
            if digest:
                self._revoke(digest)

    def _recover_safely(self) -> None:
        try:
            self.recover()
        except Exception:
            log.exception("restarting hosted aggregators failed")

    def recover(self) -> None:
        """Adopt live workers of a previous hub process, restart the ones that are wanted."""
        if not self.root.is_dir():
            return
        for child in sorted(self.root.iterdir()):
            if not child.name.isdigit():
                continue
            task_id = int(child.name)
            w = self.worker(task_id)
            st = w.state
            if not st.get("wanted"):
                continue
            pid = st.get("pid")
            if self._claim(task_id) is not None:
                continue  # another live replica runs it
            if st.get("state") == "running" and pid and _pid_alive(int(pid)) and _is_our_worker(int(pid), task_id):
                w.log_append(f"the hub restarted; the aggregator (pid {pid}) kept running and is watched again")
                threading.Thread(target=self._watch, args=(w, None), daemon=True).start()
                continue
            with self.db.session() as s:
                task = s.get(Task, task_id)
                if task is not None:
                    s.expunge(task)
                creator = None
                if task is not None:
                    creator = s.scalars(select(User.name).where(User.id == task.creator_id)).first()
            if task is None or task.status in TERMINAL or creator is None:
                st.update({"wanted": False, "state": "stopped",
                           "reason": "not restarted: the task is gone or finished"})
                w.save()
                continue
            eval_file = Path(st["eval_file"]) if st.get("eval_file") and Path(st["eval_file"]).is_file() else None
            self.start(task, creator, resume=task.status == "RUNNING", started_by="the hub (restart)",
                       eval_file=eval_file, label=st.get("label"), restarts=int(st.get("restarts", 0)) + 1,
                       mlflow_uri=st.get("mlflow_uri"))


    # -- leases across replicas ---------------------------------------------------------
    def _claim(self, task_id: int) -> str | None:
        """Take or renew the task's lease; returns the other live owner if it is not ours to take."""
        now = datetime.now(UTC)
        until = now + timedelta(seconds=self.config.hosted_lease_s)
        with self.db.session() as s:
            holder = s.scalars(select(HostedLease.owner).where(HostedLease.task_id == task_id)).first()
            takeable = (HostedLease.owner == self.owner) | (HostedLease.expires_at < now)
            if holder is not None and _dead_here(holder):
                takeable = takeable | (HostedLease.owner == holder)
            result = s.execute(
                update(HostedLease).where(HostedLease.task_id == task_id).where(takeable)
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

    def _set_lease_token(self, task_id: int, digest: str) -> None:
        with self.db.session() as s:
            s.execute(update(HostedLease).where(HostedLease.task_id == task_id, HostedLease.owner == self.owner)
                      .values(token_hash=digest))
            s.commit()

    def _release(self, task_id: int, *, keep: bool) -> None:
        """Give the lease up: delete it, or (``keep``: still wanted) let it expire now for another replica."""
        try:
            with self.db.session() as s:
                mine = (HostedLease.task_id == task_id) & (HostedLease.owner == self.owner)
                if keep:
                    s.execute(update(HostedLease).where(mine).values(expires_at=datetime.now(UTC)))
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
        now = datetime.now(UTC)
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
        if self._claim(task_id) is not None:
            return  # another replica was faster
        with self.db.session() as s:
            task = s.get(Task, task_id)
            creator = None if task is None else s.scalars(select(User.name).where(User.id == task.creator_id)).first()
            if task is not None:
                s.expunge(task)
        if task is None or task.status in TERMINAL or creator is None:
            self._release(task_id, keep=False)
            return
        if old_token:
            self._revoke(old_token)  # fences an aggregator that outlived its replica
        with self._lock:
            w = self.worker(task_id)
            w.state = w._load()
            pid = w.state.get("pid")
            if pid and w.proc is None and _pid_alive(int(pid)) and _is_our_worker(int(pid), task_id):
                try:
                    os.killpg(int(pid), signal.SIGKILL)  # an orphan on this machine: stop it outright
                except ProcessLookupError:
                    pass
            w.log_append(f"hub replica {self.owner} took over from {old_owner}, whose lease expired")
            eval_file = Path(w.state["eval_file"]) if w.state.get("eval_file") else None
            try:
                self.start(task, creator, resume=task.status == "RUNNING", started_by=f"hub replica {self.owner} (adopted)",
                           eval_file=eval_file if eval_file and eval_file.is_file() else None,
                           label=w.state.get("label"), restarts=int(w.state.get("restarts", 0)))
            except RuntimeError:
                log.warning("could not adopt the hosted aggregator of task %s", task_id, exc_info=True)


class LearnUrlMiddleware:
    """Tells the worker manager where this hub listens, from the first request it serves."""

    def __init__(self, app: Any, manager: WorkerManager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.manager._recovered:
            self.manager.learn_url(scope)
        await self.app(scope, receive, send)
