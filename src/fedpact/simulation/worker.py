"""What a worker does for one virtual participant: the participant runtime's training step.

A worker is handed the participant's index, the global weights and the round's config,
and runs exactly what :func:`fedpact.runtime.participant._train_round` runs for a real
participant: :class:`~fedpact.runtime.participant.DataParticipant` set up on the
participant's data, evaluated on its hold-out, then trained. It keeps nothing between
rounds but the shared read-only context (the definition and the data pool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpact.common.definition import TaskDefinition, parse_definition
from fedpact.common.tensors import Weights
from fedpact.simulation.data import SimulationData


@dataclass
class WorkerContext:
    """What every worker needs for the whole run (sent once per worker, not per job)."""

    definition: dict[str, Any]
    data: SimulationData


@dataclass
class TrainJob:
    """One round's work for a batch of participants: the weights travel once per batch."""

    round: int
    config: dict[str, Any]
    weights: Weights
    participants: list[int]
    std: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class TrainResult:
    participant: int
    weights: Weights
    num_samples: int
    train: dict[str, float]
    val: dict[str, float]
    seconds: float


_CONTEXT: tuple[WorkerContext, TaskDefinition] | None = None


def init_worker(context: WorkerContext) -> None:
    """Process-pool initializer: keep the run's context for every job of this worker."""
    global _CONTEXT
    import threadpoolctl

    # Parallelism comes from the workers; BLAS threads inside each would fight over the cores.
    threadpoolctl.threadpool_limits(1)
    _CONTEXT = (context, parse_definition(context.definition))


def run_job(job: TrainJob) -> list[TrainResult]:
    """Train the job's participants in this process (after :func:`init_worker`)."""
    assert _CONTEXT is not None, "init_worker was not called in this worker"
    context, definition = _CONTEXT
    return train_participants(definition, context.data, job)


def train_participants(definition: TaskDefinition, data: SimulationData, job: TrainJob) -> list[TrainResult]:
    import time

    from fedpact.runtime.participant import DataParticipant, TrainConfig
    from fedpact.runtime.progress import Progress

    c = job.config
    cfg = TrainConfig(round=job.round, epochs=int(c["epochs"]), batch_size=int(c["batch_size"]),
                      learning_rate=float(c["learning_rate"]), optimizer=str(c["optimizer"]), seed=int(c["seed"]),
                      prox_mu=float(c.get("prox_mu", 0.0)))
    quiet = Progress(quiet=True)
    out = []
    for i in job.participants:
        started = time.monotonic()
        p = DataParticipant(data.dataset(i))
        p.setup(definition)
        if job.std is not None:
            p.set_standardization(*job.std)
        val = p.evaluate(job.weights)
        new, n, train = p.fit(job.weights, cfg, quiet)
        out.append(TrainResult(i, new, int(n), {k: float(v) for k, v in train.items()},
                               {k: float(v) for k, v in val.items()}, time.monotonic() - started))
    return out
