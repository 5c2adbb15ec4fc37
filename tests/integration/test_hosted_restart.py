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
