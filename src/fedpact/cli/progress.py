"""Rich rendering of runtime progress: a bar for rounds, one for local training."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBars

from fedpact.runtime.progress import Progress


class RichProgress(Progress):
    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.console = console or Console(stderr=True)
        self.bars = RichBars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._rounds: TaskID | None = None
        self._train: TaskID | None = None
        self._started = False

    def _start(self) -> None:
        if not self._started and self.console.is_terminal:
            self.bars.start()
        self._started = True

    def info(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def warning(self, text: str) -> None:
        self.console.print(f"[yellow]warning:[/] {text}", highlight=False)

    def waiting(self, what: str, have: int, need: int) -> None:
        self.info(f"waiting for {what}: {have}/{need}")

    def round_started(self, round: int, rounds: int, selected: list[str]) -> None:
        self._start()
        if self._rounds is None and rounds:
            self._rounds = self.bars.add_task("rounds", total=rounds, completed=round - 1)
        self.info(f"[bold]round {round}/{rounds or '?'}[/] with {', '.join(selected)}")

    def round_finished(self, round: int, rounds: int, metrics: dict[str, Any]) -> None:
        self._start()
        if self._rounds is None:
            self._rounds = self.bars.add_task("rounds", total=rounds)
        self.bars.update(self._rounds, completed=round)
        shown = "  ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in metrics.items()
            if k.endswith(("accuracy", "loss")) or k in ("participants", "seconds")
        )
        self.info(f"round {round}/{rounds} done  {shown}")

    def training_started(self, round: int, epochs: int, batches_per_epoch: int) -> None:
        self._start()
        total = epochs * batches_per_epoch
        if self._train is None:
            self._train = self.bars.add_task("local training", total=total)
        else:
            self.bars.reset(self._train, total=total)
        self._epoch_batches = batches_per_epoch
        self._epochs_done = 0

    def batch(self, round: int, epoch: int, done: int, total: int) -> None:
        if self._train is not None:
            self.bars.update(self._train, completed=self._epochs_done * self._epoch_batches + done)

    def epoch(self, round: int, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        self._epochs_done = epoch + 1
        if self._train is not None:
            self.bars.update(self._train, completed=self._epochs_done * self._epoch_batches)
        self.info(
            f"  round {round} epoch {epoch + 1}/{epochs}: loss={metrics.get('loss', float('nan')):.4f} "
            f"accuracy={metrics.get('accuracy', float('nan')):.4f}"
        )

    def close(self) -> None:
        if self._started and self.console.is_terminal:
            self.bars.stop()
