"""``/api/v1/docs`` works offline: Swagger UI's files come from the hub, under the dashboard's CSP."""

from __future__ import annotations

import re
from typing import Any

import httpx
from page_errors import PageErrors

from fedpact.web import CONTENT_SECURITY_POLICY
from hub_fixtures import hub  # noqa: F401


def test_docs_page_references_only_the_hub_and_its_assets_load(hub) -> None:  # noqa: F811
    with httpx.Client(base_url=hub.url) as c:
        r = c.get("/api/v1/docs")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "<script>" not in r.text  # no inline script: the CSP would block it
        refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert len(refs) >= 3 and all(ref.startswith("/api/v1/docs/") for ref in refs), refs
        for ref in refs:
            asset = c.get(ref)
            assert asset.status_code == 200, ref
            assert asset.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, ref
        init = c.get("/api/v1/docs/init.js").text
        assert "/api/v1/openapi.json" in init and "validatorUrl: null" in init
        assert not re.search(r"https?://", init)


def test_swagger_ui_renders_the_api_with_no_request_leaving_the_hub(hub, browser: Any, page_errors: PageErrors) -> None:  # noqa: F811
    outside: list[str] = []
    page = page_errors.watch(browser.new_page())

    def route(r: Any) -> None:
        if r.request.url.startswith(hub.url):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(f"{hub.url}/api/v1/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    assert "/api/v1/tasks/{task}/mailbox/{address}" in page.inner_text("#swagger-ui")
    assert page.locator(".opblock").count() > 30
    page.close()
    assert outside == []
    assert page_errors.unexpected() == []
