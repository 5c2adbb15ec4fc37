"""Users and sessions over real HTTP: registration, login, logout, tokens, health and docs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub  # noqa: E402
from hub_fixtures import PASSWORD, Api, api, fast_config, hub, unique  # noqa: E402,F401


def test_health_and_docs_need_no_login(api: Api) -> None:
    c = api.anonymous()
    health = c.get("/health").json()
    assert (health["status"], health["version"]) == ("ok", "0.1.0")
    assert {k: (b["kind"], b["status"]) for k, b in health["backends"].items()} == {
        "database": ("sqlite", "ok"), "broker": ("none", "ok"), "blob_store": ("local", "ok"),
    }
    spec = c.get("/openapi.json").json()
    assert "/api/v1/tasks/{task}/mailbox/{address}" in spec["paths"]
    assert c.get("/docs").status_code == 200


def test_register_login_me_logout(api: Api) -> None:
    name = unique("alice")
    r = api.register(name, organisation="Carmaker AG")
    assert r.status_code == 201
    assert r.json()["name"] == name and r.json()["organisation"] == "Carmaker AG"
    assert "password" not in r.text
    r = api.login(name)
    assert r.status_code == 200
    body = r.json()
    assert body["user"]["name"] == name and body["expires_at"].endswith("Z")
    c = api.client(body["token"])
    assert c.get("/users/me").json()["name"] == name
    assert c.post("/auth/logout").status_code == 204
    r = c.get("/users/me")
    assert r.status_code == 401 and "log in again" in r.json()["detail"]


def test_duplicate_user_is_409_and_keeps_the_first(api: Api) -> None:
    name = unique("bob")
    assert api.register(name, organisation="first").status_code == 201
    r = api.register(name, password="another password", organisation="second")
    assert r.status_code == 409 and "taken" in r.json()["detail"]
    assert api.login(name, "another password").status_code == 401
    r = api.login(name)
    assert r.status_code == 200 and r.json()["user"]["organisation"] == "first"


def test_malformed_registrations_are_422_and_create_nobody(api: Api) -> None:
    for body, field in [
        ({"name": "x", "password": PASSWORD, "organisation": "o"}, "name"),
        ({"name": "bad name!", "password": PASSWORD, "organisation": "o"}, "name"),
        ({"name": unique("ok"), "password": "short", "organisation": "o"}, "password"),
        ({"name": unique("ok"), "password": PASSWORD, "organisation": ""}, "organisation"),
        ({"name": unique("ok"), "password": PASSWORD, "organisation": "o", "admin": True}, "admin"),
    ]:
        r = api.anonymous().post("/users", json=body)
        assert r.status_code == 422, body
        assert r.json()["detail"][0]["loc"][-1] == field
        assert api.login(body["name"], body["password"]).status_code == 401


def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    name = unique("carol")
    api.register(name)
    wrong = api.login(name, "not the password")
    unknown = api.login(unique("nobody"), PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "wrong user name or password"}


def test_routes_need_a_valid_token(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"}):
        r = httpx.get(f"{api.url}/api/v1/tasks", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        assert "/auth/login" in r.json()["detail"]


def test_tokens_expire(tmp_path: Path) -> None:
    with EmbeddedHub(config=fast_config(tmp_path, token_ttl_s=0.5)) as h:
        a = Api(h.url)
        u = a.user()
        assert u.http.get("/users/me").status_code == 200
        time.sleep(0.7)
        r = u.http.get("/users/me")
        assert r.status_code == 401 and "expired" in r.json()["detail"]
        a.close()
