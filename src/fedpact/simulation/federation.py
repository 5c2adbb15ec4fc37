"""A federation in one process: the aggregator's round objects driven through memory.

:class:`SimFederation` is to a simulation what :class:`fedpact.runtime.aggregator.Aggregator`
is to a hub-backed task: the :class:`~fedpact.runtime.rounds.RoundHost` and
:class:`~fedpact.runtime.rounds.Transport` of the task's round object. Each selected
virtual participant gets the participant round object of the privacy mode for the length of
one round (its secure-aggregation keys, nothing more), and its local training runs on a
backend. So the strategy, the privacy mode's protocol (secure aggregation's dropout
recovery included), the model and the training code are the ones a real federation runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from fedpact.algorithms.strategies import get_aggregator
from fedpact.common.definition import TaskDefinition
from fedpact.common.errors import FedpactError, UpdateRejected
from fedpact.common.tensors import Payload, Weights
from fedpact.runtime import messages as m
from fedpact.runtime.mailbox import Message
from fedpact.runtime.outcomes import now_iso
from fedpact.runtime.progress import Progress
from fedpact.runtime.rounds import PrivacyRound, RoundOutcome, RoundPlan, round_for
from fedpact.runtime.rounds.base import Reply
from fedpact.runtime.rounds.participant import ParticipantRound, participant_round_for
from fedpact.runtime.selection import select_participants
from fedpact.simulation.backends import Backend
from fedpact.simulation.data import SimulationData
from fedpact.simulation.worker import TrainJob, TrainResult

#: Privacy modes a simulation runs (``encrypted`` needs a CKKS key ceremony among participants).
SIMULATED_MODES = ("open", "dp", "secure", "secure+dp")


@dataclass(frozen=True)
class Realism:
    """What goes wrong in a real federation, on demand (all off by default).

    ``dropout`` and ``stragglers`` are per-round probabilities for each selected participant;
    a straggler's training takes ``slowdown`` times longer, and its update is lost when that
    passes the definition's ``round_timeout_s``. Compute speed is in samples per second,
    log-normally spread across participants by ``speed_spread``; it drives the simulated
    wall-clock, never the real one.
    """

    dropout: float = 0.0
    stragglers: float = 0.0
    slowdown: float = 10.0
    speed: float = 1000.0
    speed_spread: float = 0.0

    def __post_init__(self) -> None:
        for name in ("dropout", "stragglers"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise FedpactError(f"{name} must be a probability in [0, 1), got {v}")
        if not (self.slowdown >= 1.0 and self.speed > 0 and self.speed_spread >= 0):
            raise FedpactError("slowdown must be >= 1, speed > 0 and speed_spread >= 0")


@dataclass
class RoundFates:
    """Who drops out or comes too late in one round, and how long the round took in simulated time."""

    out: set[str]
    dropped: set[str]
    late: set[str]
    sim_seconds: float


def train_samples(n: int, holdout: float) -> int:
    """Training samples of a participant holding ``n`` samples (the hold-out split of Dataset.split)."""
    return n - min(int(round(holdout * n)), max(n - 1, 0))


class _Notes(Progress):
    """The round objects' warnings (who dropped out, whose update was refused), kept for the record, not logged."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.notes: list[str] = []

    def info(self, text: str) -> None:
        pass

    def warning(self, text: str) -> None:
        self.notes.append(text)


class _SimParticipantTransport:
    """A virtual participant's link to the simulated aggregator: messages go to its inbox."""

    def __init__(self, federation: SimFederation, name: str) -> None:
        self.federation = federation
        self.name = name

    def send(self, kind: str, payload: bytes | Payload, round: int = 0) -> None:
        self.federation.receive(self.name, kind, payload.tobytes() if isinstance(payload, Payload) else payload, round)

    def download_tensors(self, sha256: str, size: int | None) -> tuple[dict[str, str], Weights]:
        raise FedpactError("virtual participants receive the global model with their training job")


