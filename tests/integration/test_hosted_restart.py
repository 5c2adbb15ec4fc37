"""A hosted aggregator that dies is restarted with --resume, a bounded number of times; then
its task is marked FAILED with the reason. The aggregator is a real OS process, killed with
SIGKILL as the out-of-memory killer would."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.client.hub import HubClient
from fedpact.hub import EmbeddedHub
from hub_fixtures import PASSWORD, definition, fast_config
from support import wait_for


def test_a_dying_hosted_aggregator_is_restarted_then_its_task_fails_with_the_reason(tmp_path: Path) -> None:
    config = fast_config(tmp_path / "hub", hosted_max_restarts=1, hosted_restart_backoff_s=0.2)
    with EmbeddedHub(config=config) as hub, HubClient(hub.url) as alice:
        alice.register("alice", PASSWORD, "Org")
        alice.login("alice", PASSWORD)
        # Nobody joins: the aggregator waits for its quorum until it is killed.
        alice.create_task("restarts", definition())
        first = alice.start_hosted_aggregator("restarts")
        assert first["running"] and first["restarts"] == 0
        os.kill(first["pid"], signal.SIGKILL)

        def restarted() -> dict[str, object] | None:
            st = alice.hosted_aggregator_status("restarts")
            return st if st["running"] and st["pid"] != first["pid"] else None

        second = wait_for(restarted, 60, "the hub to restart the killed aggregator")
        assert second["restarts"] == 1
        log = alice.hosted_aggregator_log("restarts")["text"]
        assert "restarting it with --resume" in log
        assert alice.get_task("restarts")["status"] == "CREATED"

        os.kill(int(second["pid"]), signal.SIGKILL)
        task = wait_for(
            lambda: (t := alice.get_task("restarts"))["status"] == "FAILED" and t, 60, "the task to be marked FAILED"
        )
        assert "died 2 times" in task["events"][-1]["reason"]
        st = alice.hosted_aggregator_status("restarts")
        assert not st["running"] and st["restarts"] == 1


def test_a_hub_upgraded_from_worker_files_imports_them_and_restarts_the_wanted_worker(tmp_path: Path) -> None:
    """Hubs before the database kept hosted aggregators wrote ``worker.json`` and ``aggregator.log``."""
    import hashlib
    import json
    import shutil

    from fedpact.data.builtin import digits_federation
    from fedpact.data.loaders import save_csv

    config = fast_config(tmp_path / "hub")
    _, test = digits_federation(2, test_fraction=0.25, seed=5)
    eval_csv = save_csv(tmp_path / "eval.csv", test)
    sha = hashlib.sha256(eval_csv.read_bytes()).hexdigest()
    with EmbeddedHub(config=config) as hub, HubClient(hub.url) as alice:
        alice.register("alice", PASSWORD, "Org")
        alice.login("alice", PASSWORD)
        task = alice.create_task("upgraded", definition())
        assert alice.upload_blob("upgraded", eval_csv, private=True)["sha256"] == sha
        token = alice.token
    # What a graceful stop of the old hub left: a wanted worker, restarted once before.
    folder = tmp_path / "hub" / "workers" / str(task["id"])
    folder.mkdir(parents=True)
    shutil.copy(eval_csv, folder / "eval.csv")
    old_log = ("[hub 2026-11-20 10:00:00] starting: aggregator of task 'upgraded' for alice, asked by alice\n"
               "waiting for participants: 0/2\n"
               "[hub 2026-11-20 10:05:00] stopped: the hub is shutting down; it resumes when the hub starts again\n")
    (folder / "aggregator.log").write_text(old_log)
    (folder / "worker.json").write_text(json.dumps({
        "task_id": task["id"], "task_name": "upgraded", "state": "stopped", "pid": 999_999_999,
        "started_at": "2026-11-20T10:00:00+00:00", "finished_at": "2026-11-20T10:05:00+00:00", "exit_code": -15,
        "resume": False, "restarts": 1, "started_by": "alice", "reason": "the hub is shutting down", "wanted": True,
        "token_hash": None, "eval_file": str(folder / "eval.csv"), "label": "label", "mlflow_uri": None,
    }))
    with EmbeddedHub(config=config) as hub, HubClient(hub.url, token) as alice:
        st = wait_for(lambda: (s := alice.hosted_aggregator_status("upgraded"))["running"] and s, 60,
                      "the upgraded hub to restart the wanted worker")
        assert st["restarts"] == 2 and st["started_by"] == "the hub (restart)"
        assert not (folder / "worker.json").exists() and (folder / "worker.json.imported").is_file()
        log = wait_for(lambda: (t := alice.hosted_aggregator_log("upgraded", offset=0)["text"]).count("starting:") == 2 and t,
                       30, "the new start in the log")
        assert log.startswith(old_log), "the old log is kept, at offset 0"
        # The evaluation data is now named by its blob and copied from the store for the new process.
        argv = Path(f"/proc/{st['pid']}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--eval-data") + 1].endswith(f"eval-{sha[:16]}.csv".encode())
        assert argv[argv.index(b"--label") + 1] == b"label"
        stopped = alice.stop_hosted_aggregator("upgraded")
        assert stopped["state"] == "stopped" and not stopped["running"]
