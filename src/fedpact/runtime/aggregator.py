"""The aggregator: runs a task's rounds through the hub, and only ever sees updates.

It is written so that nothing is lost: every completed round is recorded and checkpointed
on the hub before the next one starts, so a crashed aggregator started again with
``resume=True`` continues after the last completed round, with the same participants
still waiting on the other side.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpact.algorithms.standardize import apply_standardization, combine_moments
from fedpact.algorithms.strategies import get_aggregator
from fedpact.algorithms.validation import validate_update
from fedpact.client.hub import HubClient, HubError
from fedpact.common.definition import TaskDefinition, parse_definition
from fedpact.common.errors import FedpactError, UpdateRejected
from fedpact.common.tensors import Weights, decode_weights, encode_weights
from fedpact.runtime import messages as m
from fedpact.runtime.mailbox import Mailbox, Message
from fedpact.runtime.aggregator_privacy import PrivacyRounds
from fedpact.runtime.outcomes import AggregationFailed, now_iso
from fedpact.runtime.privacy import pack_ciphertexts, unpack_ciphertexts
from fedpact.runtime.progress import Progress



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


class Aggregator(PrivacyRounds):
    """One run of the aggregator for one task (see :func:`run_aggregator`)."""

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
        self.model = build_model(self.definition.model, self.definition.data, seed=self.definition.seed)
        self.global_weights: Weights = self.model.get_weights()
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
        self.rejected: dict[str, str] = {}
        self._weights_blob = None
        self._previous: dict[str, Any] | None = None
        self._downloads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fedpact-download")
        self.mailbox = Mailbox(client, self.task_id, m.AGGREGATOR, from_start=not resume)
        self._last_status_check = 0.0
        self._init_privacy()

    # -- setup -------------------------------------------------------------------------
    def _prepare_eval(self, data: Any) -> tuple[np.ndarray, np.ndarray] | None:
        if data is None:
            return None
        from fedpact.data.schema import conform, encode_labels, ensure_fits

        ensure_fits(data, self.definition.data)
        d = conform(data, self.definition.data)
        return d.x, encode_labels(d.y, self.definition.data.classes)

    def _restore(self) -> None:
        ckpt = self.client.get_checkpoint(self.task_id)
        if ckpt is None:
            self.progress.info("no checkpoint on the hub yet: starting from round 1")
            return
        data = self.client.download_blob(self.task_id, ckpt["blob"]["sha256"])
        state = ckpt["state"]
        if state.get("encrypted"):
            self.enc_weights = unpack_ciphertexts(m.unpack(data)[1])
        else:
            self.global_weights = decode_weights(data)
        self._weights_blob = ckpt["blob"]
        if state.get("standardization"):
            mean, std = state["standardization"]["mean"], state["standardization"]["std"]
            self.std = (np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32))
        self.history = list(state.get("history", []))
        self.contributors = set(state.get("contributors", []))
        self.best = state.get("best")
        self.since_best = int(state.get("since_best", 0))
        self.start_round = int(ckpt["round"]) + 1
        if self.accountant is not None:
            self.accountant.step(len(self.history))
        self.progress.info(f"resumed from the checkpoint of round {ckpt['round']}")

    # -- mailbox -----------------------------------------------------------------------
    def _pump(self, wait: float) -> None:
        batch = self.mailbox.fetch(wait=wait)
        updates = [msg for msg in batch if msg.kind in (m.UPDATE, m.SECAGG) and msg.raw.get("blob")]
        if len(updates) > 1:
            # Fetch the update bodies concurrently: one after another they are most of a round.
            list(self._downloads.map(_prefetch, updates))
        for msg in batch:
            self._dispatch(msg)
        now = time.monotonic()
        if now - self._last_status_check > 5.0:
            self._last_status_check = now
            status = self.client.get_task(self.task_id)["status"]
            if status == "CANCELLED":
                self._broadcast(m.STOPPED, {"status": "CANCELLED", "reason": "cancelled by the creator"})
                raise AggregationFailed(f"task {self.task_name!r} was cancelled")

    def _dispatch(self, msg: Message) -> None:
        name = msg.sender_name
        try:
            meta, tensors = msg.body()
        except (ValueError, TypeError) as exc:
            self.progress.warning(f"ignored a malformed {msg.kind!r} message from {name}: {exc}")
            return
        if msg.kind == m.HELLO:
            if name not in self.ready:
                self.progress.info(f"{name} is ready ({meta.get('num_samples')} samples)")
            self.ready[name] = meta
            self.refused.pop(name, None)
        elif msg.kind == m.REFUSE:
            self.ready.pop(name, None)
            self.refused[name] = list(meta.get("problems", []))
            self.progress.warning(f"{name} cannot take part: {'; '.join(self.refused[name])}")
        elif msg.kind == m.SECAGG:
            self._on_secagg(msg, name, meta, tensors)
        elif self._collector and msg.kind == self._collector.kind:
            c = self._collector
            key = meta.get("round_id") or meta.get("request_id")
            if key != c.key or name not in c.expected or name in c.replies:
                return
            if msg.kind == m.UPDATE:
                try:
                    if self.mode == "encrypted":
                        update = self._check_encrypted_update(meta, tensors)
                    else:
                        update = m.split_prefixed(tensors, "w.")
                        validate_update(self.global_weights, update)
                    n = meta.get("num_samples")
                    if not isinstance(n, int) or n <= 0:
                        raise UpdateRejected(f"num_samples must be a positive integer, got {n!r}")
                except UpdateRejected as exc:
                    self.progress.warning(f"round {msg.round}: rejected the update of {name}: {exc}")
                    self.rejected[name] = str(exc)
                    c.expected.discard(name)
                    self._send_to(name, m.UPDATE_REJECTED, {"reason": str(exc)}, round=msg.round)
                    return
                c.replies[name] = (meta, update)
            else:
                c.replies[name] = (meta, tensors)

    def _collect(self, kind: str, key: str, expected: set[str], timeout: float) -> dict[str, tuple[dict[str, Any], Weights]]:
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

    def _broadcast(self, kind: str, meta: dict[str, Any], tensors: dict[str, np.ndarray] | None = None, round: int = 0) -> None:
        self.client.send(self.task_id, sender=m.AGGREGATOR, recipient=m.BROADCAST, kind=kind, round=round,
                         payload=m.pack(meta, tensors))

    def _send_to(self, name: str, kind: str, meta: dict[str, Any], round: int = 0,
                 tensors: dict[str, np.ndarray] | None = None) -> None:
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
        finally:
            self._downloads.shutdown(wait=False)

    def _run(self) -> AggregatorResult:
        d = self.definition
        if self.resume:
            self._restore()
        self._broadcast(m.AGGREGATOR_ONLINE, {"session": uuid.uuid4().hex})
        self._wait_for_quorum()
        if self.client.get_task(self.task_id)["status"] == "CREATED":
            self.client.set_status(self.task_id, "RUNNING", f"quorum of {d.quorum} reached")
        try:
            if d.data.standardize and self.std is None:
                self._standardize()
            converged = False
            for r in range(self.start_round, d.rounds + 1):
                if self.budget_rounds is not None and r > self.budget_rounds:
                    eps = self.accountant.epsilon()
                    from fedpact.privacy.modes import epsilon_budget

                    self.stop_reason = (
                        f"privacy budget spent: epsilon {eps:.4g} (delta {d.privacy.effective_delta:g}) after "
                        f"{r - 1} round(s); one more round would exceed the epsilon budget of {epsilon_budget(d):g}"
                    )
                    self.progress.info(self.stop_reason)
                    break
                metrics = self._round(r)
                self._checkpoint(r)
                # No round-end broadcast: the next request carries this round's metrics
                # ("previous"), which saves every participant a poll per round.
                self._previous = {"round": r, "metrics": metrics}
                if self.on_round:
                    self.on_round(r, metrics)
                if self._converged(metrics):
                    self.progress.info(f"converged after round {r}")
                    converged = True
                    break
            return self._finish(converged)
        except AggregationFailed as exc:
            self._fail(str(exc))
            raise

    def _fail(self, reason: str) -> None:
        status = self.client.get_task(self.task_id)["status"]
        if status == "RUNNING":
            self.client.set_status(self.task_id, "FAILED", reason)
            self._broadcast(m.STOPPED, {"status": "FAILED", "reason": reason})

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
                    f"participants ready ({', '.join(sorted(self.ready)) or 'none'}); nothing was changed, "
                    "start the aggregator again when participants are running"
                )
            self._pump(wait=self.poll_wait)
        self.progress.info(f"quorum reached: {', '.join(sorted(self.ready))}")

    def _standardize(self) -> None:
        request_id = uuid.uuid4().hex
        expected = set(self.ready)
        self.progress.info("federated standardisation: collecting per-feature sums")
        self._broadcast(m.STATS_REQUEST, {"request_id": request_id})
        replies = self._collect(m.STATS, request_id, expected, self.definition.round_timeout_s)
        moments = [t for meta, t in replies.values() if not meta.get("unsupported") and t]
        if len(moments) < self.definition.min_participants:
            raise AggregationFailed(
                f"federated standardisation needs {self.definition.min_participants} participants' feature sums, "
                f"got {len(moments)} within {self.definition.round_timeout_s:.0f} s"
            )
        mean, std = combine_moments(moments)
        self.std = (mean.astype(np.float32), std.astype(np.float32))

    def _select(self, r: int) -> list[str]:
        d = self.definition
        names = sorted(self.ready)
        if self.mode == "encrypted":
            names = [n for n in names if n in self.he_keyed]  # only key holders can decrypt the model
        k = min(len(names), max(d.min_participants, math.ceil(d.fraction * len(names))))
        rng = np.random.default_rng([d.seed, r])
        return sorted(rng.choice(names, size=k, replace=False).tolist())

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
        if self.mode == "encrypted":
            self._ensure_he_keys(r)
        selected = self._select(r)
        round_id = uuid.uuid4().hex
        started_at, t0 = now_iso(), time.monotonic()
        self.rejected = {}
        self.client.put_round(self.task_id, r, status="running", participants=selected, started_at=started_at, metrics={})
        config = {
            "epochs": d.local_epochs,
            "batch_size": d.batch_size,
            "learning_rate": d.learning_rate,
            "optimizer": d.optimizer,
            "seed": d.seed * 100_003 + r,
            **self.algorithm.participant_config(),
        }
        plan = None
        if self.mode != "open":
            config["privacy"], plan = self._privacy_config(round_id, selected, started_at, r)
        self.progress.round_started(r, d.rounds, selected)
        self._broadcast(
            m.ROUND_START,
            {"round_id": round_id, "rounds": d.rounds, "selected": selected, "config": config,
             "deadline_s": d.round_timeout_s, "weights": self._weights_ref(), "previous": self._previous},
            self._std_tensors(),
            round=r,
        )
        if plan is not None:
            return self._secure_round(r, plan, selected, started_at, t0, deadline)
        replies = self._collect(m.UPDATE, round_id, set(selected), max(0.0, deadline - time.monotonic()))
        missing = sorted(set(selected) - set(replies))
        for name in missing:
            if name not in self.rejected:
                self.ready.pop(name, None)
                self.progress.warning(
                    f"round {r}: {name} did not reply within {d.round_timeout_s:.0f} s; "
                    "left out until it announces itself again"
                )
        if len(replies) < d.min_participants:
            reason = (
                f"round {r}: only {len(replies)} of {len(selected)} selected participants sent a valid update "
                f"within {d.round_timeout_s:.0f} s (min_participants is {d.min_participants})"
            )
            notes = [f"{n} did not reply" for n in missing if n not in self.rejected]
            notes += [f"update of {n} rejected: {why}" for n, why in sorted(self.rejected.items())]
            self.client.put_round(self.task_id, r, status="failed", participants=selected, started_at=started_at,
                                  finished_at=now_iso(), metrics={}, reason="; ".join([reason, *notes]))
            raise AggregationFailed(reason)
        names = sorted(replies)
        updates = [(replies[n][1], int(replies[n][0]["num_samples"])) for n in names]
        if self.mode == "dp":
            self.global_weights = self._aggregate_dp([u for u, _ in updates], len(selected))
        elif self.mode == "encrypted":
            self._aggregate_encrypted(updates)
        else:
            self.global_weights = self.algorithm.aggregate(self.global_weights, updates)
        self._weights_blob = None
        self.contributors.update(names)
        train = _weighted({n: (meta["num_samples"], meta.get("train", {})) for n, (meta, _) in replies.items()}, "train_")
        val = _weighted({n: (meta["num_samples"], meta.get("val", {})) for n, (meta, _) in replies.items()}, "val_")
        total = sum(int(meta["num_samples"]) for meta, _ in replies.values())
        metrics = self._round_metrics(r, train, val, total, len(replies), time.monotonic() - t0)
        metrics["selected"] = len(selected)
        notes = [f"{n} did not reply within {d.round_timeout_s:.0f} s" for n in missing if n not in self.rejected]
        notes += [f"update of {n} rejected: {why}" for n, why in sorted(self.rejected.items())]
        return self._complete_round(r, started_at, names, metrics, notes)

    def _complete_round(self, r: int, started_at: str, names: list[str], metrics: dict[str, Any],
                        notes: list[str]) -> dict[str, Any]:
        if self.accountant is not None:
            self.accountant.step()
            metrics["epsilon"] = self.accountant.epsilon()
            metrics["delta"] = self.definition.privacy.effective_delta
            metrics["noise_multiplier"] = self.noise_multiplier
        entry = {"round": r, "started_at": started_at, "finished_at": now_iso(), "participants": names,
                 "metrics": metrics, "reason": "; ".join(notes)}
        self.history.append(entry)
        self._record(entry)
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
            self.history[-1]["metrics"].update(val)
            self._record(self.history[-1])
        return metrics

    # -- privacy modes: per round ---------------------------------------------------------
    def _evaluate(self) -> dict[str, float]:
        assert self.eval_data is not None
        x, y = self.eval_data
        if self.std is not None:
            x = apply_standardization(x, *self.std)
        self.model.set_weights(self.global_weights)
        return self.model.evaluate(x, y)

    def _converged(self, metrics: dict[str, Any]) -> bool:
        c = self.definition.convergence
        if c is None:
            return False
        value = metrics.get(f"eval_{c.metric}", metrics.get(f"train_{c.metric}"))
        if value is None:
            return False
        better_is_higher = c.metric == "accuracy"
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
            if self.enc_weights is not None:
                payload = pack_ciphertexts(self.enc_weights, self._enc_info())
            else:
                payload = encode_weights(self.global_weights)
            self._weights_blob = self.client.upload_blob(self.task_id, payload)
        return self._weights_blob

    def _std_tensors(self) -> dict[str, np.ndarray]:
        return {} if self.std is None else {"std.mean": self.std[0], "std.std": self.std[1]}

    def _checkpoint(self, r: int) -> None:
        state: dict[str, Any] = {
            "history": self.history,
            "contributors": sorted(self.contributors),
            "best": self.best,
            "since_best": self.since_best,
        }
        if self.std is not None:
            state["standardization"] = {"mean": self.std[0].tolist(), "std": self.std[1].tolist()}
        if self.enc_weights is not None:
            state["encrypted"] = True
        self.client.put_checkpoint(self.task_id, r, self._weights_ref(), state)

    def _finish(self, converged: bool) -> AggregatorResult:
        d = self.definition
        rounds_done = self.history[-1]["round"] if self.history else self.start_round - 1
        final_metrics = dict(self.history[-1]["metrics"]) if self.history else {}
        # Per-participant hold-out metrics of the final model are not covered by secure
        # aggregation or by local/distributed noise, so those modes do not ask for them.
        p = d.privacy
        evaluate_final = p.mode in ("open", "encrypted") or (p.mode == "dp" and p.effective_placement == "central")
        if self.ready and evaluate_final:
            request_id = uuid.uuid4().hex
            self.progress.info("final evaluation on the participants' hold-out data")
            self._broadcast(m.FINAL_EVALUATE, {"request_id": request_id, "weights": self._weights_ref(),
                                               "previous": self._previous}, self._std_tensors())
            replies = self._collect(m.EVALUATION, request_id, set(self.ready), min(d.round_timeout_s, 120.0))
            val = _weighted({n: (meta.get("num_samples", 0), meta.get("metrics", {})) for n, (meta, _) in replies.items()}, "val_")
            final_metrics.update(val)
        model_tensors: dict[str, np.ndarray] = dict(self.global_weights)
        if self.std is not None:
            model_tensors.update({"standardization.mean": self.std[0], "standardization.std": self.std[1]})
        metadata: dict[str, Any] = {}
        if self.eval_data is not None:
            x, y = self.eval_data
            if self.std is not None:
                x = apply_standardization(x, *self.std)
            self.model.set_weights(self.global_weights)
            metadata["confusion_matrix"] = self.model.confusion_matrix(x, y).tolist()
        metadata |= {
            "task": self.task_name,
            "model": d.model.model_dump(),
            "data": d.data.model_dump(),
            "rounds": rounds_done,
            "converged": converged,
            "standardized": self.std is not None,
            "privacy": p.mode,
        }
        if self.accountant is not None:
            metadata["epsilon"] = self.accountant.epsilon()
            metadata["delta"] = p.effective_delta
        if self.enc_weights is not None:
            # encrypted: the model stays encrypted on the hub; participants decrypt their copy
            metadata["encrypted"] = True
            std = {k: v for k, v in model_tensors.items() if k.startswith("standardization.")}
            payload = pack_ciphertexts(self.enc_weights, {**self._enc_info(), "metadata": metadata}, std)
        else:
            payload = encode_weights(model_tensors, {"fedpact": json.dumps(metadata)})
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
        self._broadcast(m.FINISHED, {"model_id": model["id"], "sha256": model["sha256"], "metrics": final_metrics,
                                     "previous": self._previous})
        self.progress.info(f"model {model['id']} stored on the hub (sha256 {model['sha256'][:12]}...)")
        return AggregatorResult(self.task_id, self.task_name, "COMPLETE", rounds_done, model["id"], final_metrics,
                                self.history)


def _prefetch(msg: Message) -> None:
    try:
        msg.body()
    except Exception:  # noqa: BLE001 - reported when the message is dispatched
        pass


def _weighted(per_participant: dict[str, tuple[Any, dict[str, Any]]], prefix: str) -> dict[str, float]:
    """Sample-weighted mean of each metric the participants reported."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for n_samples, metrics in per_participant.values():
        for k, v in metrics.items():
            if k == "num_samples" or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            w = float(metrics.get("num_samples", n_samples) or n_samples or 0)
            sums[k] = sums.get(k, 0.0) + w * float(v)
            weights[k] = weights.get(k, 0.0) + w
    return {prefix + k: sums[k] / weights[k] for k in sums if weights[k] > 0}


def run_aggregator(client: HubClient, task: str | int, **options: Any) -> AggregatorResult:
    """Run ``task``'s aggregator until the task completes, fails or is cancelled."""
    return Aggregator(client, task, **options).run()