class SimFederation:
    """The host and transport of the task's round object, with virtual participants behind it."""

    task_name = "simulation"

    def __init__(self, definition: TaskDefinition, data: SimulationData, backend: Backend,
                 realism: Realism | None = None, on_trained: Callable[[int], None] | None = None) -> None:
        from fedpact.models.registry import build_model

        d = definition
        if d.privacy.mode not in SIMULATED_MODES:
            raise FedpactError(f"privacy mode {d.privacy.mode!r} cannot be simulated yet; simulations run "
                               f"{', '.join(SIMULATED_MODES)}")
        n = data.participants
        if d.quorum > n or d.min_participants > n:
            raise FedpactError(f"the definition needs a quorum of {d.quorum} and min_participants "
                               f"{d.min_participants}; the simulation has {n} participants")
        self.definition = d
        self.data = data
        self.backend = backend
        self.realism = realism or Realism()
        self.on_trained = on_trained
        self.progress: Progress = _Notes()
        self.algorithm = get_aggregator(d.algorithm)
        self.model = build_model(d.model, d.data, seed=d.seed)
        self.global_weights: Weights = self.model.get_weights()
        self.names = [f"p{i:05d}" for i in range(n)]
        self.index = {name: i for i, name in enumerate(self.names)}
        sizes = self._sizes()
        self.train_sizes = np.array([train_samples(int(s), d.evaluation.holdout) for s in sizes])
        self.hello = {name: {"num_samples": int(max(1, self.train_sizes[i]))} for i, name in enumerate(self.names)}
        self.ready: dict[str, dict[str, Any]] = dict(self.hello)
        self.rejected: dict[str, str] = {}
        self.clipped: dict[str, str] = {}
        spread = np.random.default_rng([d.seed, 0x5EED]).lognormal(0.0, self.realism.speed_spread, n)
        self.speeds = self.realism.speed * spread
        self.rounds: PrivacyRound = round_for(self, self)
        self.std = self._standardization() if d.data.standardize else None
        self._lock = threading.Lock()
        self._members: dict[str, ParticipantRound] = {}
        self._silent: set[str] = set()
        self._pending: list[str] = []
        self._updates: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]] = {}
        self._inbox: list[tuple[str, str, bytes, int]] = []
        self._meta: dict[str, Any] = {}
        self._round = 0
        self._start_weights: Weights = self.global_weights

    def _sizes(self) -> np.ndarray:
        if not self.data.files:
            return self.data.sizes()
        # One file per participant: count each file's samples once, as its hello would.
        return np.array([len(self.data.dataset(i)) for i in range(self.data.participants)], dtype=np.int64)

    def _standardization(self) -> tuple[np.ndarray, np.ndarray]:
        """Federated standardisation as the aggregator does it: every participant's feature sums, combined."""
        from fedpact.algorithms.standardize import combine_moments
        from fedpact.runtime.participant import DataParticipant

        moments = []
        for i in range(self.data.participants):
            p = DataParticipant(self.data.dataset(i))
            p.setup(self.definition)
            moments.append(p.local_moments())
        mean, std = combine_moments(moments)
        return mean.astype(np.float32), std.astype(np.float32)

    # -- Transport (aggregator -> participants) ----------------------------------------------
    def broadcast(self, kind: str, meta: dict[str, Any], tensors: Mapping[str, np.ndarray] | None = None,
                  round: int = 0) -> None:
        for name in sorted(self._members):
            self._deliver(name, kind, meta, tensors, round)

    def send_to(self, name: str, kind: str, meta: dict[str, Any], round: int = 0,
                tensors: Mapping[str, np.ndarray] | None = None) -> None:
        if name in self._members:
            self._deliver(name, kind, meta, tensors, round)

    def _deliver(self, name: str, kind: str, meta: dict[str, Any], tensors: Mapping[str, np.ndarray] | None,
                 round: int) -> None:
        from fedpact.privacy.secagg import MASKED

        if name in self._silent and meta.get("step") == MASKED:
            return  # dropped out (or still training past the deadline): its masked input never comes
        msg = Message({"id": 0, "kind": kind, "sender": m.AGGREGATOR, "round": round}, cast(Any, None), 0,
                      (dict(meta), dict(tensors or {})))
        deferred = self._members[name].on_message(msg)
        if deferred is not None:
            with self._lock:
                self._pending.append(name)

    # -- participants -> aggregator --------------------------------------------------------------
    def receive(self, name: str, kind: str, payload: bytes, round: int) -> None:
        with self._lock:
            self._inbox.append((name, kind, payload, round))

    def _dispatch_inbox(self) -> None:
        while True:
            with self._lock:
                batch, self._inbox = self._inbox, []
            if not batch:
                return
            for name, kind, payload, round in batch:
                meta, tensors = m.unpack(payload)
                if kind == m.SECAGG:
                    self.rounds.on_protocol_message(name, round, meta, tensors)

    def collect(self, kind: str, key: str, expected: set[str], timeout: float) -> dict[str, Reply]:
        self._train_pending()
        self._dispatch_inbox()
        replies: dict[str, Reply] = {}
        for name in sorted(expected):
            update = self._updates.get(name)
            if kind != m.UPDATE or update is None or update[0].get("round_id") != key:
                continue
            try:
                replies[name] = self.rounds.accept_update(name, *update)
            except UpdateRejected as exc:
                self.rejected[name] = str(exc)
        return replies

    def pump_until(self, done: Callable[[], bool], until: float) -> None:
        self._train_pending()
        self._dispatch_inbox()

    # -- local training ------------------------------------------------------------------------
    def _train_pending(self) -> None:
        with self._lock:
            names, self._pending = sorted(set(self._pending) - self._silent), []
        if not names:
            return
        idx = [self.index[n] for n in names]
        per_job = max(1, math.ceil(len(idx) / (self.backend.workers * 4)))
        jobs = [TrainJob(self._round, self._meta["config"], self._start_weights, idx[i:i + per_job], self.std)
                for i in range(0, len(idx), per_job)]
        for results in self.backend.train(jobs):
            for res in results:
                self._trained(res)
            if self.on_trained:
                self.on_trained(len(results))

    def _trained(self, res: TrainResult) -> None:
        name = self.names[res.participant]
        out = self._members[name].contribution(self._meta, self._round, self._start_weights, res.weights,
                                               res.num_samples, res.train, res.val)
        if out is None:
            return  # secure aggregation: the masked input goes out when the aggregator asks for it
        overrides, tensors = out
        reply = {"round_id": self._meta["round_id"], "num_samples": res.num_samples, "train": res.train,
                 "val": res.val, "train_seconds": res.seconds, **overrides}
        self._updates[name] = (reply, tensors)

    # -- one round --------------------------------------------------------------------------------
    def select(self, r: int) -> list[str]:
        """The round's participants, drawn as the aggregator draws them (fraction, seed, round)."""
        return select_participants(self.definition, self.rounds.eligible(sorted(self.ready)), r)

    def fates(self, r: int, selected: list[str]) -> RoundFates:
        """Dropouts, stragglers and the round's simulated duration, drawn from the seed."""
        d, real = self.definition, self.realism
        rng = np.random.default_rng([d.seed, r, 0xD0])
        dropped, late, times = set(), set(), []
        for name in selected:
            drop, slow = rng.random() < real.dropout, rng.random() < real.stragglers
            i = self.index[name]
            t = d.local_epochs * max(1, int(self.train_sizes[i])) / float(self.speeds[i]) * (real.slowdown if slow else 1.0)
            if drop:
                dropped.add(name)
            elif t > d.round_timeout_s:
                late.add(name)
            else:
                times.append(t)
        out = dropped | late
        sim = d.round_timeout_s if out else max(times, default=0.0)
        return RoundFates(out, dropped, late, float(sim))

    def run_round(self, r: int) -> tuple[list[str], RoundOutcome, RoundFates]:
        """Select, start, and complete round ``r`` through the round object; RoundFailed when it cannot."""
        d = self.definition
        self.rejected, self.clipped = {}, {}
        self.rounds.prepare(r)
        selected = self.select(r)
        rid = np.random.default_rng([d.seed, r, 0x1D]).bytes(8).hex()
        plan = RoundPlan(number=r, round_id=f"sim-{r}-{rid}", selected=selected, started_at=now_iso(),
                         deadline=time.monotonic() + d.round_timeout_s)
        config: dict[str, Any] = {"epochs": d.local_epochs, "batch_size": d.batch_size,
                                  "learning_rate": d.learning_rate, "optimizer": d.optimizer,
                                  "seed": d.seed * 100_003 + r, **self.algorithm.participant_config()}
        privacy = self.rounds.config(plan)
        if privacy is not None:
            config["privacy"] = privacy
        fates = self.fates(r, selected)
        self._round, self._start_weights, self._silent = r, self.global_weights, fates.out
        self._meta = {"round_id": plan.round_id, "rounds": d.rounds, "selected": selected, "config": config,
                      "deadline_s": d.round_timeout_s}
        self._updates, self._pending, self._inbox = {}, [], []
        self._members = {n: participant_round_for(_SimParticipantTransport(self, n), 0, n, d, self.progress)
                         for n in selected}
        start = Message({"id": 0, "kind": m.ROUND_START, "sender": m.AGGREGATOR, "round": r}, cast(Any, None), 0,
                        (self._meta, {}))
        try:
            for name in selected:
                if not self._members[name].needs_keys_first(self._meta, start):
                    self._pending.append(name)
            outcome = self.rounds.run(plan)
        finally:
            # Virtual participants keep nothing between rounds; those left out announce themselves again.
            self._members, self._updates = {}, {}
            for name in selected:
                self.ready.setdefault(name, self.hello[name])
        return selected, outcome, fates

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The global model on the simulation's test set (as the aggregator evaluates its eval data)."""
        if self.std is not None:
            from fedpact.algorithms.standardize import apply_standardization

            x = apply_standardization(x, *self.std)
        self.model.set_weights(self.global_weights)
        return self.model.evaluate(x, y)

    def close(self) -> None:
        self.rounds.close()
