"""The real backing services of a deployed hub, for tests: a fresh PostgreSQL database each.

PostgreSQL runs on this machine (127.0.0.1:5432, trust authentication for ``postgres``).
Every test gets its own database, created with a unique name and dropped at the end, so
tests never see each other's rows and leave nothing behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

POSTGRES_ADMIN_URL = os.environ.get("FEDPACT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin_connect() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({e}); start it: service postgresql start")


@contextmanager
def postgres_database(prefix: str = "fedpact_test") -> Iterator[str]:
    """A new, empty PostgreSQL database; yields its SQLAlchemy URL and drops it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_connect()
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


RABBITMQ_URL = os.environ.get("FEDPACT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")


def close_broker_connections(name_part: str) -> int:
    """Close, on the RabbitMQ server, the client connections whose name contains ``name_part``.

    Only the named connections go (not the whole shared server), as a network failure would
    cut them; returns how many were closed.
    """
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    closed = 0
    for line in listed.splitlines():
        if name_part in line:
            pid = line.split("\t", 1)[0]
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "closed by a fedpact test"],
                check=True, capture_output=True, timeout=60,
            )
            closed += 1
    return closed


class PrivateRabbitMQ:
    """A RabbitMQ node of the test's own, on free ports, that the test may stop and restart.

    The machine's RabbitMQ is shared by every test file running at the same time; restarting
    it would disturb them. This node runs the same server (Debian's ``rabbitmq-server``)
    under its own node name, ports and data folder, so a restart is a real broker restart
    that only this test sees. Its data lives in a folder the ``rabbitmq`` user can write.
    """

    def __init__(self) -> None:
        self.node = f"fedpact{uuid.uuid4().hex[:10]}@localhost"
        self.port, self.dist_port = _free_tcp_ports(2)
        self.base = Path(tempfile.mkdtemp(prefix="fedpact-rabbitmq-"))
        self.base.chmod(0o777)
        (self.base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        for f in self.base.iterdir():
            f.chmod(0o644)
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["rabbitmqctl", "-n", self.node, *args], env=self._env, capture_output=True,
                              timeout=timeout, cwd=self.base)

    def start(self) -> None:
        subprocess.run(["rabbitmq-server", "-detached"], env=self._env, check=True, capture_output=True, timeout=60,
                       cwd=self.base)
        deadline = time.monotonic() + 90
        while self._ctl("await_startup", timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the private RabbitMQ node {self.node} did not start; see {self.base / 'log'}")
            time.sleep(0.5)

    def stop(self) -> None:
        self._ctl("stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _free_tcp_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextmanager
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    node = PrivateRabbitMQ()
    node.start()
    try:
        yield node
    finally:
        node.close()
