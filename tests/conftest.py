"""Fixtures shared by the whole suite: real hubs on 127.0.0.1, real users, real files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedpact.client.hub import HubClient
from fedpact.hub.server import EmbeddedHub
from support import PASSWORD, REPO_ROOT

# Keep every test away from the developer's real credentials; one home per pytest-xdist
# worker, so parallel workers never write the same credentials file.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
os.environ.setdefault("FEDPACT_HOME", str(REPO_ROOT / "test-artifacts" / f"fedpact-home-{_WORKER}"))


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[EmbeddedHub]:
    with EmbeddedHub(tmp_path / "hub") as h:
        yield h


@pytest.fixture
def make_user(hub: EmbeddedHub) -> Iterator[Callable[..., HubClient]]:
    clients: list[HubClient] = []

    def make(name: str, organisation: str = "Org") -> HubClient:
        c = HubClient(hub.url, retry_for_s=5)
        c.register(name, PASSWORD, organisation)
        c.login(name, PASSWORD)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
