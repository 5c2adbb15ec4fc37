"""Where virtual participants train: in this process, in a process pool, or on a Ray cluster.

A backend gets batches of participants with the global weights and returns their trained
weights; it never keeps a model between rounds. The round objects, the strategy and the
secure-aggregation state stay in the driving process, so all backends run the same
protocol and differ only in where the local training happens.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Protocol

from fedpact.common.errors import FedpactError
from fedpact.simulation.worker import TrainJob, TrainResult, WorkerContext, init_worker, run_job, train_participants

BACKENDS = ("process", "ray", "inline")


class Backend(Protocol):
    workers: int

    def train(self, jobs: list[TrainJob]) -> Iterator[list[TrainResult]]:
        """Each job's results, in the order they finish."""

    def close(self) -> None:
        """Stop the workers."""


class InlineBackend:
    """Everything in the calling process: the easiest to debug, and the reference for the others."""

    workers = 1

    def __init__(self, context: WorkerContext) -> None:
        from fedpact.common.definition import parse_definition

        self.context = context
        self.definition = parse_definition(context.definition)

    def train(self, jobs: list[TrainJob]) -> Iterator[list[TrainResult]]:
        for job in jobs:
            yield train_participants(self.definition, self.context.data, job)

    def close(self) -> None:
        pass


class ProcessBackend:
    """A local process pool, one worker per core by default; each worker gets the data once."""

    def __init__(self, context: WorkerContext, workers: int | None = None) -> None:
        import multiprocessing

        self.workers = max(1, workers or len(os.sched_getaffinity(0)))
        # fork: workers start in milliseconds and share the data pool copy-on-write. The
        # pool is made before the driver starts any thread (secure aggregation's senders).
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_worker, initargs=(context,))

    def train(self, jobs: list[TrainJob]) -> Iterator[list[TrainResult]]:
        pending: set[Future[list[TrainResult]]] = {self.pool.submit(run_job, job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayBackend:
    """Tasks on a Ray cluster (``address``) or a local Ray instance; the context is put in its object store once."""

    def __init__(self, context: WorkerContext, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise FedpactError("the ray backend needs Ray: pip install 'fedpact[sim]'") from None
        self.ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self.workers = max(1, workers or int(ray.cluster_resources().get("CPU", 1)))
        self.context_ref = ray.put(context)
        self.remote = ray.remote(num_cpus=1)(_ray_job)

    def train(self, jobs: list[TrainJob]) -> Iterator[list[TrainResult]]:
        pending = [self.remote.remote(self.context_ref, job) for job in jobs]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            for ref in done:
                yield self.ray.get(ref)

    def close(self) -> None:
        if self._owns:
            self.ray.shutdown()


def _ray_job(context: WorkerContext, job: TrainJob) -> list[TrainResult]:
    """A Ray task: the context comes from the object store, the definition is parsed per job (cheap)."""
    from fedpact.common.definition import parse_definition

    return train_participants(parse_definition(context.definition), context.data, job)


def make_backend(name: str, context: WorkerContext, *, workers: int | None = None,
                 ray_address: str | None = None) -> Backend:
    """The backend called ``name``; a precise error for any other name."""
    factories: dict[str, Callable[[], Backend]] = {
        "inline": lambda: InlineBackend(context),
        "process": lambda: ProcessBackend(context, workers),
        "ray": lambda: RayBackend(context, ray_address, workers),
    }
    if name not in factories:
        raise FedpactError(f"unknown simulation backend {name!r}: use one of {', '.join(BACKENDS)}")
    if ray_address and name != "ray":
        raise FedpactError("--ray-address applies to the ray backend only (add --backend ray)")
    return factories[name]()
