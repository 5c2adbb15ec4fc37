"""The hosted aggregator's log in the database: stable offsets, the newest bytes kept, writes fenced.

A real database (SQLite file) and real log files; the owner's shipping and any replica's
reads are the code the hub runs (``hub.workers``, ``hub.hosted_log``), with a small retention so the test
writes kilobytes instead of megabytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.hub import hosted_log
from fedpact.hub.db import Database
from fedpact.hub.tables import HostedWorker
from fedpact.hub.workers import WorkerManager
from hub_fixtures import fast_config, task_in_database


def test_the_log_keeps_its_newest_bytes_at_stable_offsets_and_only_its_owner_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hosted_log, "LOG_KEEP_BYTES", 4096)
    monkeypatch.setattr(hosted_log, "LOG_CHUNK_BYTES", 512)
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        task_id, _ = task_in_database(db, "logged")
        owner = WorkerManager(fast_config(tmp_path / "replica-a"), db)
        reader = WorkerManager(fast_config(tmp_path / "replica-b"), db)
        assert reader.read_log(task_id, None, 100) == {"offset": 0, "next_offset": 0, "size": 0, "text": ""}
        owner._write_row(task_id, {"state": "running", "owner": owner.owner})
        w = owner.worker(task_id)
        w.own_log()
        written = b""
        for i in range(60):
            line = f"line {i:03d} {'x' * (i * 7 % 150)}\n".encode()
            w.dir.mkdir(parents=True, exist_ok=True)
            with open(w.log_path, "ab") as fh:
                fh.write(line)
            written += line
            if i % 3 == 2:
                assert owner._ship(w) is None
        assert owner._ship(w) is None

        whole = reader.read_log(task_id, 0, 1024 * 1024)
        assert whole["size"] == len(written) > 4096
        # Older offsets start at the oldest byte kept: at most a chunk more than the retention.
        assert 0 < whole["offset"] and len(written) - 4096 - 512 <= whole["offset"] <= len(written) - 4096
        assert whole["text"] == written[whole["offset"]:].decode() and whole["next_offset"] == len(written)
        assert reader.read_log(task_id, 0, 1024 * 1024) == owner.read_log(task_id, 0, 1024 * 1024)
        middle = reader.read_log(task_id, len(written) - 1000, 300)
        assert middle["offset"] == len(written) - 1000
        assert middle["text"] == written[len(written) - 1000:len(written) - 700].decode()
        tail = reader.read_log(task_id, None, 200)
        assert tail["text"].endswith("line 059 " + "x" * (59 * 7 % 150) + "\n")
        assert written.decode().endswith(tail["text"]) and tail["text"].startswith("line ")
        assert reader.read_log(task_id, 10**12, 100) == {"offset": len(written), "next_offset": len(written),
                                                         "size": len(written), "text": ""}

        # A replica that does not own the record cannot append to it, and changes nothing.
        intruder = reader.worker(task_id)
        intruder.dir.mkdir(parents=True, exist_ok=True)
        intruder.log_path.write_bytes(b"not mine\n")
        intruder.own_log(0)
        assert reader._ship(intruder) == "lost"
        assert reader.read_log(task_id, 0, 1024 * 1024) == whole
        # A stop request recorded by any replica is what the owner's next shipment reports.
        with db.session() as s:
            row = s.get(HostedWorker, task_id)
            assert row is not None
            row.stop_requested = "stopped by alice"
            s.commit()
        assert owner._ship(w) == "stopped by alice"
    finally:
        db.dispose()
