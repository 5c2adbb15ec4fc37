"""How the hub's PostgreSQL sessions end (hub.db), on a real server.

A session that only read ends with COMMIT, so psycopg keeps the statements it prepared on
that connection (a ROLLBACK makes it forget them all, and the next requests parse and plan
again). A session that wrote and did not commit is still rolled back: nothing it did stays.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, insert, select, text

from fedpact.hub.db import Database
from fedpact.hub.tables import User
from services import postgres_database

# More executions of one statement than psycopg's prepare threshold (5).
_REPEATS = 8


@pytest.fixture
def db() -> Iterator[Database]:
    with postgres_database() as url:
        database = Database(url, pool_size=1)
        try:
            yield database
        finally:
            database.dispose()


def _prepared(db: Database) -> int:
    """The statements prepared on the pool's one connection, as the server sees them."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return int(conn.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar_one())


def _users(db: Database) -> list[str]:
    with db.reading() as s:
        return list(s.scalars(select(User.name).order_by(User.name)))


def test_sessions_that_only_read_keep_the_prepared_statements(db: Database) -> None:
    for _ in range(_REPEATS):
        with db.session() as s:  # left open, as a route that reads after its commit leaves it
            s.execute(select(func.count()).select_from(User).where(User.name == "nobody")).scalar_one()
    assert _prepared(db) >= 1
    with db.session() as s:
        s.execute(select(User.id).where(User.name == "nobody")).first()
    assert _prepared(db) >= 1


def test_a_session_that_wrote_without_committing_is_rolled_back(db: Database) -> None:
    with db.session() as s:
        s.add(User(name="kept", organisation="Org", password_hash="x"))
        s.commit()
    with db.session() as s:  # a Core write, flushed, never committed
        s.execute(insert(User).values(name="core", organisation="Org", password_hash="x"))
        s.execute(select(User.id)).all()
    with db.session() as s:  # an ORM object never flushed
        s.add(User(name="pending", organisation="Org", password_hash="x"))
    with db.session() as s:  # a read after a write in the same transaction
        s.add(User(name="flushed", organisation="Org", password_hash="x"))
        s.flush()
        s.execute(select(User.id)).all()
    assert _users(db) == ["kept"]


def test_a_session_that_fails_is_rolled_back(db: Database) -> None:
    with pytest.raises(RuntimeError, match="refused"), db.session() as s:
        s.add(User(name="refused", organisation="Org", password_hash="x"))
        s.flush()
        raise RuntimeError("refused")
    assert _users(db) == []
