"""Lean routes for the requests every participant makes every round: poll, download, update.

For each request FastAPI matches the path against the contexts of every included router,
solves the route's dependencies and validates each parameter through pydantic. For a poll
that machinery cost more of the hub's CPU than the poll itself (docs/benchmarks.md (k)).
A lean route sits in front of FastAPI's route for the same method and path. It answers a
request whose parameters are all in their plain form (an integer as digits within its
bounds, a flag as ``true`` or ``false``, text within its length), after the same
authentication, with the function FastAPI's route calls. Any other request goes on to
FastAPI's route as it came, which parses it or refuses it as the OpenAPI schema says, so a
refusal reads the same whichever way a request went. Errors raised on the way reach the
app's exception handlers as from any route. Only FastAPI's routes are in the schema.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from fedpact.hub.auth import current_user
from fedpact.hub.routes import blobs, relay
from fedpact.hub.schemas import INT32_MAX, INT64_MAX

_DIGITS = re.compile(r"[0-9]{1,19}")
_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
#: Set in a request's scope when its lean route handed it on, so that routing passes over it.
_HANDED_ON = "fedpact.lean.handed_on"

Parse = Callable[[Request], dict[str, Any]]
Answer = Callable[..., Awaitable[Response]]


class Unusual(Exception):
    """A parameter not in its plain form: FastAPI's route parses it, or refuses it."""


def integer(value: str | None, low: int, high: int, default: int | None = None) -> int | None:
    if value is None:
        return default
    if not _DIGITS.fullmatch(value) or not low <= (number := int(value)) <= high:
        raise Unusual
    return number


def decimal(value: str | None, default: float) -> float:
    if value is None:
        return default
    if not _DECIMAL.fullmatch(value):
        raise Unusual
    return float(value)


def flag(value: str | None) -> bool:
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise Unusual


def text(value: str | None, max_length: int) -> str:
    """A required text parameter; an empty or missing one is FastAPI's to judge."""
    if not value or len(value) > max_length:
        raise Unusual
    return value


class LeanRoute(Route):
    """Answers the plain requests of one method and path; hands the others on."""

    def __init__(self, prefix: str, template: str, method: str, parse: Parse, answer: Answer) -> None:
        self.parse, self.answer, self.method, self.label = parse, answer, method, template
        super().__init__(prefix + template, self._serve, methods=[method], include_in_schema=False)
        self.app = self._serve  # an ASGI app, not a request-response function (no wrapping)
        # What FastAPI's route reports as its path, and metrics label requests by (matching
        # uses the regex compiled above).
        self.path = template

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != self.method or scope.get(_HANDED_ON):
            return Match.NONE, {}
        return super().matches(scope)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            params = self.parse(request)
        except Unusual:
            request.app.state.hub.metrics.handed_on.labels(self.label).inc()
            scope[_HANDED_ON] = True
            await request.app.router(scope, receive, send)  # routed again, past this route
            return
        scope["route"] = self  # as FastAPI's routes leave themselves: metrics label requests by it
        response = await self.answer(request, **params)
        await response(scope, receive, send)


def _poll_params(request: Request) -> dict[str, Any]:
    q = request.query_params
    return {
        "after": integer(q.get("after"), 0, INT64_MAX),
        "wait": decimal(q.get("wait"), 0.0),
        "limit": integer(q.get("limit"), 1, relay.MAX_PAGE, relay.DEFAULT_PAGE),
        "ack": flag(q.get("ack")),
    }


async def _poll(request: Request, **params: Any) -> Response:
    user = await current_user(request)
    task, address = request.path_params["task"], request.path_params["address"]
    out = await relay.answer_poll(request.app.state.hub, user, task, address, **params)
    return Response(out.model_dump_json(), media_type="application/json")


def _raw_params(request: Request) -> dict[str, Any]:
    q = request.query_params
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > relay.MAX_KEY:
        raise Unusual
    return {
        "sender": text(q.get("sender"), relay.MAX_ADDRESS),
        "recipient": text(q.get("recipient"), relay.MAX_ADDRESS),
        "kind": text(q.get("kind"), relay.MAX_KIND),
        "round": integer(q.get("round"), 0, INT32_MAX),
        "idempotency_key": key,
    }


async def _raw(request: Request, **params: Any) -> Response:
    user = await current_user(request)
    state = request.app.state.hub
    out, replayed = await relay.store_raw_message(state, user, request, request.path_params["task"], **params)
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(out.model_dump_json(), status_code=201, headers=headers, media_type="application/json")


def _no_params(_request: Request) -> dict[str, Any]:
    """The download has only path parameters: its own checks judge them, whichever route runs."""
    return {}


async def _download(request: Request) -> Response:
    user = await current_user(request)
    task, sha256 = request.path_params["task"], request.path_params["sha256"]
    response: Response = await run_in_threadpool(blobs.get_blob, task, sha256, user, request.app.state.hub)
    return response


def lean_routes(prefix: str) -> list[LeanRoute]:
    """The lean routes, to be matched before every other route of the app."""
    return [
        LeanRoute(prefix, "/tasks/{task}/mailbox/{address:path}", "GET", _poll_params, _poll),
        LeanRoute(prefix, "/tasks/{task}/messages/raw", "POST", _raw_params, _raw),
        LeanRoute(prefix, "/tasks/{task}/blobs/{sha256}", "GET", _no_params, _download),
    ]
