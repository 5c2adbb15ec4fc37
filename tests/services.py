"""The real backing services of a deployed hub, for tests: a fresh PostgreSQL database each.

PostgreSQL runs on this machine (127.0.0.1:5432, trust authentication for ``postgres``).
Every test gets its own database, created with a unique name and dropped at the end, so
tests never see each other's rows and leave nothing behind.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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
