"""Where a simulation's data comes from, and each virtual participant's share of it.

Two shapes. A *pool*: one dataset (``builtin:digits`` or a data file) dealt out by a
partition spec, with a held-out test set the simulated aggregator evaluates on. Or *files*:
one data file per participant (a directory or a glob), read by the worker that trains it.
Either way a participant is an index, so workers can be handed "participant 417" and
nothing else.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedpact.common.errors import FedpactError
from fedpact.data.dataset import Dataset
from fedpact.simulation.partition import PartitionError, PartitionSpec, partition

#: Share of a pool dataset held out for the simulated aggregator's evaluation.
TEST_FRACTION = 0.25


@dataclass
class SimulationData:
    """The data of every virtual participant, as indices into a pool or as one file each."""

    pool: Dataset | None = None
    parts: list[np.ndarray] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    label: str = "label"
    test: Dataset | None = None
    source: str = ""

    @property
    def participants(self) -> int:
        return len(self.files) if self.files else len(self.parts)

    def sizes(self) -> np.ndarray:
        """Samples per participant (files are counted when read, so their size is unknown here: 0)."""
        if self.files:
            return np.zeros(len(self.files), dtype=np.int64)
        return np.array([len(p) for p in self.parts], dtype=np.int64)

    def dataset(self, i: int) -> Dataset:
        """Participant ``i``'s local data, cut out (or read) when it trains."""
        if self.files:
            from fedpact.data.loaders import load_data

            return load_data(self.files[i], label=self.label)
        assert self.pool is not None
        return self.pool.subset(self.parts[i])


def _pool(source: str, label: str, seed: int) -> tuple[Dataset, Dataset]:
    if source == "builtin:digits":
        from fedpact.data.builtin import load_digits_dataset

        full = load_digits_dataset()
    elif source.startswith("builtin:"):
        raise FedpactError(f"unknown built-in data {source!r}: the built-in data set is builtin:digits")
    else:
        from fedpact.data.loaders import load_data

        full = load_data(source, label=label)
    return full.split(TEST_FRACTION, seed)


def _files(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    elif any(ch in source for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(source) if Path(p).is_file())
    else:
        return []
    if not found:
        raise FedpactError(f"{source}: no data files found (one file per participant is expected)")
    return found


def load_simulation_data(source: str, partition_spec: str, participants: int | None, seed: int,
                         label: str = "label") -> SimulationData:
    """Resolve ``--data`` and ``--partition`` into each participant's data."""
    files = _files(source)
    if files:
        if participants is not None and participants != len(files):
            raise FedpactError(f"{source} holds {len(files)} files, one per participant, but {participants} "
                               "participants were asked for: leave the count out or make them agree")
        return SimulationData(files=files, label=label, source=source)
    if not source.startswith("builtin:") and not Path(source).is_file():
        raise FedpactError(f"data {source!r} is neither builtin:digits, a data file, a directory nor a glob of files")
    spec = PartitionSpec.parse(partition_spec)
    train, test = _pool(source, label, seed)
    column = None
    if spec.kind == "column":
        names = train.feature_names or []
        if spec.column not in names:
            raise PartitionError(f"partition column:{spec.column}: the data has no column {spec.column!r} "
                                 f"(columns: {', '.join(names) or 'unnamed'})")
        column = train.x[:, names.index(spec.column)]
        if participants is None:
            participants = len(np.unique(column))
    if participants is None:
        raise FedpactError("say how many participants to simulate (--participants N)")
    parts = partition(spec, train.y, participants, seed, column)
    return SimulationData(pool=train, parts=parts, label=label, test=test, source=source)
