"""Assembling the FastAPI application from its parts."""

from __future__ import annotations

import asyncio
import hmac
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
from fedpact.hub.blobgc import Collector
from fedpact.hub.blobstore import open_blob_store
from fedpact.hub.config import HubConfig
from fedpact.hub.db import Database
from fedpact.hub.docs import mount_docs
from fedpact.hub.errors import TASK_ERRORS, ErrorShieldMiddleware, error_responses
from fedpact.hub.limits import BodyLimitMiddleware
from fedpact.hub.metrics import CONTENT_TYPE, MetricsMiddleware
from fedpact.hub.notify import AsyncioNotifier
from fedpact.hub.passwords import HashPool
from fedpact.hub.routes import (
    algorithms,
    blobs,
    cards,
    health,
    hosted,
    localstore,
    membership,
    models,
    relay,
    rounds,
    tasks,
    users,
)
from fedpact.hub.routes.health import hub_version
from fedpact.hub.routes.lean import lean_routes
from fedpact.hub.state import HubState
from fedpact.hub.throttle import Throttle
from fedpact.hub.tokens import TokenCache
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
    db = Database(config.database_url, config.database_pool_size)
    store = open_blob_store(config.blob_store, config.data_dir)
    gc = Collector(
        db, store, interval_s=config.gc_interval_s, grace_s=config.gc_grace_s, upload_ttl_s=config.upload_ttl_s,
        round_grace_s=config.gc_round_grace_s, round_every_s=config.gc_round_every_s,
    )
    state = HubState(
        config=config,
        db=db,
        store=store,
        notifier=notifier,
        hasher=make_hasher(config),
        hash_pool=HashPool(config.hash_slots, config.hash_wait_s),
        throttle=Throttle(config.throttle_window_s),
        gc=gc,
        tokens=TokenCache(ttl_s=config.token_cache_s),
    )

    notifier.on_revoke = state.tokens.forget
    workers = WorkerManager(config, state.db, store)
    workers.notify = notifier.notify
    workers.notifier = notifier
    workers.revoked = notifier.revoked

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        notifier.bind(asyncio.get_running_loop())
        state.hash_pool.bind(asyncio.get_running_loop())
        gc.start()
        yield
        await asyncio.to_thread(gc.stop)
        await asyncio.to_thread(workers.shutdown)
        await notifier.close()
        state.db.dispose()

    app = FastAPI(
        title="fedpact hub",
        version=hub_version(),
        description="Tasks, membership, message relay, blobs, rounds and the model registry of a fedpact hub.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.hub = state
    app.state.workers = workers
    # The routes of a round first (relay, blobs, rounds): every request is matched against the
    # routes in this order, and those are most of a federation's requests. No two routes
    # match one request (tests/unit/test_hub_routes.py), so the order changes nothing else.
    for module in (relay, blobs, rounds, tasks, membership, models, cards, hosted):
        app.include_router(module.router, prefix=API_PREFIX, responses=error_responses(*TASK_ERRORS))
    app.include_router(health.router, prefix=API_PREFIX)
    app.include_router(algorithms.router, prefix=API_PREFIX)
    app.include_router(users.router, prefix=API_PREFIX)
    app.include_router(localstore.router, prefix=API_PREFIX)
    # The poll, the update and the download are answered without FastAPI's per-request
    # machinery when their parameters are plain, and handed on to FastAPI's routes otherwise
    # (routes.lean).
    app.router.routes[:0] = lean_routes(API_PREFIX)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_json_bytes)
    app.add_middleware(LearnUrlMiddleware, manager=workers)
    app.add_middleware(ErrorShieldMiddleware)
    mount_docs(app)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus text format; scrape every replica (see docs/deploy.md).

        Open unless ``metrics_token`` is set: the figures name routes, not users or tasks,
        but an operator who exposes replicas beyond the scraper can require the token.
        """
        wanted = config.metrics_token
        if wanted:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {wanted}".encode()):
                return JSONResponse(
                    {"detail": "/metrics needs the hub's metrics token: Authorization: Bearer <metrics_token>"},
                    status_code=401, headers={"WWW-Authenticate": "Bearer"},
                )
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)
    mount_web(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

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
