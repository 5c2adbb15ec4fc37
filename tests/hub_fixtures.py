"""Shared helpers for the hub tests: a real hub on a local port, and users that talk to it over HTTP.

Test modules import what they need from here (``from hub_fixtures import ...``); fixtures
imported into a module are picked up by pytest like ones defined there.
"""

from __future__ import annotations

import hashlib
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedpact.hub import EmbeddedHub, HubConfig
from fedpact.hub.db import Database

#: Cheap password hashing: the tests register and log in many users.
FAST_HASH: dict[str, Any] = {"password_time_cost": 1, "password_memory_kib": 8192, "password_parallelism": 1}
PASSWORD = "correct horse battery"
#: One TLS context for every client: building one per httpx.Client costs tens of milliseconds.
_TLS = ssl.create_default_context()


#: Module-scoped hubs register dozens of users from 127.0.0.1; the throttle tests set their own.
TEST_LIMITS: dict[str, Any] = {"registrations_per_address": 0}


def fast_config(data_dir: Path, **overrides: Any) -> HubConfig:
    return HubConfig(data_dir=data_dir, **{**FAST_HASH, **TEST_LIMITS, **overrides})


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def definition(**overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "model": {"name": "mlp", "params": {"hidden": [16]}},
        "rounds": 3,
        "quorum": 2,
        "data": {"kind": "tabular", "features": 4, "classes": [0, 1]},
    }
    d.update(overrides)
    return d


@dataclass
class User:
    name: str
    token: str
    http: httpx.Client
    #: Task name or id -> the User who created it, shared by every user of one Api, so
    #: ``join`` can have the creator approve the request the way a real creator would.
    creators: dict[str, User] = field(default_factory=dict, repr=False)

    def create_task(self, name: str | None = None, **body: Any) -> dict[str, Any]:
        payload = {
            "name": name or unique("task"),
            "description": body.pop("description", "a test task"),
            "definition": body.pop("definition", definition()),
        }
        r = self.http.post("/tasks", json=payload)
        assert r.status_code == 201, r.text
        task = r.json()
        self.creators[task["name"]] = self.creators[str(task["id"])] = self
        return task

    def request(self, task: str) -> httpx.Response:
        """Ask to join, nothing more: under ``admission: approval`` the answer is 202 PENDING."""
        return self.http.post(f"/tasks/{task}/join")

    def join(self, task: str) -> dict[str, Any]:
        """Join and, if the task asks for approval, have its creator approve: the user ends ADMITTED."""
        r = self.request(task)
        assert r.status_code in (200, 202), r.text
        if r.json()["status"] == "PENDING":
            creator = self.creators[task]
            a = creator.http.post(f"/tasks/{task}/requests/{self.name}/approve")
            assert a.status_code == 200 and a.json()["status"] == "ADMITTED", a.text
            r = self.request(task)
        assert r.status_code == 200 and r.json()["status"] == "ADMITTED", r.text
        return r.json()

    def upload(self, task: str, data: bytes) -> dict[str, Any]:
        """Upload ``data`` into ``task`` in one chunk and return its blob reference."""
        digest = sha(data)
        r = self.http.post(f"/tasks/{task}/uploads", json={"sha256": digest, "size": len(data)})
        assert r.status_code in (200, 201), r.text
        if r.json()["complete"]:
            return {"sha256": digest, "size": len(data)}
        uid = r.json()["upload_id"]
        r = self.http.put(
            f"/tasks/{task}/uploads/{uid}",
            params={"offset": r.json()["offset"]},
            content=data,
            headers={"content-type": "application/octet-stream"},
        )
        assert r.status_code == 200, r.text
        r = self.http.post(f"/tasks/{task}/uploads/{uid}/complete")
        assert r.status_code == 201, r.text
        return r.json()

    def send(self, task: str, sender: str, recipient: str, kind: str = "note", **body: Any) -> httpx.Response:
        return self.http.post(
            f"/tasks/{task}/messages", json={"sender": sender, "recipient": recipient, "kind": kind, **body}
        )


@dataclass
class Api:
    """Makes users on one hub; closes their HTTP clients at the end."""

    url: str
    clients: list[httpx.Client] = field(default_factory=list)
    _anonymous: httpx.Client | None = None
    creators: dict[str, User] = field(default_factory=dict)

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=timeout, verify=_TLS)
        self.clients.append(c)
        return c

    def anonymous(self) -> httpx.Client:
        if self._anonymous is None:
            self._anonymous = self.client()
        return self._anonymous

    def register(self, name: str, password: str = PASSWORD, organisation: str = "ACME") -> httpx.Response:
        return self.anonymous().post("/users", json={"name": name, "password": password, "organisation": organisation})

    def login(self, name: str, password: str = PASSWORD) -> httpx.Response:
        return self.anonymous().post("/auth/login", json={"name": name, "password": password})

    def user(self, prefix: str = "user", organisation: str = "ACME") -> User:
        name = unique(prefix)
        r = self.register(name, organisation=organisation)
        assert r.status_code == 201, r.text
        r = self.login(name)
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        return User(name=name, token=token, http=self.client(token), creators=self.creators)

    def close(self) -> None:
        for c in self.clients:
            c.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedHub]:
    with EmbeddedHub(config=fast_config(tmp_path_factory.mktemp("hub"))) as h:
        yield h


def task_in_database(db: Database, name: str = "t") -> tuple[int, int]:
    """A CREATED task and its creator, written straight into a hub's database: (task id, user id)."""
    from fedpact.hub.tables import Task
    from fedpact.hub.tables import User as UserRow

    with db.session() as s:
        user = UserRow(name="alice", organisation="Org", password_hash="-")
        s.add(user)
        s.flush()
        task = Task(name=name, definition={}, status="CREATED", creator_id=user.id)
        s.add(task)
        s.commit()
        return task.id, user.id


#: The databases a module's ``hub`` runs on when it overrides the fixture with
#: :func:`hub_on`: the relay's writes take a different path on each.
DATABASES = ["sqlite", "postgresql"]


def hub_on(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedHub]:
    """An embedded hub on SQLite, or on a new PostgreSQL database dropped afterwards."""
    from services import postgres_database

    data_dir = tmp_path_factory.mktemp("hub")
    if database == "sqlite":
        with EmbeddedHub(config=fast_config(data_dir)) as h:
            yield h
        return
    with postgres_database() as url, EmbeddedHub(config=fast_config(data_dir, database_url=url)) as h:
        yield h


@pytest.fixture
def api(hub: EmbeddedHub) -> Iterator[Api]:
    a = Api(hub.url)
    yield a
    a.close()


@pytest.fixture
def task_with_members(api: Api) -> tuple[User, User, User, dict[str, Any]]:
    """A creator and two participants who joined the creator's task."""
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    task = alice.create_task()
    bob.join(task["name"])
    carol.join(task["name"])
    return alice, bob, carol, task
