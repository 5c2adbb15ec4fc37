"""Alembic migrations: a fresh database reaches the schema of ``tables``, and a hub made by
the code before migrations (tests/fixtures/main-hub, built by make_main_hub.py from main at
0296fa2) opens with every user, task, round, checkpoint and model intact, on SQLite and on
PostgreSQL."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.client.hub import HubClient
from fedpact.hub import EmbeddedHub
from fedpact.hub.db import SchemaError, make_engine
from fedpact.hub.tables import Base
from hub_fixtures import fast_config
from services import postgres_database

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "main-hub"
PASSWORD = "fixture-password-1"


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", "fedpact.hub:migrations")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _schema_drift(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            assert version == _head()
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def test_a_fresh_sqlite_database_is_migrated_to_exactly_the_tables_of_the_code(tmp_path: Path) -> None:
    # When this fails after a change to tables.py, the change needs a migration in hub/migrations/versions.
    assert _schema_drift(f"sqlite:///{tmp_path / 'hub.db'}") == []


def test_a_fresh_postgresql_database_is_migrated_to_exactly_the_tables_of_the_code() -> None:
    with postgres_database() as url:
        assert _schema_drift(url) == []


def _check_everything_is_there(url: str, downloads: Path) -> None:
    alice, bob, carol = (HubClient(url) for _ in range(3))
    try:
        for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            client.login(name, PASSWORD)
        assert client.me()["organisation"] == "Clinic"
        tasks = {t["name"]: t for t in alice.list_tasks()}
        assert {n: t["status"] for n, t in tasks.items()} == {"digits-fixture": "COMPLETE", "digits-waiting": "CREATED"}
        assert tasks["digits-waiting"]["description"] == "a task nobody ran"
        rounds = alice.list_rounds("digits-fixture")
        assert [(r["number"], r["status"], sorted(r["participants"])) for r in rounds] == [
            (1, "complete", ["bob", "carol"]),
            (2, "complete", ["bob", "carol"]),
        ]
        assert rounds[1]["metrics"]["val_accuracy"] > 0.5
        assert alice.get_checkpoint("digits-fixture") is not None
        (model,) = bob.list_models("digits-fixture")
        assert model["rounds"] == 2
        data = bob.download_model(model["id"], downloads).read_bytes()
        assert hashlib.sha256(data).hexdigest() == model["sha256"] and len(data) == model["size"]
        # The upgraded hub keeps working: a new user, a new task.
        dave = HubClient(url)
        dave.register("dave", PASSWORD, "Lab")
        dave.login("dave", PASSWORD)
        dave.create_task("after-upgrade", tasks["digits-waiting"]["definition"])
        assert len(alice.list_tasks()) == 3
        dave.close()
    finally:
        for c in (alice, bob, carol):
            c.close()


def test_a_sqlite_hub_made_by_main_opens_with_everything_intact(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    shutil.copytree(FIXTURE, data_dir, ignore=shutil.ignore_patterns("postgres*"))
    with EmbeddedHub(config=fast_config(data_dir)) as hub:
        _check_everything_is_there(hub.url, tmp_path)
    assert _schema_drift(f"sqlite:///{data_dir / 'hub.db'}") == []


def test_a_postgresql_hub_made_by_main_opens_with_everything_intact(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    shutil.copytree(FIXTURE / "postgres-blobs", data_dir / "blobs")
    with postgres_database() as url:
        plain = url.replace("+psycopg", "")
        subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(FIXTURE / "postgres.sql"), plain],
            check=True, capture_output=True,
        )
        engine = create_engine(url)
        with engine.connect() as conn:
            assert "alembic_version" not in {r[0] for r in conn.execute(text("SELECT tablename FROM pg_tables"))}
        engine.dispose()
        # Two replicas start on the old database: one migrates, the other finds it at head.
        with EmbeddedHub(config=fast_config(data_dir, database_url=url)), EmbeddedHub(
            config=fast_config(data_dir, database_url=url)
        ) as second:
            _check_everything_is_there(second.url, tmp_path)
        assert _schema_drift(url) == []


def test_a_database_from_a_newer_fedpact_is_refused_and_left_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    make_engine(url).dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'from-the-future'"))
    engine.dispose()
    with pytest.raises(SchemaError, match="revision 'from-the-future'.*newer fedpact"):
        make_engine(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "from-the-future"
    engine.dispose()
