"""Login and registration cannot take the hub down: throttles, the bounded hash pool, the policy.

Real hubs over real HTTP. The hash-pool test fills the pool's slots from the test (the hub
runs in this process) instead of racing real bursts, so it is deterministic and asserts
outcomes, never timings.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub
from fedpact.hub.passwords import password_problem
from hub_fixtures import PASSWORD, Api, api, fast_config, hub, unique  # noqa: F401


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[tuple[EmbeddedHub, Api]]:
    config = fast_config(
        tmp_path / "hub",
        login_failures_per_name=3,
        login_failures_per_address=5,
        registrations_per_address=4,
        hash_slots=1,
        hash_wait_s=0.2,
    )
    with EmbeddedHub(config=config) as h:
        a = Api(h.url)
        yield h, a
        a.close()


def test_failed_logins_per_name_get_429_with_retry_after(strict: tuple[EmbeddedHub, Api]) -> None:
    _, users = strict
    name = unique("alice")
    assert users.register(name).status_code == 201
    for _ in range(3):
        assert users.login(name, "wrong password here").status_code == 401
    r = users.login(name)  # even the right password waits: the guesser must not learn it
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) > 0
    assert "login_failures_per_name = 3" in r.json()["detail"]
    assert r.headers["x-fedpact-limit"] == "login_failures_per_name"


def test_failed_logins_per_address_get_429(strict: tuple[EmbeddedHub, Api]) -> None:
    _, users = strict
    names = [unique("u") for _ in range(3)]
    for n in names:
        assert users.register(n).status_code == 201
    failures = [users.login(n, "wrong password here") for n in names + names[:2]]
    assert [r.status_code for r in failures] == [401] * 5
    r = users.login(names[2])
    assert r.status_code == 429 and r.headers["x-fedpact-limit"] == "login_failures_per_address"
    assert int(r.headers["retry-after"]) > 0


def test_a_successful_login_clears_its_name(strict: tuple[EmbeddedHub, Api]) -> None:
    _, users = strict
    name = unique("bob")
    assert users.register(name).status_code == 201
    for _ in range(2):
        assert users.login(name, "wrong password here").status_code == 401
    assert users.login(name).status_code == 200
    for _ in range(2):
        assert users.login(name, "wrong password here").status_code == 401
    assert users.login(name).status_code == 200


def test_registrations_per_address_get_429_and_create_nobody(strict: tuple[EmbeddedHub, Api]) -> None:
    _, users = strict
    for _ in range(4):
        assert users.register(unique("r")).status_code == 201
    name = unique("r")
    r = users.register(name)
    assert r.status_code == 429 and r.headers["x-fedpact-limit"] == "registrations_per_address"
    assert int(r.headers["retry-after"]) > 0
    assert users.login(name).status_code == 401


def test_full_hash_pool_answers_503_while_other_requests_go_on(strict: tuple[EmbeddedHub, Api]) -> None:
    h, users = strict
    user = users.user("carol")
    task = user.create_task()["name"]
    pool = h.app.state.hub.hash_pool  # type: ignore[union-attr]
    assert pool.loop is not None and pool.free is not None
    asyncio.run_coroutine_threadsafe(pool.free.acquire(), pool.loop).result(timeout=10)  # the one slot
    try:
        r = users.login(user.name)
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["detail"]
        r = users.register(unique("late"))
        assert r.status_code == 503
        # Everything that hashes no password is served as usual while the pool is full.
        assert users.anonymous().get("/health").status_code == 200
        assert user.http.get(f"/tasks/{task}").status_code == 200
        assert user.http.get("/users/me").status_code == 200
    finally:
        pool.loop.call_soon_threadsafe(pool.free.release)
    assert users.login(user.name).status_code == 200


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short-pw", "at least 10 characters"),
        ("password123", "too common"),
        ("qwertyuiop", "too common"),
        ("iloveyou12", "too common"),
    ],
)
def test_weak_passwords_are_refused_and_create_nobody(api: Api, password: str, why: str) -> None:  # noqa: F811
    name = unique("weak")
    r = api.register(name, password=password)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == "password" and why in r.json()["detail"][0]["msg"]
    assert api.login(name, password).status_code == 401


def test_the_user_name_is_not_a_password(api: Api) -> None:  # noqa: F811
    name = unique("samename")
    r = api.register(name, password=name)
    assert r.status_code == 422 and "user name" in r.json()["detail"][0]["msg"]
    assert api.login(name, name).status_code == 401


def test_the_shared_test_passwords_pass_the_policy() -> None:
    for password in (PASSWORD, "correct-horse-9", "demo-password-1", "bench-password-1"):
        assert password_problem(password, "alice") is None, password
