"""The database engine and sessions.

Everything above this module speaks portable SQLAlchemy, so the same code runs on the
embedded SQLite file and on PostgreSQL. SQLite needs three settings to behave under
concurrent requests: WAL (readers never block the writer), a busy timeout (a second
writer waits instead of failing) and ``BEGIN IMMEDIATE`` (a transaction takes the write
lock up front, so two transactions that read then write cannot deadlock and fail with
"database is locked"). Taking the lock up front also serialises writers, which is what
makes message ids increase in commit order on SQLite (see ``tables.Message``). Sessions
that only read (token checks, mailbox polls: the hot paths) use :meth:`Database.reading`,
which begins a plain deferred transaction, so under WAL they run in parallel with each
other and with the writer.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from fedpact.hub.tables import Task

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: The migration that describes databases made before migrations existed.
BASELINE_REVISION = "0001"
#: First key of the PostgreSQL advisory lock that lets one replica at a time migrate ("fm").
MIGRATION_LOCK_SPACE = 0x666D
#: First key of the PostgreSQL advisory locks that order a task's messages ("fp" in ASCII).
MESSAGE_LOCK_SPACE = 0x6670
_READ_ONLY = "fedpact_read_only"
#: A pooled PostgreSQL connection idle longer than this is pinged before use (see make_engine).
PING_AFTER_IDLE_S = 1.0
_USED_AT = "fedpact_used_at"
_WROTE = "fedpact_wrote"
#: Most writes one group commit carries (see :class:`GroupCommit`).
GROUP_COMMIT_MAX = 256
T = TypeVar("T")


def make_engine(url: str, pool_size: int = 20) -> Engine:
    """Create the engine for ``url`` and the tables it lacks; up to ``2 * pool_size`` connections."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _configure_sqlite(engine)
    else:
        # LIFO: the few connections that carry the load stay in use (their prepared
        # statements warm, the idle rest pinged and recycled) instead of every request
        # taking the one that waited longest.
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_use_lifo=True)
        _ping_idle_connections(engine)
        _track_writes(engine)
    upgrade_schema(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Check a pooled connection before handing it out only if it sat idle for a while.

    ``pool_pre_ping`` checks every checkout: a round trip (and, in the hub, a wait for the
    GIL when it returns) before each of the two or three sessions of a relay request, a
    third of the statements a round sent to PostgreSQL. A connection used within
    ``PING_AFTER_IDLE_S`` is handed out as it is, as HikariCP does within its alive-bypass
    window: if the server went away meanwhile, the statement that finds out fails, and
    SQLAlchemy then discards every connection checked out before it, so the next sessions
    reconnect. A dead connection found by the ping is replaced before anyone uses it.
    """

    @event.listens_for(engine, "connect")
    def _connected(_dbapi_conn: Any, record: Any) -> None:
        record.info[_USED_AT] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        record.info[_USED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _handed_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_USED_AT, -math.inf) < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as e:
            if engine.dialect.is_disconnect(e, dbapi_conn, None):
                raise DisconnectionError(f"a pooled connection was closed: {e}") from e
            raise


def _track_writes(engine: Engine) -> None:
    """Note on each connection whether its transaction has sent anything but a SELECT.

    :meth:`Database.session` ends a transaction that only read with COMMIT instead of
    ROLLBACK. psycopg forgets every statement it prepared on a connection when it sees a
    ROLLBACK (one could undo the creation of an object a statement names), so a route that
    reads after its commit would otherwise make the next requests on that connection parse
    and plan their statements again: on PostgreSQL, most of the server's work per round.
    Anything that is not a plain SELECT (an INSERT in a CTE, a lock) counts as a write.
    """

    @event.listens_for(engine, "begin")
    def _began(conn: Any) -> None:
        conn.info[_WROTE] = False

    @event.listens_for(engine, "before_cursor_execute")
    def _executing(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip()[:6].upper() != "SELECT":
            conn.info[_WROTE] = True


def _read_only(s: Session) -> bool:
    """Whether ``s``'s open transaction has only read (see :func:`_track_writes`)."""
    if s.new or s.dirty or s.deleted:
        return False
    return s.connection().info.get(_WROTE, True) is False


class SchemaError(RuntimeError):
    """The database's schema cannot be brought to this code's (e.g. a newer fedpact made it)."""


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest schema with the migrations shipped in the package.

    A database made before migrations existed (tables, no ``alembic_version``) is stamped
    at the baseline it matches, then upgraded like any other. Replicas that start together
    on PostgreSQL take turns on an advisory lock, so exactly one runs each migration and
    the others find the database already at head; on SQLite ``BEGIN IMMEDIATE`` does the
    same. Everything runs in one transaction: a failed migration leaves the database as it was.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", "fedpact.hub:migrations")
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:space, 0)"), {"space": MIGRATION_LOCK_SPACE})
        config.attributes["connection"] = conn
        existing = set(inspect(conn).get_table_names())
        if "alembic_version" not in existing and "users" in existing:
            command.stamp(config, BASELINE_REVISION)
        try:
            command.upgrade(config, "head")
        except CommandError as e:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            raise SchemaError(
                f"the database {engine.url.render_as_string(hide_password=True)} is at schema revision "
                f"{current!r}, which this fedpact does not know: a newer fedpact made it; upgrade fedpact "
                f"({e})"
            ) from None


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    """The engine and its session factory, owned by one app."""

    def __init__(self, url: str, pool_size: int = 20) -> None:
        self.engine = make_engine(url, pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._track = self.engine.dialect.name == "postgresql"
        # SQLite has one writer at a time; a second one waits in SQLite's busy handler,
        # which sleeps in steps of up to 100 ms. Queueing writers on a lock in this process
        # instead hands the database over as soon as it is free. (PostgreSQL needs no lock.)
        self._write_lock: AbstractContextManager[Any] = (
            threading.RLock() if url.startswith("sqlite") else nullcontext()
        )
        self._group = GroupCommit(self) if url.startswith("sqlite") else None
        # Reads on PostgreSQL run without a transaction: under READ COMMITTED every statement
        # takes its own snapshot anyway, so nothing changes but the BEGIN and ROLLBACK round
        # trips each reading session would cost (two of a few per relay request).
        self._read_options: dict[str, Any] = {_READ_ONLY: True}
        if self.dialect == "postgresql":
            self._read_options["isolation_level"] = "AUTOCOMMIT"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that rolls back on error and is always closed.

        On PostgreSQL a transaction left open that only read ends with COMMIT, which keeps
        the connection's prepared statements (see :func:`_track_writes`); one that wrote
        and was not committed is rolled back as before.
        """
        with self._write_lock, self._sessions() as s:
            try:
                yield s
            except BaseException:
                s.rollback()
                raise
            if self._track and s.in_transaction() and _read_only(s):
                try:
                    s.commit()
                except SQLAlchemyError:
                    s.rollback()  # it only read: ending it cannot lose anything, nor fail the request

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only: writing through it may fail on SQLite (stale snapshot), and
        on PostgreSQL each write would commit at once."""
        with self._sessions() as s:
            try:
                s.connection(execution_options=self._read_options)
                yield s
            finally:
                s.rollback()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def statements(self) -> Iterator[Session]:
        """A session in which every statement is its own transaction (PostgreSQL only).

        For a write that is one statement (``hub.inserts``): it commits as it runs, with no
        BEGIN before it and no COMMIT round trip after it, so the locks it takes are held
        only while the database executes it.
        """
        if self.dialect != "postgresql":
            raise RuntimeError("single-statement transactions are for PostgreSQL; SQLite writes go through write()")
        with self._sessions() as s:
            s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            yield s

    async def write(self, job: Callable[[Session], T]) -> T:
        """Run ``job`` in a write transaction from the event loop, holding no request thread.

        On SQLite the job joins a group commit (:class:`GroupCommit`); on PostgreSQL, whose
        writers run in parallel, it runs in a session of its own in the thread pool. The
        job must not commit; what it returns must not need the session (plain values).
        An exception it raises undoes its own writes only.
        """
        if self._group is not None:
            return await asyncio.wrap_future(self._group.submit(job))
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self._run_alone, job)

    def _run_alone(self, job: Callable[[Session], T]) -> T:
        with self.session() as s:
            out = job(s)
            s.commit()
            return out

    def dispose(self) -> None:
        if self._group is not None:
            self._group.stop()
        self.engine.dispose()


