"""The web dashboard: static pages served by the hub at ``/``.

The dashboard is plain HTML, CSS and JavaScript modules in ``static/`` (with one vendored
charting library); it has no back end of its own and talks to the hub only through the
same ``/api/v1`` the SDK uses, with the bearer token kept in the browser's
``sessionStorage``. This package imports no training code and nothing from the hub.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Everything the dashboard loads comes from the hub itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class _Dashboard(StaticFiles):
    """Static files with ``index.html`` at ``/``, a strict CSP and no stale caching."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            raise HTTPException(404)  # an unknown API route stays a JSON 404, whatever the method

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-cache"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def mount(app: FastAPI) -> None:
    """Serve the dashboard at ``/``; call after the API routes so they take precedence."""
    app.mount("/", _Dashboard(directory=STATIC_DIR, html=True), name="web")
