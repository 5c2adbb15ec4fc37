"""The interface between the aggregator and its per-privacy-mode round objects.

A round object knows one privacy mode: what the round's config tells participants, how a
participant's update is checked, how the round's contributions are collected and turned
into the next global model. It never touches HTTP: it talks to a :class:`Transport`
(messages to and from participants) and reads and writes the aggregator's state through
:class:`RoundHost`. The aggregator implements both over the hub; a simulation can
implement them in memory and reuse the same round objects.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from fedpact.algorithms.strategies import Aggregator as Strategy
from fedpact.common.definition import TaskDefinition
from fedpact.common.tensors import Weights
from fedpact.runtime import checks
from fedpact.runtime.progress import Progress

if TYPE_CHECKING:
    from fedpact.privacy.secure_sum import SumLayout, SumPlan

Reply = tuple[dict[str, Any], Any]


class Transport(Protocol):
    """Messages between the aggregator and its participants."""

    def broadcast(self, kind: str, meta: dict[str, Any], tensors: Mapping[str, np.ndarray] | None = None,
                  round: int = 0) -> None:
        """Send to every participant."""

    def send_to(self, name: str, kind: str, meta: dict[str, Any], round: int = 0,
                tensors: Mapping[str, np.ndarray] | None = None) -> None:
        """Send to one participant."""

    def collect(self, kind: str, key: str, expected: set[str], timeout: float) -> dict[str, Reply]:
        """Checked replies of ``kind`` to request ``key`` from ``expected``, until all came or the time is up."""

    def pump_until(self, done: Callable[[], bool], until: float) -> None:
        """Deliver incoming messages until ``done()`` or the monotonic time ``until``."""


class RoundHost(Protocol):
    """The aggregator state a round object reads and writes."""

    definition: TaskDefinition
    progress: Progress
    algorithm: Strategy
    global_weights: Weights
    ready: dict[str, dict[str, Any]]
    task_name: str
    #: This round's dropped contributions: participant -> reason.
    rejected: dict[str, str]
    #: This round's clipped sample counts: participant -> note.
    clipped: dict[str, str]


@dataclass(frozen=True)
class RoundPlan:
    """One round as the aggregator started it."""

    number: int
    round_id: str
    selected: list[str]
    started_at: str
    deadline: float  # time.monotonic() by which updates must be in


@dataclass
class RoundOutcome:
    """What a round produced: who contributed, the aggregate metrics, notes for the record."""

    contributors: list[str]
    train: dict[str, float]
    val: dict[str, float]
    num_samples: int
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class SumOutcome:
    """A secure statistics sum: the totals, whose inputs they hold, notes (dropouts) for the log."""

    totals: dict[str, np.ndarray]
    contributors: list[str]
    notes: list[str] = field(default_factory=list)


class RoundFailed(Exception):
    """The round cannot complete; ``reason`` and ``notes`` go in the round record."""

    def __init__(self, reason: str, notes: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.notes = list(notes or [])


class PrivacyRound(ABC):
    """One privacy mode's side of every round; chosen once per task from its definition."""

    mode: ClassVar[str]
    #: Whether the aggregator holds the global model in plaintext (not under ``encrypted``).
    plaintext_model: ClassVar[bool] = True
    #: Whether statistics (analytics summaries, imputation and standardisation sums) go through
    #: secure aggregation (:meth:`sum_plan`, :meth:`secure_sum`) instead of in plaintext.
    secure_statistics: ClassVar[bool] = False

    def __init__(self, host: RoundHost, transport: Transport) -> None:
        self.host = host
        self.transport = transport
        #: Why the run stopped early (a spent privacy budget), for the task's final status.
        self.stop_reason: str | None = None

    # -- set-up and per-round hooks ---------------------------------------------------------
    def eligible(self, names: list[str]) -> list[str]:
        """The ready participants that can take part in a round of this mode."""
        return names

    def prepare(self, r: int) -> None:
        """Work before participants are selected for round ``r`` (e.g. key set-up)."""

    def budget_allows(self, r: int) -> bool:
        """False once round ``r`` would exceed a privacy budget (then ``stop_reason`` says why)."""
        return True

    def config(self, plan: RoundPlan) -> dict[str, Any] | None:
        """The ``privacy`` section of the round's config (participants act on its ``mode``); None in open mode."""
        return {"mode": self.mode}

    def round_metrics(self) -> dict[str, Any]:
        """Metrics this mode adds to a completed round's record (epsilon, ...)."""
        return {}

    def epsilon(self) -> float | None:
        """The privacy spent so far (differentially private modes), None otherwise."""
        return None

    def restore(self, rounds_done: int) -> None:
        """Continue the bookkeeping of a resumed run after ``rounds_done`` rounds."""

    def evaluates_final_model(self) -> bool:
        """Whether participants may report hold-out metrics of the final model in this mode."""
        return True

    # -- messages ---------------------------------------------------------------------------
    @abstractmethod
    def accept_update(self, name: str, meta: dict[str, Any], tensors: Weights) -> Reply:
        """The checked ``(meta, update)`` of a participant's update; MessageRejected when unusable."""

    def on_protocol_message(self, name: str, round: int, meta: dict[str, Any], tensors: Weights) -> None:
        """A mode's own message (secure aggregation steps); others ignore it."""

    # -- the round ---------------------------------------------------------------------------
    @abstractmethod
    def run(self, plan: RoundPlan) -> RoundOutcome:
        """Collect the round's contributions and move the global model; RoundFailed when it cannot."""

    def close(self) -> None:
        """Release what the round object holds (threads); called once when the run ends."""

    # -- statistics under secure aggregation (modes with ``secure_statistics``) -----------------
    def sum_plan(self, request_id: str, participants: Sequence[str], layout: SumLayout) -> SumPlan:
        """Open a secure sum of ``layout`` among ``participants``; the plan goes out with the request."""
        raise NotImplementedError(f"privacy mode {self.mode!r} does not sum statistics securely")

    def secure_sum(self, plan: SumPlan, deadline: float, what: str) -> SumOutcome:
        """Run the secure sum opened by :meth:`sum_plan` until ``deadline``; RoundFailed below the threshold."""
        raise NotImplementedError(f"privacy mode {self.mode!r} does not sum statistics securely")

    # -- encrypted models (plaintext modes keep the defaults) -----------------------------------
    def weights_payload(self) -> bytes | None:
        """The global model as this mode stores it, or None for the plain safetensors weights."""
        return None

    def restore_weights(self, data: bytes, state: Mapping[str, Any]) -> bool:
        """Take the global model from a checkpoint blob stored by :meth:`weights_payload`; False if plain."""
        return False

    def checkpoint_state(self) -> dict[str, Any]:
        """What this mode adds to the checkpoint state."""
        return {}

    def model_payload(self, metadata: dict[str, Any], extra: Mapping[str, np.ndarray]) -> bytes | None:
        """The final model file as this mode stores it, or None for plain safetensors weights."""
        return None

    # -- shared helpers ------------------------------------------------------------------------
    def checked_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The reply fields every mode uses: sample count (clipped to the cap) and metrics."""
        cap = self.host.definition.max_samples_per_participant
        n, clipped = checks.num_samples(meta.get("num_samples"), cap)
        task = self.host.definition.data.task
        out = {**meta, "num_samples": n, "train": checks.metrics(meta.get("train"), "train"),
               "val": checks.kind_report(task, checks.metrics(meta.get("val"), "val"))}
        if clipped:
            out["clipped"] = clipped
        return out

    def collect_updates(self, plan: RoundPlan) -> tuple[dict[str, Reply], list[str]]:
        """The selected participants' checked updates and notes on who is missing; RoundFailed below
        min_participants."""
        from fedpact.runtime import messages as m

        d = self.host.definition
        replies = self.transport.collect(m.UPDATE, plan.round_id, set(plan.selected),
                                         max(0.0, plan.deadline - time.monotonic()))
        missing = sorted(set(plan.selected) - set(replies) - set(self.host.rejected))
        for name in missing:
            self.host.ready.pop(name, None)
            self.host.progress.warning(
                f"round {plan.number}: {name} did not reply within {d.round_timeout_s:.0f} s; "
                "left out until it announces itself again")
        notes = [f"{n} did not reply within {d.round_timeout_s:.0f} s" for n in missing]
        notes += [f"update of {n} rejected: {why}" for n, why in sorted(self.host.rejected.items())]
        notes += [f"{n}: {meta['clipped']}" for n, (meta, _) in sorted(replies.items()) if meta.get("clipped")]
        if len(replies) < d.min_participants:
            raise RoundFailed(
                f"round {plan.number}: only {len(replies)} of {len(plan.selected)} selected participants sent a valid "
                f"update within {d.round_timeout_s:.0f} s (min_participants is {d.min_participants})", notes)
        return replies, notes

    def plain_outcome(self, replies: Mapping[str, Reply], notes: list[str]) -> RoundOutcome:
        """Contributors, sample-weighted metrics and notes of a round whose replies carry metrics."""
        return RoundOutcome(
            contributors=sorted(replies),
            train=checks.weighted_means({n: (meta["num_samples"], meta["train"]) for n, (meta, _) in replies.items()},
                                        "train_"),
            val=pooled_val(self.host.definition.data.task, replies),
            num_samples=sum(int(meta["num_samples"]) for meta, _ in replies.values()),
            notes=notes,
        )


def pooled_val(task: str, replies: Mapping[str, Reply]) -> dict[str, float]:
    """The participants' hold-out figures pooled as their task kind pools them (``val_`` names).

    Regression and clustering reports are sums (checked by :func:`checks.kind_report`), so
    MSE, R2 and inertia come out as one evaluation on all the hold-out rows would give them.
    """
    if task in ("regression", "clustering"):
        from fedpact.runtime.task_kinds import combine_reports

        pooled = combine_reports(task, [meta["val"] for meta, _ in replies.values() if meta["val"]])
        return {f"val_{k}": float(v) for k, v in pooled.items() if k != "num_samples"}
    return checks.weighted_means({n: (meta["num_samples"], meta["val"]) for n, (meta, _) in replies.items()}, "val_")
