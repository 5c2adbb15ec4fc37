"""Health: the replica answers, and how each backend it depends on is doing.

The load balancer and a starting client only need the status code; operators read the
backends. The answer is 200 whenever this process serves requests, with ``status``
"degraded" when a backend is down: every replica shares the same backends, so taking
replicas out of rotation would not help, and the relay keeps working without the broker.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from fedpact.hub.auth import State
from fedpact.hub.schemas import BackendHealth, Health

router = APIRouter(tags=["health"])


def hub_version() -> str:
    try:
        return version("fedpact")
    except PackageNotFoundError:
        return "0.1.0"


@router.get("/health", response_model=Health)
async def health(state: State) -> Health:
    backends = {
        "database": await run_in_threadpool(_database, state),
        "broker": _broker(state),
        "blob_store": await run_in_threadpool(_blob_store, state),
    }
    down = any(b.status == "down" for b in backends.values())
    return Health(status="degraded" if down else "ok", version=hub_version(), backends=backends)


def _database(state: State) -> BackendHealth:
    kind = state.db.engine.dialect.name
    try:
        # No transaction: its ROLLBACK would drop the connection's prepared statements (hub.db).
        with state.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any failure is what health reports
        return BackendHealth(kind=kind, status="down", detail=f"{type(e).__name__}: {str(e)[:200]}")
    return BackendHealth(kind=kind, status="ok")


def _broker(state: State) -> BackendHealth:
    if not state.config.broker_url:
        return BackendHealth(kind="none", status="ok", detail="embedded: wake-ups stay in this process")
    if state.notifier.trusted:
        return BackendHealth(kind="rabbitmq", status="ok")
    return BackendHealth(
        kind="rabbitmq", status="down", detail="not connected; polls re-check the database until it is back"
    )


def _blob_store(state: State) -> BackendHealth:
    problem = state.store.problem()
    if problem is None:
        return BackendHealth(kind=state.store.kind, status="ok")
    return BackendHealth(kind=state.store.kind, status="down", detail=problem)
