"""A cap on request bodies, enforced while they arrive.

FastAPI reads a JSON body whole before validating it, so without this a client could
make the hub buffer an arbitrarily large body. Upload chunks are exempt: their route
streams them to disk and enforces the declared blob size itself.
"""

from __future__ import annotations

import json
import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Raw-byte routes that enforce their own limit (max_blob_bytes) while streaming to disk.
_UPLOAD_CHUNK = re.compile(r"^/api/v1/tasks/[^/]+/(uploads/[^/]+|blobs/[^/]+|messages/raw)$")


def _detail(max_bytes: int) -> str:
    return (
        f"the request body exceeds {max_bytes} bytes, the limit for JSON requests; "
        "send large payloads as blobs (POST /api/v1/tasks/{task}/uploads) and reference them"
    )


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` so that FastAPI's body reader passes it on as a 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _detail(max_bytes))


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"] in ("PUT", "POST") and _UPLOAD_CHUNK.match(scope["path"])):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": _detail(self.max_bytes)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
