"""What the dashboard needs from the hub, over real HTTP: its files, offline, and the task filters."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from hub_fixtures import Api, api, definition, hub  # noqa: F401

STATIC = Path(__file__).resolve().parents[2] / "src" / "fedpact" / "web" / "static"


def test_dashboard_is_served_at_the_root_with_a_strict_policy(hub) -> None:  # noqa: F811
    with httpx.Client(base_url=hub.url) as c:
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        # Everything the page loads comes from the hub: no CDN, so it works offline.
        refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert refs and all(not ref.startswith(("http:", "https:", "//")) for ref in refs), refs
        for ref in refs:
            if not ref.startswith("#"):
                assert c.get("/" + ref).status_code == 200, ref
        for name in ("app.js", "api.js", "style.css", "vendor/chart.umd.min.js"):
            assert c.get(f"/{name}").status_code == 200
        assert c.get("/app.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))
        assert c.get("/no-such-file.js").status_code == 404
        assert c.get("/api/v1/no-such-route").json() == {"detail": "Not Found"}
        assert c.get("/api/v1/health").json()["status"] == "ok"  # the API still wins over the static mount


def test_static_files_load_nothing_from_the_internet() -> None:
    for path in STATIC.rglob("*"):
        if path.suffix in (".html", ".css") or path.name in ("app.js", "api.js"):
            text = path.read_text()
            assert not re.search(r"https?://(?!www\.chartjs\.org)", text), path


def test_web_package_imports_no_training_code() -> None:
    code = "import sys, fedpact.web; print(sorted(m for m in ('torch', 'numpy', 'fedpact.hub') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_task_list_filters_by_privacy_mode_and_algorithm(api: Api) -> None:  # noqa: F811
    alice = api.user("alice")
    avg = alice.create_task(definition=definition())
    prox = alice.create_task(definition=definition(algorithm={"name": "fedprox", "params": {"mu": 0.1}}))

    def names(**params: str) -> set[str]:
        r = alice.http.get("/tasks", params={"mine": "true", **params})
        assert r.status_code == 200, r.text
        return {t["name"] for t in r.json()["items"]}

    assert names(algorithm="fedprox") == {prox["name"]}
    assert names(algorithm="fedavg") == {avg["name"]}
    assert names(privacy="open") == {avg["name"], prox["name"]}
    assert names(privacy="open", algorithm="fedprox", q=prox["name"]) == {prox["name"]}
    assert names(privacy="secure") == set()
    assert names(algorithm="fed") == set()  # exact, not a substring
    for bad in ({"privacy": ""}, {"privacy": "x" * 65}, {"algorithm": "y" * 201}):
        r = alice.http.get("/tasks", params=bad)
        assert r.status_code == 422, r.text
