"""Small hub parts on their own: blob store, status machine, schemas, config, body limit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from fedpact.hub.blobstore_local import LocalBlobStore
from fedpact.hub.config import HubConfig
from fedpact.hub.lifecycle import ALLOWED
from fedpact.hub.schemas import MessageIn, RoundIn, TaskCreate, UserCreate


def test_blobstore_commit_is_content_addressed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", tmp_path / "uploads")
    data = b"hello blob"
    digest = hashlib.sha256(data).hexdigest()
    uid = "u" * 32
    store.start(uid)
    with open(store.partial_path(uid), "ab") as f:
        f.write(data)
    assert store.received(uid) == len(data)
    assert store.hash_partial(uid) == digest
    store.commit(uid, digest)
    assert store.blob_path(digest) == tmp_path / "blobs" / digest[:2] / digest
    assert store.blob_path(digest).read_bytes() == data
    assert not store.partial_path(uid).exists() and store.received(uid) == 0
    store.start("v" * 32)
    store.commit("v" * 32, digest)
    assert store.blob_path(digest).read_bytes() == data, "existing content is kept"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "abc", "g" * 64])
def test_blobstore_refuses_paths_that_are_not_hashes(tmp_path: Path, bad: str) -> None:
    store = LocalBlobStore(tmp_path / "b", tmp_path / "u")
    with pytest.raises(ValueError):
        store.blob_path(bad)
    with pytest.raises(ValueError):
        store.partial_path("../" + bad)


def test_status_machine_table() -> None:
    assert ALLOWED["CREATED"] == {"RUNNING", "CANCELLED"}
    assert ALLOWED["RUNNING"] == {"RUNNING", "COMPLETE", "FAILED", "CANCELLED"}
    assert all(not ALLOWED[s] for s in ("COMPLETE", "FAILED", "CANCELLED"))


def test_transition_refusal_names_the_options() -> None:
    from fedpact.hub.lifecycle import transition
    from fedpact.hub.tables import Task

    task = Task(name="t1", status="CREATED")
    with pytest.raises(HTTPException) as e:
        transition(None, task, "COMPLETE", "")  # type: ignore[arg-type]
    assert e.value.status_code == 409 and "CANCELLED, RUNNING" in str(e.value.detail)
    assert task.status == "CREATED"


def test_schemas_reject_with_instructions() -> None:
    with pytest.raises(ValidationError, match="letters, digits"):
        UserCreate(name="no spaces", password="longenough", organisation="o")
    with pytest.raises(ValidationError, match="only digits"):
        TaskCreate.model_validate({"name": "2024", "definition": {}})
    with pytest.raises(ValidationError, match="kind is 1-64"):
        MessageIn(sender="aggregator", recipient="participants", kind="UPPER")
    with pytest.raises(ValidationError, match="finite"):
        RoundIn.model_validate(
            {"status": "running", "started_at": "2024-01-01T00:00:00Z", "metrics": {"x": float("inf")}}
        )


def test_config_defaults(tmp_path: Path) -> None:
    c = HubConfig(data_dir=tmp_path)
    assert c.database_url == f"sqlite:///{tmp_path.resolve() / 'hub.db'}"
    assert c.max_blob_bytes == 2 * 1024**3 and c.max_inline_bytes == 1024**2
    assert c.token_ttl_s == 7 * 24 * 3600 and c.max_wait_s == 60
    assert c.max_json_bytes > c.max_inline_bytes * 4 // 3
    assert HubConfig(data_dir=tmp_path, database_url="postgresql://h/db").database_url == "postgresql://h/db"


def test_schema_compiles_for_postgresql() -> None:
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateTable

    from fedpact.hub.tables import Base

    ddl = "\n".join(str(CreateTable(t).compile(dialect=postgresql.dialect())) for t in Base.metadata.sorted_tables)
    assert "AUTOINCREMENT" not in ddl and "BIGSERIAL" in ddl and "JSON" in ddl


def test_the_hub_imports_no_training_code() -> None:
    import subprocess
    import sys

    code = (
        "import sys, fedpact.hub, fedpact.hub.__main__\n"
        "bad = sorted(m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules)\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
