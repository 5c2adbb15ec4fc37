"""Assembling the FastAPI application from its parts."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from fedpact.hub.auth import make_hasher
from fedpact.hub.blobstore import BlobStore
from fedpact.hub.config import HubConfig
from fedpact.hub.db import Database
from fedpact.hub.limits import BodyLimitMiddleware
from fedpact.hub.metrics import CONTENT_TYPE, MetricsMiddleware
from fedpact.hub.notify import AsyncioNotifier
from fedpact.hub.routes import (
    blobs,
    health,
    hosted,
    membership,
    models,
    relay,
    rounds,
    tasks,
    users,
)
from fedpact.hub.routes.health import hub_version
from fedpact.hub.state import HubState
from fedpact.hub.workers import LearnUrlMiddleware, WorkerManager
from fedpact.web import mount as mount_web

API_PREFIX = "/api/v1"
log = logging.getLogger("fedpact.hub")


def create_app(config: HubConfig) -> FastAPI:
    """A hub application over ``config.data_dir``; the database schema is created if missing."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    assert config.database_url is not None
    notifier: AsyncioNotifier = AsyncioNotifier()
    if config.broker_url:
        from fedpact.hub.broker import BrokerNotifier

        notifier = BrokerNotifier(config.broker_url, reconnect_s=config.broker_reconnect_s)
    state = HubState(
        config=config,
        db=Database(config.database_url),
        store=BlobStore(config.blobs_dir, config.uploads_dir),
        notifier=notifier,
        hasher=make_hasher(config),
    )

    workers = WorkerManager(config, state.db)
    workers.notify = notifier.notify

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        notifier.bind(asyncio.get_running_loop())
        yield
        await asyncio.to_thread(workers.shutdown)
        await notifier.close()
        state.db.dispose()

    app = FastAPI(
        title="fedpact hub",
        version=hub_version(),
        description="Tasks, membership, message relay, blobs, rounds and the model registry of a fedpact hub.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.hub = state
    app.state.workers = workers
    for module in (health, users, tasks, membership, relay, blobs, rounds, models, hosted):
        app.include_router(module.router, prefix=API_PREFIX)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_json_bytes)
    app.add_middleware(LearnUrlMiddleware, manager=workers)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus text format; scrape every replica (see docs/deploy.md)."""
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)
    mount_web(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse(
            {
                "detail": f"the hub failed with an internal error ({type(exc).__name__}); it was logged, retry or tell the operator"
            },
            status_code=500,
        )

    return app


def _json_safe(value: Any) -> Any:
    """Make a validation error echo-able: it may quote NaN or a megabyte of the rejected input."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
