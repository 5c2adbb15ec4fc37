"""The hub's routes do not overlap, so the order the routers are included in (hot ones
first, ``hub.app``) decides nothing but how soon a request finds its route."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.routing import Match, Mount

from fedpact.hub.app import create_app
from fedpact.hub.config import HubConfig


def _concrete(template: str) -> str:
    """A request path for a route template: an address has a slash, every other parameter not."""
    return re.sub(r"\{[^}]+\}", "7", template.replace("{address}", "participant/bob"))


def test_every_request_path_is_claimed_by_exactly_one_router(tmp_path: Path) -> None:
    app = create_app(HubConfig(data_dir=tmp_path / "hub"))
    routers = [r for r in app.router.routes if not isinstance(r, Mount)]  # the web dashboard's catch-all comes last
    checked = 0
    for template, operations in app.openapi()["paths"].items():
        for method in operations:
            scope = {"type": "http", "method": method.upper(), "path": _concrete(template), "root_path": "",
                     "query_string": b"", "headers": []}  # fmt: skip
            claimed = [r for r in routers if r.matches(scope)[0] == Match.FULL]
            assert len(claimed) == 1, f"{method.upper()} {template} is matched by {len(claimed)} routers"
            checked += 1
    assert checked > 40, "the hub's OpenAPI schema lists its routes"
