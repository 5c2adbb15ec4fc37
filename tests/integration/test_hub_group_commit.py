"""SQLite's group commit (hub.db.GroupCommit) on a real database file.

Writes that wait while one is being committed go out together in one commit; a write
that fails is undone alone and its caller gets its error; the others are stored.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import HTTPException
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from fedpact.hub.db import Database
from fedpact.hub.tables import User
from support import run_coroutine


def _add_user(name: str, fail: bool = False) -> Callable[[Session], str]:
    def job(s: Session) -> str:
        s.add(User(name=name, organisation="Org", password_hash="x"))
        s.flush()
        if fail:
            raise HTTPException(409, f"{name} refused")
        return name

    return job


def test_waiting_writes_share_one_commit_and_a_failing_one_is_undone_alone(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    commits = 0

    @event.listens_for(db.engine, "commit")
    def _count(_conn: object) -> None:
        nonlocal commits
        commits += 1

    entered, release = threading.Event(), threading.Event()

    def blocker(s: Session) -> str:
        s.add(User(name="first", organisation="Org", password_hash="x"))
        entered.set()
        release.wait(30)
        return "first"

    async def scenario() -> list[object]:
        first = asyncio.ensure_future(db.write(blocker))
        await asyncio.to_thread(entered.wait, 30)
        # These ten arrive while the writer is busy with the first: they form one batch.
        rest = [asyncio.ensure_future(db.write(_add_user(f"user{i}", fail=i == 4))) for i in range(10)]
        await asyncio.sleep(0.2)
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    try:
        results = run_coroutine(scenario())
        assert results[0] == "first"
        refused = results[5]
        assert isinstance(refused, HTTPException) and refused.detail == "user4 refused"
        assert [r for i, r in enumerate(results[1:]) if i != 4] == [f"user{i}" for i in range(10) if i != 4]
        assert commits == 2  # the first write alone, then the ten together
        with db.reading() as s:
            names = set(s.scalars(select(User.name)))
            assert names == {"first"} | {f"user{i}" for i in range(10) if i != 4}
            assert s.scalar(select(func.count()).select_from(User)) == 10
    finally:
        db.dispose()


def test_a_closed_database_refuses_writes(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    assert run_coroutine(db.write(_add_user("kept"))) == "kept"
    db.dispose()
    with pytest.raises(RuntimeError, match="closed"):
        run_coroutine(db.write(_add_user("late")))