class GroupCommit:
    """One writer thread that commits the writes waiting for SQLite's lock together.

    SQLite has one writer at a time and each commit waits for the disk (WAL fsync). With a
    thousand participants posting updates and acknowledging polls, writes one by one queue
    behind that lock, each holding a request thread while it waits. Here a request hands
    its write (a function of a session) over and awaits the result without a thread; the
    writer takes every write that is waiting, runs each in a SAVEPOINT (a write that fails
    is undone alone and its caller gets the error), and commits them all at once: one
    fsync for the batch. Commit order is still the order of the ids (one writer), which
    the relay's cursors rely on (``tables.Message``).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._jobs: list[tuple[Callable[[Session], Any], Future[Any]]] = []
        self._cv = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[Session], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._cv:
            if self._stopped:
                raise RuntimeError("the hub's database is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fedpact-group-commit", daemon=True)
                self._thread.start()
            self._jobs.append((job, future))
            self._cv.notify()
        return future

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stopped:
                    self._cv.wait()
                if not self._jobs:
                    return
                batch, self._jobs = self._jobs[:GROUP_COMMIT_MAX], self._jobs[GROUP_COMMIT_MAX:]
            self._commit(batch)

    def _commit(self, batch: list[tuple[Callable[[Session], Any], Future[Any]]]) -> None:
        results: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with self._db.session() as s:
                for job, future in batch:
                    if not future.set_running_or_notify_cancel():
                        continue
                    nested = s.begin_nested()
                    try:
                        out = job(s)
                        nested.commit()
                    except BaseException as exc:  # noqa: BLE001 - handed to the job's caller
                        if nested.is_active:
                            nested.rollback()
                        results.append((future, None, exc))
                    else:
                        results.append((future, out, None))
                s.commit()
        except BaseException as exc:  # noqa: BLE001 - the commit failed: every write of the batch is lost
            for _job, future in batch:
                if not future.done():
                    if future.running() or future.set_running_or_notify_cancel():
                        future.set_exception(exc)
            return
        for future, out, error in results:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(out)


def lock_task_messages(s: Session, task_id: int) -> None:
    """Serialise the message inserts of one task until ``s`` commits or rolls back.

    Call it right before the INSERT so the lock is held for as short a time as possible.
    The argument for why this keeps a reader's cursor correct is in ``tables.Message``.
    SQLite needs nothing: its ``BEGIN IMMEDIATE`` already serialises every writer. On
    PostgreSQL a transaction-scoped advisory lock keyed by the task serialises only that
    task's senders (other tasks write in parallel) and, unlike a row lock on the task,
    never waits behind an unrelated update of the task row. Any other database falls back
    to a row lock on the task.
    """
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        return
    if dialect == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:space, :task)"), {"space": MESSAGE_LOCK_SPACE, "task": task_id})
        return
    s.execute(select(Task.id).where(Task.id == task_id).with_for_update())
