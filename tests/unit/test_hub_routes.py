"""The hub's routes do not overlap, so the order the routers are included in (hot ones
first, ``hub.app``) decides nothing but how soon a request finds its route."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.routing import Match, Mount

from fedpact.hub.app import API_PREFIX, create_app
from fedpact.hub.config import HubConfig
from fedpact.hub.routes.lean import LeanRoute


def _concrete(template: str) -> str:
    """A request path for a route template: an address has a slash, every other parameter not."""
    return re.sub(r"\{[^}]+\}", "7", template.replace("{address}", "participant/bob"))


def _scope(method: str, template: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": _concrete(template), "root_path": "", "query_string": b"",
            "headers": []}  # fmt: skip


def test_every_request_path_is_claimed_by_exactly_one_router(tmp_path: Path) -> None:
    app = create_app(HubConfig(data_dir=tmp_path / "hub"))
    # The web dashboard's catch-all comes last; the lean routes front FastAPI's (next test).
    routers = [r for r in app.router.routes if not isinstance(r, Mount | LeanRoute)]
    checked = 0
    for template, operations in app.openapi()["paths"].items():
        for method in operations:
            claimed = [r for r in routers if r.matches(_scope(method.upper(), template))[0] == Match.FULL]
            assert len(claimed) == 1, f"{method.upper()} {template} is matched by {len(claimed)} routers"
            checked += 1
    assert checked > 40, "the hub's OpenAPI schema lists its routes"


def test_each_lean_route_comes_first_and_fronts_one_route_of_the_schema(tmp_path: Path) -> None:
    app = create_app(HubConfig(data_dir=tmp_path / "hub"))
    lean = [r for r in app.router.routes if isinstance(r, LeanRoute)]
    assert len(lean) == 3 and app.router.routes[: len(lean)] == lean
    schema = app.openapi()["paths"]
    for route in lean:
        fronted = [(m.upper(), t) for t, ops in schema.items() for m in ops
                   if route.matches(_scope(m.upper(), t))[0] == Match.FULL]  # fmt: skip
        assert fronted == [(route.method, API_PREFIX + re.sub(r":\w+}", "}", route.path))]
        for other in ("HEAD", "PUT", "DELETE"):  # other methods on its path are FastAPI's to answer
            assert route.matches(_scope(other, API_PREFIX + route.path))[0] == Match.NONE
