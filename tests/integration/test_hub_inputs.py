"""No input reaches a 500: out-of-range integers, over-deep JSON, a full disk, and the
kept-alive connection after an error. Real hubs over real HTTP; each refusal changes nothing."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import EmbeddedHub
from hub_fixtures import Api, User, api, definition, fast_config, hub, sha, unique  # noqa: F401


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.fixture
def members(api: Api) -> tuple[User, User, str, dict[str, Any]]:  # noqa: F811
    alice, bob = api.user("alice"), api.user("bob")
    task = alice.create_task()["name"]
    bob.join(task)
    ref = alice.upload(task, b"checkpoint bytes")
    return alice, bob, task, ref


def test_out_of_range_integers_are_422(members: tuple[User, User, str, dict[str, Any]]) -> None:
    alice, bob, task, ref = members
    me = f"participant/{bob.name}"
    huge = 10**20
    cases = [
        alice.http.get("/tasks", params={"offset": huge}),
        alice.http.get(f"/tasks/{task}/mailbox/aggregator", params={"after": huge}),
        alice.http.post(f"/tasks/{task}/mailbox/aggregator/ack", json={"cursor": huge}),
        bob.send(task, me, "aggregator", round=2**64),
        bob.http.post(
            f"/tasks/{task}/messages/raw",
            params={"sender": me, "recipient": "aggregator", "kind": "update", "round": 2**64},
            content=b"x",
        ),
        alice.http.put(f"/tasks/{task}/checkpoint", json={"round": 2**64, "blob": ref}),
        alice.http.put(f"/tasks/{task}/checkpoint", json={"round": 1, "blob": ref, "state": {"n": 2**64}}),
        alice.http.post(f"/tasks/{task}/uploads", json={"sha256": "a" * 64, "size": 2**64}),
        alice.http.put(f"/tasks/{task}/uploads/{'u' * 32}", params={"offset": huge}, content=b"x"),
        alice.http.get(f"/tasks/{task}/aggregator/log", params={"offset": huge}),
        alice.http.post(f"/tasks/{task}/models", json={"blob": ref, "rounds": 2**64}),
    ]
    for r in cases:
        assert r.status_code == 422, (r.request.url, r.text)
    assert alice.http.get(f"/tasks/{task}/mailbox/aggregator").json()["messages"] == []
    assert alice.http.get(f"/tasks/{task}/checkpoint").status_code == 404
    assert alice.http.get("/models", params={"task": task}).json()["items"] == []


def test_over_deep_json_is_422_at_write_time(members: tuple[User, User, str, dict[str, Any]]) -> None:
    alice, _, task, ref = members
    too_deep = deep(40)
    r = alice.http.put(f"/tasks/{task}/checkpoint", json={"round": 1, "blob": ref, "state": {"x": too_deep}})
    assert r.status_code == 422 and "nested more than 32" in r.text
    r = alice.http.post(f"/tasks/{task}/models", json={"blob": ref, "rounds": 1, "metadata": {"x": too_deep}})
    assert r.status_code == 422 and "nested more than 32" in r.text
    name = unique("deep")
    model = {"name": "mlp", "params": {"hidden": [16], "extra": too_deep}}
    r = alice.http.post("/tasks", json={"name": name, "definition": definition(model=model)})
    assert r.status_code == 422 and "nested more than 32" in r.text
    assert alice.http.get(f"/tasks/{task}/checkpoint").status_code == 404
    assert alice.http.get("/models", params={"task": task}).json()["items"] == []
    assert alice.http.get(f"/tasks/{name}").status_code == 404
    # 31 levels inside "state" (32 with it) are stored and read back.
    r = alice.http.put(f"/tasks/{task}/checkpoint", json={"round": 1, "blob": ref, "state": {"x": deep(31)}})
    assert r.status_code == 200, r.text
    assert alice.http.get(f"/tasks/{task}/checkpoint").json()["state"] == {"x": deep(31)}


def test_the_connection_stays_usable_after_error_responses(tmp_path: Path) -> None:
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as h:
        a = Api(h.url)
        alice = a.user("alice")
        task = alice.create_task()["name"]
        body = b"[" * 200_000 + b"]" * 200_000  # deep enough to exhaust the JSON parser's recursion
        answers = [
            alice.http.post(f"/tasks/{task}/messages", content=body, headers={"content-type": "application/json"}),
            alice.http.get("/tasks", params={"offset": 10**20}),
            alice.http.get("/tasks/no-such-task"),
        ]
        assert [r.status_code for r in answers] == [400, 422, 404]
        # A genuine internal error: the operator's database lost a table under the hub.
        with sqlite3.connect(h.data_dir / "hub.db") as db:
            db.execute("DROP TABLE rounds")
        broken = alice.http.get(f"/tasks/{task}/rounds")
        assert broken.status_code == 500 and "internal error" in broken.json()["detail"]
        after = alice.http.get(f"/tasks/{task}")
        assert after.status_code == 200
        streams = [r.extensions["network_stream"] for r in (*answers, broken, after)]
        assert all(s is streams[0] for s in streams), "the hub closed the kept-alive connection after an error"
        a.close()


def test_free_space_reserve_answers_507_while_login_and_reads_work(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    with EmbeddedHub(config=fast_config(tmp_path / "hub", min_free_bytes=free + 2**40)) as h:
        a = Api(h.url)
        alice, bob = a.user("alice"), a.user("bob")
        task = alice.create_task()["name"]
        bob.join(task)
        data = b"model bytes"
        for r in (
            bob.http.post(f"/tasks/{task}/uploads", json={"sha256": sha(data), "size": len(data)}),
            bob.http.put(f"/tasks/{task}/blobs/{sha(data)}", content=data),
            bob.send(task, f"participant/{bob.name}", "aggregator"),
        ):
            assert r.status_code == 507, r.text
            assert r.json()["detail"].startswith("the hub's disk is full")
        assert a.login(bob.name).status_code == 200
        assert bob.http.get(f"/tasks/{task}").status_code == 200
        assert alice.http.get(f"/tasks/{task}/mailbox/aggregator").json()["messages"] == []
        assert bob.http.get(f"/tasks/{task}/blobs/{sha(data)}").status_code == 404
        a.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a real full disk. Mounting needs root (the project's machines run as root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk_answers_507_and_keeps_login(tmp_path: Path, tiny_disk: Path) -> None:
    # Blobs on the tiny disk, the database beside it: the blob disk fills, logins still work.
    config = fast_config(tiny_disk / "hub", database_url=f"sqlite:///{tmp_path / 'hub.db'}", min_free_bytes=0)
    with EmbeddedHub(config=config) as h:
        a = Api(h.url)
        alice, bob = a.user("alice"), a.user("bob")
        task = alice.create_task()["name"]
        bob.join(task)
        data = bytes(3 * 1024 * 1024)
        start = bob.http.post(f"/tasks/{task}/uploads", json={"sha256": sha(data), "size": len(data)}).json()
        r = bob.http.put(f"/tasks/{task}/uploads/{start['upload_id']}", params={"offset": 0}, content=data)
        assert r.status_code == 507, r.text
        assert r.json()["detail"].startswith("the hub's disk is full")
        # Nothing of the chunk was kept: the upload resumes from where it was.
        assert bob.http.get(f"/tasks/{task}/uploads/{start['upload_id']}").json()["offset"] == 0
        r = bob.http.put(f"/tasks/{task}/blobs/{sha(data)}", content=data)
        assert r.status_code == 507, r.text
        assert a.login(alice.name).status_code == 200
        assert alice.http.get(f"/tasks/{task}").status_code == 200
        a.close()


def test_openapi_declares_error_bodies(api: Api) -> None:  # noqa: F811
    spec = httpx.get(f"{api.url}/api/v1/openapi.json").json()
    op = spec["paths"]["/api/v1/tasks/{task}/messages"]["post"]
    for code in ("401", "403", "404", "409", "413", "422", "429", "507"):
        schema = op["responses"][code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorOut"}, code
    assert set(op["responses"]["429"]["headers"]) == {"Retry-After", "X-Fedpact-Limit"}
    login = spec["paths"]["/api/v1/auth/login"]["post"]["responses"]
    assert {"401", "422", "429", "503"} <= set(login)
    assert "Retry-After" in login["503"]["headers"]
