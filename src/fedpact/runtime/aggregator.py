"""The aggregator: runs a task's rounds through the hub, and only ever sees updates.

It is written so that nothing is lost: every completed round is recorded and checkpointed
on the hub before the next one starts, so a crashed aggregator started again with
``resume=True`` continues after the last completed round, with the same participants
still waiting on the other side.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpact.algorithms.standardize import apply_standardization, combine_moments, combine_target_moments
from fedpact.algorithms.strategies import get_aggregator
from fedpact.client.hub import BlobGone, HubClient, HubError
from fedpact.common.definition import MAX_SAMPLES, TaskDefinition, parse_definition
from fedpact.common.errors import FedpactError, UpdateRejected
from fedpact.common.tensors import Payload, Weights, decode_weights, encode_parts, encode_weights
from fedpact.runtime import checks, task_kinds
from fedpact.runtime import messages as m
from fedpact.runtime.checks import MessageRejected
from fedpact.runtime.mailbox import Mailbox, Message, ReadAhead
from fedpact.runtime.outcomes import AggregationFailed, now_iso
from fedpact.runtime.progress import Progress
from fedpact.runtime.rounds import PrivacyRound, RoundFailed, RoundPlan, round_for
from fedpact.runtime.rounds.base import pooled_val
from fedpact.runtime.selection import select_participants

if TYPE_CHECKING:
    from fedpact.privacy.secure_sum import SumPlan


@dataclass
class AggregatorResult:
    task_id: int
    task_name: str
    status: str
    rounds_completed: int
    model_id: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)




class _Collector:
    """Gathers the replies to one request (a round, a stats or evaluation request)."""

    def __init__(self, kind: str, key: str, expected: set[str]) -> None:
        self.kind = kind
        self.key = key
        self.expected = expected
        self.replies: dict[str, tuple[dict[str, Any], Weights]] = {}

    @property
    def complete(self) -> bool:
        return self.expected <= set(self.replies)


class Aggregator:
    """One run of the aggregator for one task (see :func:`run_aggregator`).

    It is the hub-backed host and transport of the task's round object
    (:mod:`fedpact.runtime.rounds`): it selects participants, starts rounds, records them
    and checkpoints; the round object does what the privacy mode does.
    """

    def __init__(
        self,
        client: HubClient,
        task: str | int,
        *,
        eval_data: Any = None,
        resume: bool = False,
        progress: Progress | None = None,
        poll_wait: float = 5.0,
        quorum_timeout_s: float | None = None,
        on_round: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> None:
        from fedpact.models.registry import build_model

        self.client = client
        self.progress = progress or Progress()
        self.poll_wait = poll_wait
        self.quorum_timeout_s = quorum_timeout_s
        self.on_round = on_round
        info = client.get_task(task)
        self.task_id = int(info["id"])
        # On the hub's machine, the updates are read from its blob directory: the hub does
        # not send each one again (client.localblobs).
        client.read_blobs_locally(self.task_id)
        self.task_name = info["name"]
        me = (client.user or client.me())["name"]
        if info["creator"] != me:
            raise FedpactError(f"only the creator of {self.task_name!r} ({info['creator']}) can run its aggregator")
        status = info["status"]
        if status in ("COMPLETE", "FAILED", "CANCELLED"):
            raise FedpactError(f"task {self.task_name!r} is {status}; there is nothing to aggregate")
        if status == "RUNNING" and not resume:
            raise FedpactError(
                f"task {self.task_name!r} is already RUNNING; if its aggregator crashed, "
                "start it again with resume (--resume) to continue after the last completed round"
            )
        self.resume = resume
        self.definition: TaskDefinition = parse_definition(info["definition"])
        self.algorithm = get_aggregator(self.definition.algorithm)
        # An analytics task has no model: its result is the report of its statistics exchange.
        self.model = (build_model(self.definition.model, self.definition.data, seed=self.definition.seed)
                      if self.definition.model is not None else None)
        self.global_weights: Weights = self.model.get_weights() if self.model is not None else {}
        #: Federated imputation values (``missing: impute``), broadcast with every request.
        self.fills: dict[str, float] | None = None
        #: Regression target mean and deviation (``standardize`` on a regression task).
        self.target_scale: tuple[float, float] | None = None
        self.eval_data = self._prepare_eval(eval_data)
        self.ready: dict[str, dict[str, Any]] = {}
        self.refused: dict[str, list[str]] = {}
        self.contributors: set[str] = set()
        self.history: list[dict[str, Any]] = []
        self.std: tuple[np.ndarray, np.ndarray] | None = None
        self.best: float | None = None
        self.since_best = 0
        self.start_round = 1
        self._collector: _Collector | None = None
        self._stats_kind: str | None = None
        self._stats_meta: dict[str, Any] = {}
        #: Whose inputs the last secure statistics sum holds (secure modes), for the analytics record.
        self.stats_contributors: list[str] | None = None
        self._raw_eval: Any = None
        self.rejected: dict[str, str] = {}
        self.clipped: dict[str, str] = {}
        self._weights_blob: dict[str, Any] | None = None
        #: The bytes of the last weights blob this run uploaded, when small enough to inline.
        self._weights_bytes: tuple[str, bytes] | None = None
        self._previous: dict[str, Any] | None = None
        #: Records of the round just finished (its round record, its checkpoint), written by
        #: a thread of their own, in order, once the next round's request is out: the
        #: participants train and the updates are read meanwhile. ``on_round`` is called (in
        #: this thread) once the round's records are stored. A failure or the end of the task
        #: waits for them.
        self._deferred: list[Callable[[], Any]] = []
        self._finished_rounds: list[Callable[[], Any]] = []
        self._writes: deque[tuple[Future[None], list[Callable[[], Any]]]] = deque()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedpact-records")
        self._downloads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fedpact-download")
        self.mailbox = Mailbox(client, self.task_id, m.AGGREGATOR, from_start=not resume)
        self.inbox = ReadAhead(self.mailbox, self._downloads,
                               lambda msg: msg.kind in (m.UPDATE, m.SECAGG) and bool(msg.raw.get("blob")))
        self._last_status_check = 0.0
        self.rounds: PrivacyRound = round_for(self, self)
        self.stop_reason: str | None = None
        if not self.rounds.plaintext_model and self.eval_data is not None:
            self.progress.warning(f"{self.definition.privacy.mode} mode: the aggregator never holds the model in "
                                  "plaintext, so it cannot evaluate it; evaluation metrics come from the participants")
            self.eval_data = None

    # -- setup -------------------------------------------------------------------------
    def _prepare_eval(self, data: Any) -> tuple[np.ndarray, np.ndarray] | None:
        if data is None:
            return None
        from fedpact.data.schema import conform, encode_labels, ensure_fits

        schema = self.definition.data
        if schema.task == "analytics":
            return None
        if schema.missing == "impute":
            self._raw_eval = data  # imputed with the federated fills once they are known
            return None
        if schema.task != "classification":
            d = task_kinds.prepare(data, schema)
            return d.x, task_kinds.targets(d, schema)
        ensure_fits(data, schema)
        d = conform(data, schema)
        return d.x, encode_labels(d.y, schema.classes)

    def _restore(self) -> None:
        ckpt = self.client.get_checkpoint(self.task_id)
        if ckpt is None:
            self.progress.info("no checkpoint on the hub yet: starting from round 1")
            return
        data = self.client.download_blob(self.task_id, ckpt["blob"]["sha256"])
        state = ckpt["state"]
        if not self.rounds.restore_weights(data, state):
            self.global_weights = decode_weights(data)
        self._weights_blob = ckpt["blob"]
        if state.get("standardization"):
            mean, std = state["standardization"]["mean"], state["standardization"]["std"]
            self.std = (np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32))
            target = state["standardization"].get("target")
            if target:
                self.target_scale = (float(target[0]), float(target[1]))
        if state.get("fills"):
            self._set_fills({str(k): float(v) for k, v in state["fills"].items()})
        strategy = state.get("strategy")
        if strategy:
            blob = self.client.download_blob(self.task_id, strategy["blob"]["sha256"])
            self.algorithm.load_state(decode_weights(blob))
        self.history = list(state.get("history", []))
        self.contributors = set(state.get("contributors", []))
        self.best = state.get("best")
        self.since_best = int(state.get("since_best", 0))
        self.start_round = int(ckpt["round"]) + 1
        self.rounds.restore(len(self.history))
        self.progress.info(f"resumed from the checkpoint of round {ckpt['round']}")

    # -- mailbox -----------------------------------------------------------------------
    def pump_until(self, done: Callable[[], bool], until: float) -> None:
        while not done() and time.monotonic() < until:
            self._pump(wait=min(self.poll_wait, max(0.05, until - time.monotonic())))

    def _pump(self, wait: float) -> None:
        self._settle()
        # Update bodies download (four at a time) as their messages arrive, while the
        # mailbox is read on: one after another they would be most of a round.
        for msg in self.inbox.next(wait):
            try:
                self._dispatch(msg)
            except Exception as exc:  # noqa: BLE001 - no participant's message may crash a round
                note = f"a {msg.kind!r} message from {msg.sender_name} was dropped: {type(exc).__name__}: {exc}"
                self.progress.warning(note)
                self.rejected.setdefault(msg.sender_name, note)
        now = time.monotonic()
        if now - self._last_status_check > 5.0:
            self._last_status_check = now
            status = self.client.get_task(self.task_id)["status"]
            if status == "CANCELLED":
                self.broadcast(m.STOPPED, {"status": "CANCELLED", "reason": "cancelled by the creator"})
                raise AggregationFailed(f"task {self.task_name!r} was cancelled")

    def _dispatch(self, msg: Message) -> None:
        name = msg.sender_name
        try:
            meta, tensors = msg.body()
        except (ValueError, TypeError) as exc:
            self.progress.warning(f"ignored a malformed {msg.kind!r} message from {name}: {exc}")
            return
        except BlobGone:
            # Only a finished round's message loses its body (hub.blobgc): one that came too late.
            self.progress.info(f"ignored a late {msg.kind!r} message of round {msg.round} from {name}: the round is over")
            return
        if msg.kind == m.HELLO:
            try:
                n, _ = checks.num_samples(meta.get("num_samples"), self.definition.max_samples_per_participant)
                hello: dict[str, Any] = {"num_samples": n}
                if "seal_pk" in meta:
                    hello["seal_pk"] = checks.text(meta["seal_pk"], "seal_pk")
            except MessageRejected as exc:
                self.progress.warning(f"ignored the hello of {name}: {exc}")
                return
            if name not in self.ready:
                self.progress.info(f"{name} is ready ({n} samples)")
            self.ready[name] = hello
            self.refused.pop(name, None)
        elif msg.kind == m.REFUSE:
            self.ready.pop(name, None)
            problems = meta.get("problems")
            self.refused[name] = [str(p)[:500] for p in problems[:20]] if isinstance(problems, list) else []
            self.progress.warning(f"{name} cannot take part: {'; '.join(self.refused[name])}")
        elif msg.kind == m.SECAGG:
            self.rounds.on_protocol_message(name, msg.round, meta, tensors)
        elif self._collector and msg.kind == self._collector.kind:
            c = self._collector
            key = meta.get("round_id") or meta.get("request_id")
            if key != c.key or name not in c.expected or name in c.replies:
                return
            if msg.kind == m.UPDATE:
                try:
                    c.replies[name] = self.rounds.accept_update(name, meta, tensors)
                except UpdateRejected as exc:
                    self.progress.warning(f"round {msg.round}: rejected the update of {name}: {exc}")
                    self.rejected[name] = str(exc)
                    c.expected.discard(name)
                    self.send_to(name, m.UPDATE_REJECTED, {"reason": str(exc)}, round=msg.round)
            else:
                try:
                    c.replies[name] = (self._checked_reply(msg.kind, meta, tensors), tensors)
                except MessageRejected as exc:
                    self.progress.warning(f"ignored the {msg.kind!r} reply of {name}: {exc}")
                    self.rejected[name] = str(exc)
                    c.expected.discard(name)

    def _checked_reply(self, kind: str, meta: dict[str, Any], tensors: Weights) -> dict[str, Any]:
        """A stats or evaluation reply with every value the aggregator uses checked."""
        if kind == m.EVALUATION:
            ms = checks.kind_report(self.definition.data.task, checks.metrics(meta.get("metrics")))
            n = ms.get("num_samples", 0.0)
            return {**meta, "metrics": ms, "num_samples": int(n) if 0 <= n <= MAX_SAMPLES else 0}
        if kind == m.STATS and meta.get("unsupported"):
            return meta
        if kind == m.STATS and self._stats_kind is not None:
            return {**meta, "statistics": self._checked_statistics(self._stats_kind, tensors)}
        if kind == m.STATS:
            width = int(np.prod(self.definition.data.sample_shape))
            names = {"sum", "sumsq", "count"}
            if self.definition.data.task == "regression":
                names |= {"y_sum", "y_sumsq", "y_count"}
                checks.statistics_reply({k: tensors[k] for k in tensors if k.startswith("y_")},
                                        {k: (1,) for k in names if k.startswith("y_")},
                                        counts=("y_count",), nonnegative=("y_sumsq",))
                tensors = {k: t for k, t in tensors.items() if not k.startswith("y_")}
                names = {"sum", "sumsq", "count"}
            if set(tensors) != names:
                raise MessageRejected(f"feature sums must be the tensors sum, sumsq and count, got {sorted(tensors)}")
            for k, t in tensors.items():
                if t.shape != (width,) or t.dtype.kind != "f" or not np.isfinite(t).all():
                    raise MessageRejected(f"feature sums {k!r} must be {width} finite floats, got {t.dtype}{t.shape}")
            if (tensors["count"] < 0).any() or (tensors["sumsq"] < 0).any() or (tensors["count"] > MAX_SAMPLES).any():
                raise MessageRejected("feature sums: count and sumsq must be >= 0 and counts at most 10**12")
        return meta

    def _checked_statistics(self, kind: str, tensors: Weights) -> dict[str, np.ndarray]:
        """One reply to a statistics request, with exactly the shapes the merge expects."""
        d = self.definition
        if kind == task_kinds.KMEANS_SEED:
            assert d.model is not None
            width = int(np.prod(d.data.sample_shape))
            cap = int(d.model.params.get("seed_sample", task_kinds.DEFAULT_SEED_SAMPLE))
            return checks.statistics_reply(tensors, {"points": (-1, width)}, max_rows=cap)
        if kind in task_kinds.IMPUTE_REQUESTS:
            n = len(task_kinds.impute_columns(d))
        else:
            n = int(d.data.n_features or 0)
        if kind in (task_kinds.IMPUTE_RANGE, task_kinds.ANALYTICS_RANGE):
            return checks.statistics_reply(tensors, {"min": (n,), "max": (n,)}, infinite_ok=("min", "max"))
        edges = self._stats_meta.get("edges") or [[0.0, 1.0]] * n
        shapes: dict[str, tuple[int, ...]] = {k: (n,) for k in ("count", "missing", "sum", "sumsq", "min", "max")}
        shapes |= {f"hist.{j}": (len(e) + 1,) for j, e in enumerate(edges)}
        return checks.statistics_reply(tensors, shapes, counts=("count", "missing"), nonnegative=("sumsq",),
                                       infinite_ok=("min", "max"))

    def collect(self, kind: str, key: str, expected: set[str], timeout: float) -> dict[str, tuple[dict[str, Any], Any]]:
        self._collector = _Collector(kind, key, expected)
        deadline = time.monotonic() + timeout
        try:
            while not self._collector.complete:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._pump(wait=min(self.poll_wait, left))
            return self._collector.replies
        finally:
            self._collector = None

    def broadcast(self, kind: str, meta: dict[str, Any], tensors: Mapping[str, np.ndarray] | None = None,
                  round: int = 0) -> None:
        self.client.send(self.task_id, sender=m.AGGREGATOR, recipient=m.BROADCAST, kind=kind, round=round,
                         payload=m.pack(meta, tensors))

    def send_to(self, name: str, kind: str, meta: dict[str, Any], round: int = 0,
                tensors: Mapping[str, np.ndarray] | None = None) -> None:
        """Message one participant; one the creator removed from the task (404) is left out, not fatal."""
        try:
            self.client.send(self.task_id, sender=m.AGGREGATOR, recipient=m.participant_address(name), kind=kind,
                             round=round, payload=m.pack(meta, tensors))
        except HubError as exc:
            if exc.status != 404:
                raise
            self.ready.pop(name, None)
            self.progress.warning(f"{name} is no longer a participant of the task (removed?); left out")

    # -- the run -----------------------------------------------------------------------
    def run(self) -> AggregatorResult:
        try:
            return self._run()
        except AggregationFailed:
            raise
        except Exception as exc:
            # Never leave a task RUNNING behind a failed aggregator: mark it FAILED with the reason.
            # (A killed process cannot, and --resume is how it continues.)
            try:
                self._write_deferred(wait=True)
                self._fail(f"the aggregator failed: {type(exc).__name__}: {exc}")
            except Exception as report:  # noqa: BLE001 - the hub may be what failed
                self.progress.warning(f"could not mark the task FAILED: {report}")
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Let go of the reader, the writer and download threads and the round's resources (``run`` does, as it ends)."""
        self.inbox.close()
        self._writer.shutdown(wait=False)
        self._downloads.shutdown(wait=False)
        self.rounds.close()

    def _run(self) -> AggregatorResult:
        d = self.definition
        if self.resume:
            self._restore()
        self.broadcast(m.AGGREGATOR_ONLINE, {"session": uuid.uuid4().hex})
        self._wait_for_quorum()
        if self.client.get_task(self.task_id)["status"] == "CREATED":
            self.client.set_status(self.task_id, "RUNNING", f"quorum of {d.quorum} reached")
        try:
            if d.data.task == "analytics":
                return self._analytics()
            plan = task_kinds.statistics_plan(d) if self.start_round == 1 else []
            meta: dict[str, Any] = {}
            for kind in plan:
                if kind in task_kinds.IMPUTE_REQUESTS and self.fills is None:
                    meta |= self._statistics(kind, meta)
            if "fills" in meta:
                self._set_fills(meta["fills"])
            if d.data.standardize and self.std is None:
                self._standardize()
            if task_kinds.KMEANS_SEED in plan:
                # k-means++ from the participants' (imputed, standardised) seed samples
                assert self.model is not None
                if d.privacy.secure:
                    self.progress.warning(
                        f"privacy mode {d.privacy.mode!r}: the k-means++ seed sample (up to "
                        f"{d.model.params.get('seed_sample', task_kinds.DEFAULT_SEED_SAMPLE) if d.model else 0} rows "
                        "per participant) reaches the aggregator in plaintext, the one exchange secure aggregation "
                        "does not cover; seed_sample: 0 avoids it")
                meta |= self._statistics(task_kinds.KMEANS_SEED, meta)
                self.model.set_centroids(meta["centroids"])  # type: ignore[attr-defined]
                self.global_weights = self.model.get_weights()
                self._weights_blob = None
            converged = False
            for r in range(self.start_round, d.rounds + 1):
                if not self.rounds.budget_allows(r):
                    self.stop_reason = self.rounds.stop_reason
                    self.progress.info(self.stop_reason or f"round {r} is not allowed")
                    break
                metrics = self._round(r)
                self._checkpoint(r)
                # No round-end broadcast: the next request carries this round's metrics
                # ("previous"), which saves every participant a poll per round.
                self._previous = {"round": r, "metrics": metrics}
                if self.on_round:
                    # Called once the round's records are stored: a caller that stops here
                    # resumes after round r.
                    self._finished_rounds.append(functools.partial(self.on_round, r, metrics))
                if self._converged(metrics):
                    self.progress.info(f"converged after round {r}")
                    converged = True
                    break
            self._write_deferred(wait=True)
            return self._finish(converged)
        except AggregationFailed as exc:
            self._write_deferred(wait=True)  # the last completed round stays resumable
            self._fail(str(exc))
            raise

    def _set_fills(self, fills: dict[str, float]) -> None:
        self.fills = fills
        if self._raw_eval is not None:
            from fedpact.data.prepare import impute

            raw = impute(self._raw_eval, fills)
            self._raw_eval = None
            d = task_kinds.prepare(raw, self.definition.data)
            self.eval_data = d.x, task_kinds.targets(d, self.definition.data)
            self.progress.info("imputed the aggregator's evaluation data with the federated fills")

    def _statistics(self, kind: str, meta: dict[str, Any]) -> dict[str, Any]:
        """One statistics request to every ready participant, and the merge of their checked replies.

        A participant whose reply is refused (a wrong shape, an impossible count) is left out of
        this exchange; fewer than ``min_participants`` usable replies fail the task.
        """
        d = self.definition
        request_id = uuid.uuid4().hex
        self.progress.info(f"statistics exchange: {kind}")
        request: dict[str, Any] = {"request_id": request_id, "kind": kind, "seed": d.seed}
        if "edges" in meta:
            request["edges"] = meta["edges"]
        if self.fills:
            request["fills"] = self.fills
        self._stats_kind, self._stats_meta = kind, dict(meta)
        try:
            if self.rounds.secure_statistics and kind in task_kinds.SUMMABLE:
                plan = self.rounds.sum_plan(request_id, sorted(self.ready), task_kinds.sum_layout(kind, d, meta))
                self.broadcast(m.STATS_REQUEST, {**request, "secure": plan.to_dict()}, self._std_tensors())
                totals = self._secure_sum(plan, f"statistics exchange {kind}")
                try:
                    return task_kinds.merge(kind, [totals], d, meta)
                except ValueError as exc:
                    raise AggregationFailed(f"statistics exchange {kind}: {exc}") from exc
            # the standardisation goes along: the k-means++ seed is drawn in the space the model sees
            self.broadcast(m.STATS_REQUEST, request, self._std_tensors())
            replies = self.collect(m.STATS, request_id, set(self.ready), d.round_timeout_s)
        finally:
            self._stats_kind, self._stats_meta = None, {}
        # by participant name, not arrival: the pooled k-means++ sample (and so the start) is reproducible
        usable = [replies[n][0]["statistics"] for n in sorted(replies) if "statistics" in replies[n][0]]
        for name, (r, _) in sorted(replies.items()):
            if r.get("unsupported"):
                self.progress.warning(f"{name} could not answer {kind}: {r.get('error') or 'unsupported'}")
        if len(usable) < d.min_participants:
            raise AggregationFailed(f"statistics exchange {kind}: {len(usable)} usable replies within "
                                    f"{d.round_timeout_s:.0f} s, min_participants is {d.min_participants}")
        try:
            return task_kinds.merge(kind, usable, d, meta)
        except ValueError as exc:
            raise AggregationFailed(f"statistics exchange {kind}: {exc}") from exc

    def _secure_sum(self, plan: SumPlan, what: str) -> dict[str, np.ndarray]:
        """The totals of a secure statistics sum the request just announced; fails the task below
        ``min_participants`` inputs or when the protocol cannot unmask."""
        d = self.definition
        try:
            out = self.rounds.secure_sum(plan, time.monotonic() + d.round_timeout_s, what)
        except RoundFailed as exc:
            raise AggregationFailed("; ".join([exc.reason, *exc.notes])) from exc
        if len(out.contributors) < d.min_participants:
            raise AggregationFailed(f"{what}: the secure sum holds {len(out.contributors)} participants' statistics, "
                                    f"min_participants is {d.min_participants}")
        self.stats_contributors = out.contributors
        self.progress.info(f"{what}: secure sum of {len(out.contributors)} participants' statistics "
                           f"({', '.join(out.contributors)})")
        return out.totals

    def _analytics(self) -> AggregatorResult:
        """An analytics task: the summaries exchanged, the report stored as the task's result."""
        d = self.definition
        meta: dict[str, Any] = {}
        plan = task_kinds.statistics_plan(d)
        if task_kinds.ANALYTICS_RANGE not in plan:  # every column has declared edges
            meta = task_kinds.declared_edges(d)
        for kind in plan:
            meta |= self._statistics(kind, meta)
        report = _jsonable(meta["report"])
        metadata = {"task": self.task_name, "model": None, "data": d.data.model_dump(), "rounds": 0,
                    "converged": True, "standardized": False, "privacy": d.privacy.mode, "analytics": report}
        blob = self.client.upload_blob(self.task_id, encode_weights({}, {"fedpact": json.dumps(metadata)}))
        total = max((float(c.get("count", 0)) + float(c.get("missing", 0)) for c in report.values()), default=0.0)
        contributors = self.stats_contributors if self.stats_contributors is not None else sorted(self.ready)
        model = self.client.register_model(self.task_id, blob=blob, metadata=metadata, contributors=contributors,
                                           rounds=0, metrics={"num_samples": total})
        self.client.set_status(self.task_id, "COMPLETE", f"analytics report of {len(report)} column(s) stored")
        self.broadcast(m.FINISHED, {"model_id": model["id"], "sha256": model["sha256"], "metrics": {}})
        self.progress.info(f"analytics report stored on the hub as model {model['id']}")
        return AggregatorResult(self.task_id, self.task_name, "COMPLETE", 0, model["id"], {"analytics": report})

    def _fail(self, reason: str) -> None:
        status = self.client.get_task(self.task_id)["status"]
        if status == "RUNNING":
            self.client.set_status(self.task_id, "FAILED", reason)
            self.broadcast(m.STOPPED, {"status": "FAILED", "reason": reason})

    def _wait_for_quorum(self) -> None:
        need = self.definition.quorum
        started = time.monotonic()
        shown = -1
        while len(self.ready) < need:
            if len(self.ready) != shown:
                shown = len(self.ready)
                self.progress.waiting("participants", shown, need)
            if self.quorum_timeout_s is not None and time.monotonic() - started > self.quorum_timeout_s:
                raise FedpactError(
                    f"quorum not reached within {self.quorum_timeout_s:.0f} s: {len(self.ready)} of {need} "
                    f"participants ready ({_some(self.ready)}); nothing was changed, "
                    "start the aggregator again when participants are running"
                )
            self._pump(wait=self.poll_wait)
        self.progress.info(f"quorum reached: {_some(self.ready)}")

    def _standardize(self) -> None:
        request_id = uuid.uuid4().hex
        expected = set(self.ready)
        self.progress.info("federated standardisation: collecting per-feature sums")
        request: dict[str, Any] = {"request_id": request_id}
        if self.fills:
            request["fills"] = self.fills
        if self.rounds.secure_statistics:
            plan = self.rounds.sum_plan(request_id, sorted(expected),
                                        task_kinds.sum_layout(task_kinds.MOMENTS, self.definition, {}))
            self.broadcast(m.STATS_REQUEST, {**request, "secure": plan.to_dict()})
            self._set_moments([self._secure_sum(plan, "federated standardisation")])
            return
        self.broadcast(m.STATS_REQUEST, request)
        replies = self.collect(m.STATS, request_id, expected, self.definition.round_timeout_s)
        moments = [t for meta, t in replies.values() if not meta.get("unsupported") and t]
        if len(moments) < self.definition.min_participants:
            raise AggregationFailed(
                f"federated standardisation needs {self.definition.min_participants} participants' feature sums, "
                f"got {len(moments)} within {self.definition.round_timeout_s:.0f} s"
            )
        self._set_moments(moments)

    def _set_moments(self, moments: list[Mapping[str, np.ndarray]]) -> None:
        try:
            mean, std = combine_moments(moments)
            target = combine_target_moments(moments) if self.definition.data.task == "regression" else None
        except ValueError as exc:
            raise AggregationFailed(f"federated standardisation: {exc}") from exc
        self.std = (mean.astype(np.float32), std.astype(np.float32))
        if target is not None:
            self.target_scale = target

    def _select(self, r: int) -> list[str]:
        return select_participants(self.definition, self.rounds.eligible(sorted(self.ready)), r)

    def _round(self, r: int) -> dict[str, Any]:
        d = self.definition
        deadline = time.monotonic() + d.round_timeout_s
        while len(self.ready) < d.min_participants and time.monotonic() < deadline:
            self.progress.waiting(f"participants for round {r}", len(self.ready), d.min_participants)
            self._pump(wait=min(self.poll_wait, max(0.0, deadline - time.monotonic())))
        if len(self.ready) < d.min_participants:
            raise AggregationFailed(
                f"round {r}: only {len(self.ready)} participant(s) available, min_participants is {d.min_participants}"
            )
        selected: list[str] = []
        started_at = now_iso()
        try:
            self.rounds.prepare(r)
            selected = self._select(r)
            plan = RoundPlan(number=r, round_id=uuid.uuid4().hex, selected=selected, started_at=started_at,
                             deadline=deadline)
            t0 = time.monotonic()
            self.rejected, self.clipped = {}, {}
            config = {
                "epochs": d.local_epochs,
                "batch_size": d.batch_size,
                "learning_rate": d.learning_rate,
                "optimizer": d.optimizer,
                "seed": d.seed * 100_003 + r,
                **self.algorithm.participant_config(),
            }
            privacy = self.rounds.config(plan)
            if privacy is not None:
                config["privacy"] = privacy
            self.progress.round_started(r, d.rounds, selected)
            self.broadcast(
                m.ROUND_START,
                {"round_id": plan.round_id, "rounds": d.rounds, "selected": selected, "config": config,
                 "deadline_s": d.round_timeout_s, "weights": self._weights_ref(), "previous": self._previous,
                 **self._fills_meta()},
                self._std_tensors() | self._inline_weights(),
                round=r,
            )
            # The participants have the request: the last round's records, then this one's, are
            # written while they train.
            self._deferred.append(functools.partial(self.client.put_round, self.task_id, r, status="running",
                                                    participants=selected, started_at=started_at, metrics={}))
            self._write_deferred()
            outcome = self.rounds.run(plan)
        except RoundFailed as exc:
            self._write_deferred(wait=True)  # its "running" record first
            self.client.put_round(self.task_id, r, status="failed", participants=selected, started_at=started_at,
                                  finished_at=now_iso(), metrics={}, reason="; ".join([exc.reason, *exc.notes]))
            raise AggregationFailed(exc.reason) from exc
        self._weights_blob = None
        self.contributors.update(outcome.contributors)
        metrics = self._round_metrics(r, outcome.train, outcome.val, outcome.num_samples, len(outcome.contributors),
                                      time.monotonic() - t0)
        metrics["selected"] = len(selected)
        metrics.update(outcome.metrics)
        return self._complete_round(r, started_at, outcome.contributors, metrics, outcome.notes)

    def _complete_round(self, r: int, started_at: str, names: list[str], metrics: dict[str, Any],
                        notes: list[str]) -> dict[str, Any]:
        metrics.update(self.rounds.round_metrics())
        entry = {"round": r, "started_at": started_at, "finished_at": now_iso(), "participants": names,
                 "metrics": metrics, "reason": "; ".join(notes)}
        self.history.append(entry)
        self._deferred.append(functools.partial(self._record, entry))
        self.progress.round_finished(r, self.definition.rounds, metrics)
        return metrics

    def _record(self, entry: dict[str, Any]) -> None:
        self.client.put_round(self.task_id, entry["round"], status="complete", participants=entry["participants"],
                              started_at=entry["started_at"], finished_at=entry["finished_at"],
                              metrics=entry["metrics"], reason=entry.get("reason", ""))

    def _round_metrics(self, r: int, train: dict[str, float], val: dict[str, float], total: int, participants: int,
                       seconds: float) -> dict[str, Any]:
        metrics: dict[str, Any] = dict(train)
        metrics["num_samples"] = total
        metrics["participants"] = participants
        metrics["seconds"] = round(seconds, 4)
        if self.eval_data is not None:
            metrics.update({f"eval_{k}": v for k, v in self._evaluate().items() if k != "num_samples"})
        # Participants evaluate the global model they received before training: that is the
        # previous round's result, so it is added to that round's record.
        if val and self.history and self.history[-1]["round"] == r - 1:
            self._settle(block=True)  # its first record is written before this one
            self.history[-1]["metrics"].update(val)
            self._record(self.history[-1])
        return metrics

    # -- privacy modes: per round ---------------------------------------------------------
    def _evaluate(self) -> dict[str, float]:
        assert self.eval_data is not None
        x, y = self.eval_data
        if self.std is not None:
            x = apply_standardization(x, *self.std)
        assert self.model is not None
        self.model.set_weights(self.global_weights)
        task = self.definition.data.task
        if task == "classification":
            return self.model.evaluate(x, y)
        report = task_kinds.evaluation_report(self.model, x, y, task, target_scale=self.target_scale)
        return task_kinds.combine_reports(task, [report])

    def _converged(self, metrics: dict[str, Any]) -> bool:
        c = self.definition.convergence
        if c is None:
            return False
        value = metrics.get(f"eval_{c.metric}", metrics.get(f"train_{c.metric}"))
        if value is None:
            return False
        better_is_higher = task_kinds.better_is_higher(c.metric)
        if c.target is not None and (value >= c.target if better_is_higher else value <= c.target):
            return True
        if c.patience is not None:
            improved = self.best is None or (
                value > self.best + c.min_delta if better_is_higher else value < self.best - c.min_delta
            )
            if improved:
                self.best, self.since_best = float(value), 0
            else:
                self.since_best += 1
            return self.since_best >= c.patience
        return False

    def _weights_ref(self) -> dict[str, Any]:
        """The current global weights as a blob, uploaded once and shared by the checkpoint,
        the next round's broadcast and the final evaluation."""
        if self._weights_blob is None:
            # Sent from the arrays themselves: no serialised copy of the model is made.
            payload: bytes | Payload = self.rounds.weights_payload() or encode_parts(self.global_weights)
            self._weights_blob = self.client.upload_blob(self.task_id, payload)
            small = len(payload) <= m.INLINE_WEIGHTS_LIMIT
            if small:
                data = payload.tobytes() if isinstance(payload, Payload) else bytes(payload)
                self._weights_bytes = (self._weights_blob["sha256"], data)
            else:
                self._weights_bytes = None
        return self._weights_blob

    def _inline_weights(self) -> dict[str, np.ndarray]:
        """The weights blob's exact bytes as a tensor of the request, when small (messages.INLINE_WEIGHTS).

        Every participant then has the model in the poll answer that wakes it, instead of
        downloading the blob in a request of its own: at 1,000 participants that is 1,000
        requests per round the hub does not serve. The blob is still uploaded (the checkpoint
        names it, and a participant that misses the inline copy downloads it).
        """
        ref = self._weights_ref()
        if self._weights_bytes is None or self._weights_bytes[0] != ref["sha256"]:
            return {}
        return {m.INLINE_WEIGHTS: np.frombuffer(self._weights_bytes[1], dtype=np.uint8)}

    def _std_tensors(self) -> dict[str, np.ndarray]:
        out = {} if self.std is None else {"std.mean": self.std[0], "std.std": self.std[1]}
        if self.target_scale is not None:
            out |= {"std.y_mean": np.array([self.target_scale[0]]), "std.y_std": np.array([self.target_scale[1]])}
        return out

    def _fills_meta(self) -> dict[str, Any]:
        """The fills go out with every request, so a participant that restarted (or joined late) gets them."""
        return {"fills": self.fills} if self.fills else {}

    def _checkpoint(self, r: int) -> None:
        state: dict[str, Any] = {
            "history": self.history,
            "contributors": sorted(self.contributors),
            "best": self.best,
            "since_best": self.since_best,
        }
        if self.std is not None:
            state["standardization"] = {"mean": self.std[0].tolist(), "std": self.std[1].tolist()}
            if self.target_scale is not None:
                state["standardization"]["target"] = list(self.target_scale)
        if self.fills:
            state["fills"] = self.fills
        state.update(self.rounds.checkpoint_state())
        strategy_state = self.algorithm.state()
        if strategy_state:
            # Optimiser moments: a blob of their own, so participants never download them with the model.
            state["strategy"] = {"blob": self.client.upload_blob(self.task_id, encode_weights(strategy_state))}
        # The state is taken now (the next round changes it); the record goes with the round's.
        self._deferred.append(functools.partial(self.client.put_checkpoint, self.task_id, r, self._weights_ref(),
                                                copy.deepcopy(state)))

    def _write_deferred(self, wait: bool = False) -> None:
        """Hand the records made so far to the writer thread; ``wait``: until all are stored."""
        if self._deferred or self._finished_rounds:
            records, self._deferred = self._deferred, []
            self._writes.append((self._writer.submit(_write_all, records), self._finished_rounds))
            self._finished_rounds = []
        self._settle(block=wait)

    def _settle(self, block: bool = False) -> None:
        """Raise a write that failed, here; call ``on_round`` for the rounds whose records are stored."""
        while self._writes and (block or self._writes[0][0].done()):
            written, callbacks = self._writes.popleft()
            written.result()
            for call in callbacks:
                call()

    def _finish(self, converged: bool) -> AggregatorResult:
        d = self.definition
        rounds_done = self.history[-1]["round"] if self.history else self.start_round - 1
        final_metrics = dict(self.history[-1]["metrics"]) if self.history else {}
        # Per-participant hold-out metrics of the final model are not covered by secure
        # aggregation or by local/distributed noise, so those modes do not ask for them.
        p = d.privacy
        if self.ready and self.rounds.evaluates_final_model():
            request_id = uuid.uuid4().hex
            self.progress.info("final evaluation on the participants' hold-out data")
            self.broadcast(m.FINAL_EVALUATE, {"request_id": request_id, "weights": self._weights_ref(),
                                               "previous": self._previous, **self._fills_meta()},
                           self._std_tensors() | self._inline_weights())
            replies = self.collect(m.EVALUATION, request_id, set(self.ready), min(d.round_timeout_s, 120.0))
            val = pooled_val(d.data.task, {n: ({**meta, "val": meta["metrics"]}, t) for n, (meta, t) in replies.items()})
            final_metrics.update(val)
        model_tensors: dict[str, np.ndarray] = dict(self.global_weights)
        if self.std is not None:
            model_tensors.update({"standardization.mean": self.std[0], "standardization.std": self.std[1]})
        if self.target_scale is not None:
            # predictions come back in the target's unit: inference applies this scale
            model_tensors.update({"standardization.y_mean": np.array([self.target_scale[0]], dtype=np.float64),
                                  "standardization.y_std": np.array([self.target_scale[1]], dtype=np.float64)})
        metadata: dict[str, Any] = {}
        if self.eval_data is not None and self.model is not None:
            x, y = self.eval_data
            if self.std is not None:
                x = apply_standardization(x, *self.std)
            self.model.set_weights(self.global_weights)
            if d.data.task == "classification":
                metadata["confusion_matrix"] = self.model.confusion_matrix(x, y).tolist()
            from fedpact.models.preview import build_preview

            preview = build_preview(self.model, x, y, task=d.data.task, label=d.data.label,
                                    target_scale=self.target_scale, seed=d.seed)
            if preview is not None:
                metadata["preview"] = preview
        if self.target_scale is not None:
            metadata["target_scale"] = list(self.target_scale)
        metadata |= {
            "task": self.task_name,
            "model": d.model.model_dump() if d.model else None,
            "data": d.data.model_dump(),
            "rounds": rounds_done,
            "converged": converged,
            "standardized": self.std is not None,
            "privacy": p.mode,
        }
        epsilon = self.rounds.epsilon()
        if epsilon is not None:
            metadata["epsilon"] = epsilon
            metadata["delta"] = p.effective_delta
        std = {k: v for k, v in model_tensors.items() if k.startswith("standardization.")}
        payload: bytes | Payload | None = self.rounds.model_payload(metadata, std)
        if payload is not None:
            metadata["encrypted"] = True
        else:
            payload = encode_parts(model_tensors, {"fedpact": json.dumps(metadata)})
        blob = self.client.upload_blob(self.task_id, payload)
        if self.history:
            self.history[-1]["metrics"].update({k: v for k, v in final_metrics.items() if k.startswith("val_")})
            self._record(self.history[-1])
        model = self.client.register_model(
            self.task_id, blob=blob, metadata=metadata, contributors=sorted(self.contributors),
            rounds=rounds_done, metrics=final_metrics,
        )
        reason = "converged" if converged else self.stop_reason or f"{rounds_done} rounds done"
        self.client.set_status(self.task_id, "COMPLETE", reason)
        self.broadcast(m.FINISHED, {"model_id": model["id"], "sha256": model["sha256"], "metrics": final_metrics,
                                     "previous": self._previous})
        self.progress.info(f"model {model['id']} stored on the hub (sha256 {model['sha256'][:12]}...)")
        return AggregatorResult(self.task_id, self.task_name, "COMPLETE", rounds_done, model["id"], final_metrics,
                                self.history)


def _some(names: Collection[str], shown: int = 10) -> str:
    """A few names and how many more: at a thousand participants the whole list is noise."""
    ordered = sorted(names)
    if not ordered:
        return "none"
    text = ", ".join(ordered[:shown])
    return text + (f" and {len(ordered) - shown} more" if len(ordered) > shown else "")


def _write_all(records: list[Callable[[], Any]]) -> None:
    for record in records:
        record()


def run_aggregator(client: HubClient, task: str | int, **options: Any) -> AggregatorResult:
    """Run ``task``'s aggregator until the task completes, fails or is cancelled."""
    return Aggregator(client, task, **options).run()


def _jsonable(value: Any) -> Any:
    """A report with NaN and infinities (an empty column's figures) as null, which JSON can carry."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
