"""The per-round progress bar of a simulation (rich), silent when switched off."""

from __future__ import annotations

from typing import Any


class RoundBar:
    """One bar per round: participants trained so far, then the round's headline metrics."""

    def __init__(self, rounds: int, enabled: bool = True) -> None:
        self.rounds = rounds
        self._task: Any = None
        self._bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), transient=False, console=Console(stderr=True))
            self._bar.start()

    def start(self, r: int, total: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task(f"round {r}/{self.rounds}", total=total or None)

    def advance(self, n: int) -> None:
        if self._bar is not None and self._task is not None:
            task = self._bar.tasks[self._task]
            self._bar.update(self._task, advance=n, total=max(task.total or 0, task.completed + n))

    def finished(self, r: int, rec: dict[str, Any]) -> None:
        if self._bar is None or self._task is None:
            return
        shown = [f"{k.removeprefix('eval_')}={rec[k]:.4g}" for k in ("eval_accuracy", "eval_loss", "train_loss")
                 if isinstance(rec.get(k), float)]
        if rec.get("epsilon") is not None:
            shown.append(f"eps={rec['epsilon']:.3g}")
        self._bar.update(self._task, description=f"round {r}/{self.rounds} [{rec['participants']} in] {' '.join(shown)}")

    def failed(self, r: int, reason: str) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=f"round {r}/{self.rounds} FAILED: {reason[:80]}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
