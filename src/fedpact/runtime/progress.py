"""How the runtime reports what it is doing.

Training can take hours, so both sides report every step through a ``Progress`` object;
the CLI renders it with rich, a notebook gets plain lines, a test can collect events.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("fedpact.runtime")


class Progress:
    """Receives runtime events. The base class writes one line per event to a stream."""

    def __init__(self, stream: Any = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet

    def info(self, text: str) -> None:
        log.info(text)
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def warning(self, text: str) -> None:
        log.warning(text)
        if not self.quiet:
            print(f"warning: {text}", file=self.stream, flush=True)

    def waiting(self, what: str, have: int, need: int) -> None:
        self.info(f"waiting for {what}: {have}/{need}")

    def round_started(self, round: int, rounds: int, selected: list[str]) -> None:
        self.info(f"round {round}/{rounds} started with {', '.join(selected)}")

    def round_finished(self, round: int, rounds: int, metrics: dict[str, Any]) -> None:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items() if isinstance(v, (int, float)))
        self.info(f"round {round}/{rounds} done: {shown}")

    def training_started(self, round: int, epochs: int, batches_per_epoch: int) -> None:
        pass

    def batch(self, round: int, epoch: int, done: int, total: int) -> None:
        pass

    def epoch(self, round: int, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        self.info(
            f"round {round} epoch {epoch + 1}/{epochs}: loss={_fmt(metrics.get('loss'))} "
            f"accuracy={_fmt(metrics.get('accuracy'))}"
        )

    def training_finished(self, round: int) -> None:
        pass

    def close(self) -> None:
        pass


class Events(Progress):
    """Collects events as dictionaries; handy for tests and notebooks."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.events: list[dict[str, Any]] = []

    def info(self, text: str) -> None:
        self.events.append({"event": "info", "text": text})

    def warning(self, text: str) -> None:
        self.events.append({"event": "warning", "text": text})

    def round_finished(self, round: int, rounds: int, metrics: dict[str, Any]) -> None:
        self.events.append({"event": "round_finished", "round": round, "metrics": dict(metrics)})


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
