"""Run an aggregator and participants as threads against a real hub, for runtime tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fedpact.client.hub import HubClient
from fedpact.runtime import Events, Participant, run_aggregator, run_participant


def digits_definition(**overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "model": {"name": "softmax_regression"},
        "rounds": 3,
        "local_epochs": 2,
        "batch_size": 32,
        "learning_rate": 0.1,
        "quorum": 3,
        "min_participants": 2,
        "round_timeout_s": 20,
        "data": {"kind": "tabular", "features": 64, "label": "label", "classes": list(range(10)), "standardize": True},
        "evaluation": {"holdout": 0.2},
        # These federations are about training, not about who may join: joining admits.
        # tests/integration/test_runtime_admission.py runs one under approval.
        "admission": "open",
    }
    d.update(overrides)
    return d


class Runner:
    """Start callables in threads and keep their result or exception."""

    def __init__(self) -> None:
        self.threads: dict[str, threading.Thread] = {}
        self.results: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}

    def start(self, name: str, fn: Callable[[], Any]) -> None:
        def target() -> None:
            try:
                self.results[name] = fn()
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                self.errors[name] = exc

        t = threading.Thread(target=target, name=name, daemon=True)
        self.threads[name] = t
        t.start()

    def join(self, timeout: float = 120.0) -> None:
        for name, t in self.threads.items():
            t.join(timeout)
            assert not t.is_alive(), f"{name} did not finish within {timeout} s"


def start_participant(runner: Runner, client: HubClient, task: str, participant: Participant, name: str,
                      events: Events | None = None, **kw: Any) -> Events:
    events = events or Events()
    runner.start(name, lambda: run_participant(client, task, participant, progress=events, poll_wait=1.0, **kw))
    return events


def start_aggregator(runner: Runner, client: HubClient, task: str, events: Events | None = None, **kw: Any) -> Events:
    events = events or Events()
    runner.start("aggregator", lambda: run_aggregator(client, task, progress=events, poll_wait=0.5, **kw))
    return events
