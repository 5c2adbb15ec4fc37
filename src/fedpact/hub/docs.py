"""The interactive API documentation at ``/api/v1/docs``, served entirely by the hub.

FastAPI's default page loads Swagger UI from a CDN, which fails on an offline hub and
would let a third party run script next to a user's token. The assets are vendored in
``docs_static/swagger-ui`` (from npm's ``swagger-ui-dist``, version 5 because the hub's
document is OpenAPI 3.1), and the page runs under the dashboard's strict
Content-Security-Policy: no inline script (the start-up code is a file of its own), no
other origin, and Swagger UI's online validator switched off.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from fedpact.web import CONTENT_SECURITY_POLICY

DOCS = "/api/v1/docs"
ASSETS_DIR = Path(__file__).resolve().parent / "docs_static" / "swagger-ui"
_SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]

_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>fedpact hub API</title>
<link rel="stylesheet" href="{DOCS}/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS}/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS}/assets/swagger-ui-bundle.js"></script>
<script src="{DOCS}/init.js"></script>
</body>
</html>
"""

_INIT = """window.ui = SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


class _Assets(StaticFiles):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_SECURITY_HEADERS]}
            await send(message)

        await super().__call__(scope, receive, with_headers)


def _headers() -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in _SECURITY_HEADERS}


def mount_docs(app: FastAPI) -> None:
    """Add the docs page, its start-up script and Swagger UI's files; call before the dashboard."""

    @app.get(DOCS, include_in_schema=False)
    def docs_page() -> HTMLResponse:
        return HTMLResponse(_PAGE, headers=_headers())

    @app.get(f"{DOCS}/init.js", include_in_schema=False)
    def docs_init() -> Response:
        return Response(_INIT, media_type="text/javascript", headers=_headers())

    app.mount(f"{DOCS}/assets", _Assets(directory=ASSETS_DIR), name="docs-assets")
