"""Error bodies, their OpenAPI description, and the last line of defence against a 500.

Every error the hub sends has the body ``{"detail": ...}``: a sentence saying what was
wrong and what to do, or (for a request that fails validation) pydantic's list of
problems. :func:`error_responses` declares them on routes so the OpenAPI document lists
every status a route really answers.

:class:`ErrorShieldMiddleware` sits inside Starlette's own error middleware. Starlette
re-raises an unhandled exception after sending its 500, which makes uvicorn close the
kept-alive connection; answering here instead keeps the connection usable. It also
turns a full disk into 507, over-deep JSON (a RecursionError while parsing) into 422, and
a database connection found dead mid-request into 503: the pool has already dropped it and
every connection opened before it, so a retry gets a fresh one (``HubClient`` retries 503).
"""

from __future__ import annotations

import errno
import json
import logging
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("fedpact.hub")

DISK_FULL = "the hub's disk is full: nothing was stored; retry later or tell the hub operator"
CONNECTION_LOST = "the hub's connection to its database dropped (the database restarted?); it reconnects: retry"


class ErrorOut(BaseModel):
    """The body of every error response."""

    detail: str | list[dict[str, Any]] = Field(
        description="what was wrong and what to do; for a request that fails validation, a list of problems"
    )


_DESCRIPTIONS = {
    400: "the body could not be parsed, or ended early; nothing was kept",
    401: "not logged in, or the token is invalid or expired",
    403: "logged in, but not allowed to do this",
    404: "no such task, blob, upload, round or model",
    409: "conflicts with the current state (name taken, wrong offset, task status)",
    411: "Content-Length is required",
    413: "too large: a request, a blob, or a quota on stored bytes (X-Fedpact-Limit names it)",
    422: "a field or parameter is invalid",
    429: "too many requests or a count quota reached (X-Fedpact-Limit names it; see Retry-After)",
    503: "busy (password hashing), starting up, or its database connection dropped; retry after Retry-After",
    507: "the hub's disk is full",
}

#: What any route behind a bearer token may answer.
AUTH_ERRORS = (401, 422)
#: What any route on a task may answer, on top of AUTH_ERRORS.
TASK_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429, 507)


_RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
_LIMIT = {"description": "the hub setting whose limit was reached (see docs/security.md)", "schema": {"type": "string"}}
_HEADERS: dict[int, dict[str, Any]] = {
    413: {"X-Fedpact-Limit": _LIMIT},
    429: {"Retry-After": _RETRY_AFTER, "X-Fedpact-Limit": _LIMIT},
    503: {"Retry-After": _RETRY_AFTER},
    507: {"X-Fedpact-Limit": _LIMIT},
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted(set(codes)):
        out[code] = {"model": ErrorOut, "description": _DESCRIPTIONS[code]}
        if code in _HEADERS:
            out[code]["headers"] = _HEADERS[code]
    return out


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower()
        return "disk is full" in text or "no space left" in text
    return False


class ErrorShieldMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            if is_disk_full(exc):
                log.error("disk full in %s %s: %s", scope["method"], scope["path"], exc)
                await _answer(send, 507, DISK_FULL)
            elif isinstance(exc, DBAPIError) and exc.connection_invalidated:
                log.warning("database connection lost in %s %s (%s); the pool reconnects", scope["method"],
                            scope["path"], exc.orig)
                await _answer(send, 503, CONNECTION_LOST, {"retry-after": "0"})
            elif isinstance(exc, RecursionError):
                await _answer(send, 422, "the JSON is nested too deeply: at most 32 levels are accepted")
            else:
                log.exception("unhandled error in %s %s", scope["method"], scope["path"])
                await _answer(
                    send,
                    500,
                    f"the hub failed with an internal error ({type(exc).__name__}); it was logged, retry or tell the operator",
                )


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})
