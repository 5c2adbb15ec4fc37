"""The participant side: train on local data when the aggregator asks, never share the data.

Two ways in. Feed a :class:`DataParticipant` with a dataset and the built-in model named by
the task trains on it; or subclass :class:`Participant` and bring your own training loop,
as long as it exchanges weights as named NumPy arrays.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedpact.client.hub import BlobGone, HubClient
from fedpact.common.definition import TaskDefinition, parse_definition
from fedpact.common.errors import DataSchemaError, FedpactError
from fedpact.common.tensors import Weights
from fedpact.runtime import messages as m
from fedpact.runtime.mailbox import Mailbox, Message
from fedpact.runtime.privacy import decrypted_model_file
from fedpact.runtime.progress import Progress
from fedpact.runtime.rounds.participant import HubParticipantTransport, ParticipantRound, participant_round_for

TERMINAL = {"COMPLETE", "FAILED", "CANCELLED"}
#: Messages that make an earlier request in the same batch obsolete.
_SUPERSEDING = {m.ROUND_START, m.FINAL_EVALUATE, m.FINISHED, m.STOPPED}
_REQUESTS = {m.ROUND_START, m.FINAL_EVALUATE, m.STATS_REQUEST}


class TaskEnded(FedpactError):
    """The task was cancelled or failed while this process took part."""

    def __init__(self, status: str, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(f"task {status.lower()}: {reason}" if reason else f"task {status.lower()}")


@dataclass(frozen=True)
class TrainConfig:
    """What the aggregator asks of one round of local training."""

    round: int
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    seed: int
    prox_mu: float = 0.0


class Participant:
    """Base class: subclass and implement ``num_samples``, ``fit`` and optionally ``evaluate``.

    ``fit`` receives the global weights and returns the locally trained weights, the
    number of samples they were trained on (the FedAvg weight) and training metrics.
    """

    definition: TaskDefinition

    def setup(self, definition: TaskDefinition) -> None:
        """Called once with the task's definition before anything else; raise to refuse."""
        self.definition = definition

    def num_samples(self) -> int:
        raise NotImplementedError

    def fit(self, weights: Weights, config: TrainConfig, progress: Progress) -> tuple[Weights, int, dict[str, float]]:
        raise NotImplementedError

    def evaluate(self, weights: Weights) -> dict[str, float]:
        return {}

    def local_moments(self) -> dict[str, np.ndarray] | None:
        """Per-feature sums for federated standardisation; None if not supported."""
        return None

    def set_standardization(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Receive the global feature mean and deviation (only if the task asks for it)."""

    def set_target_scale(self, mean: float, std: float) -> None:
        """Receive the global regression target mean and deviation (standardised regression tasks)."""

    def set_fills(self, fills: Mapping[str, float]) -> None:
        """Receive the federated imputation values (``missing: impute``) before round 1."""

    def answer_statistics(self, kind: str, meta: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
        """This site's reply to one statistics request (:mod:`fedpact.runtime.task_kinds`); None if unsupported."""
        return None


class DataParticipant(Participant):
    """Trains the task's built-in model on a local :class:`~fedpact.data.Dataset`."""

    def __init__(self, data: Any, *, threads: int | None = None) -> None:
        self.data = data
        self.threads = threads
        self._std: tuple[np.ndarray, np.ndarray] | None = None

    def setup(self, definition: TaskDefinition) -> None:
        from fedpact.data.schema import check_dataset, conform, encode_labels
        from fedpact.models.registry import build_model

        super().setup(definition)
        schema = definition.data
        problems = check_dataset(self.data, schema)
        if problems:
            raise DataSchemaError(problems)
        data = conform(self.data, schema)
        self.model = build_model(definition.model, schema, seed=definition.seed)
        if self.threads:
            _set_torch_threads(self.threads)
        train, test = data.split(definition.evaluation.holdout, seed=definition.seed)
        self._raw_train_x, self._raw_test_x = train.x, test.x
        self.train_x, self.test_x = train.x, test.x
        self.train_y = encode_labels(train.y, schema.classes)
        self.test_y = encode_labels(test.y, schema.classes)

    def num_samples(self) -> int:
        return int(len(self.train_y))

    def local_moments(self) -> dict[str, np.ndarray]:
        from fedpact.algorithms.standardize import local_moments

        return local_moments(self._raw_train_x)

    def set_standardization(self, mean: np.ndarray, std: np.ndarray) -> None:
        from fedpact.algorithms.standardize import apply_standardization

        if self._std is not None and np.array_equal(self._std[0], mean) and np.array_equal(self._std[1], std):
            return
        self._std = (mean, std)
        self.train_x = apply_standardization(self._raw_train_x, mean, std)
        self.test_x = apply_standardization(self._raw_test_x, mean, std)

    def fit(self, weights: Weights, config: TrainConfig, progress: Progress) -> tuple[Weights, int, dict[str, float]]:
        self.model.set_weights(weights)
        batches = max(1, -(-self.num_samples() // config.batch_size))
        progress.training_started(config.round, config.epochs, batches)
        metrics = self.model.fit(
            self.train_x,
            self.train_y,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.learning_rate,
            optimizer=config.optimizer,
            seed=config.seed,
            prox_mu=config.prox_mu,
            on_epoch=lambda e, mt: progress.epoch(config.round, e, config.epochs, mt),
            on_batch=lambda done, total: progress.batch(config.round, 0, done, total),
        )
        progress.training_finished(config.round)
        return self.model.get_weights(), self.num_samples(), metrics

    def evaluate(self, weights: Weights) -> dict[str, float]:
        if len(self.test_y) == 0:
            return {}
        self.model.set_weights(weights)
        return self.model.evaluate(self.test_x, self.test_y)


def _set_torch_threads(n: int) -> None:
    import sys

    # Only a torch model loads torch; a NumPy participant must not import it for a setting.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


@dataclass
class ParticipantResult:
    task_id: int
    task_name: str
    status: str
    rounds_trained: list[int] = field(default_factory=list)
    model_id: int | None = None
    model_path: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def run_participant(
    client: HubClient,
    task: str | int,
    participant: Participant,
    *,
    progress: Progress | None = None,
    poll_wait: float = 10.0,
    model_dir: str | Path | None = None,
    idle_timeout_s: float | None = None,
) -> ParticipantResult:
    """Take part in ``task`` until it completes; returns what was trained and stored.

    Checks the local data against the task's schema *before* joining, so a data owner
    whose data does not fit learns exactly why and is never counted in a round.
    """
    progress = progress or Progress()
    me = (client.user or client.me())["name"]
    info = client.get_task(task)
    tid, tname = int(info["id"]), info["name"]
    if info["status"] in TERMINAL:
        raise FedpactError(f"task {tname!r} is {info['status']}; there is nothing left to train")
    definition = parse_definition(info["definition"])
    participant.setup(definition)
    if me not in info.get("participants", []):
        if client.join(tid).get("status") == "PENDING":
            progress.info(f"asked to join task {tname!r}; waiting for its creator to approve")
            _wait_for_admission(client, tid, tname, poll_wait, idle_timeout_s)
        progress.info(f"joined task {tname!r}")
    address = m.participant_address(me)
    mailbox = Mailbox(client, tid, address, from_start=False)
    result = ParticipantResult(tid, tname, "RUNNING")
    handled: set[str] = set()
    last_activity = time.monotonic()
    transport = HubParticipantTransport(client, tid, address)
    priv = participant_round_for(transport, tid, me, definition, progress)

    def hello() -> None:
        client.send(tid, sender=address, recipient=m.AGGREGATOR, kind=m.HELLO,
                    payload=m.pack({"num_samples": participant.num_samples(), **priv.hello_fields()}))

    shown: set[int] = set()
    hello()
    progress.info(f"ready for task {tname!r} with {participant.num_samples()} training samples; waiting for the aggregator")
    while True:
        batch = mailbox.fetch(wait=poll_wait)
        if not batch:
            # The poll answer carries the task's status: no GET /tasks (whose answer lists
            # every member) per empty poll, which cost the hub O(N^2) per poll period.
            status = mailbox.task_status or ""
            if status in TERMINAL:
                return _ended_without_notice(client, tid, status, result, model_dir, progress, priv)
            if idle_timeout_s is not None and time.monotonic() - last_activity > idle_timeout_s:
                raise FedpactError(f"no word from the aggregator of {tname!r} for {idle_timeout_s:.0f} s; giving up")
            continue
        last_activity = time.monotonic()
        said_hello = False
        for i, msg in enumerate(batch):
            later = {x.kind for x in batch[i + 1 :]}
            if msg.kind in _REQUESTS and later & _SUPERSEDING:
                continue
            try:
                if msg.kind in (m.ROUND_START, m.FINAL_EVALUATE, m.FINISHED):
                    _show_previous(msg, shown, progress, definition.rounds)
                if msg.kind == m.AGGREGATOR_ONLINE and not said_hello:
                    hello()
                    said_hello = True
                elif msg.kind == m.STATS_REQUEST:
                    _answer_stats(client, tid, address, participant, msg, handled, priv)
                elif msg.kind == m.ROUND_START:
                    _take_inline_weights(transport, msg)
                    _train_round(client, tid, address, participant, msg, handled, progress, me, result, priv)
                elif msg.kind in (m.SECAGG, m.HE_KEY_REQUEST, m.HE_KEY):
                    deferred = priv.on_message(msg)
                    if deferred is not None:
                        _train_round(client, tid, address, participant, deferred, handled, progress, me, result, priv)
                elif msg.kind == m.UPDATE_REJECTED:
                    meta, _ = msg.body()
                    progress.warning(f"round {msg.round}: the aggregator rejected this update: {meta.get('reason')}")
                elif msg.kind == m.FINAL_EVALUATE:
                    _take_inline_weights(transport, msg)
                    _final_evaluation(client, tid, address, participant, msg, handled, priv)
                elif msg.kind == m.FINISHED:
                    mailbox.ack()
                    meta, _ = msg.body()
                    return _finish(client, meta, result, model_dir, progress, priv)
                elif msg.kind == m.STOPPED:
                    mailbox.ack()
                    meta, _ = msg.body()
                    raise TaskEnded(meta.get("status", "FAILED"), meta.get("reason", ""))
            except BlobGone as exc:
                # A finished round's request read late: the hub reclaimed what it names (hub.blobgc).
                progress.warning(f"skipped a {msg.kind!r} message of round {msg.round}: its data is no longer on "
                                 f"the hub ({exc.detail}); the round it belongs to is over")


def _take_inline_weights(transport: HubParticipantTransport, msg: Message) -> None:
    """Hand the transport the model a request carries inline, so it is not downloaded again.

    Bytes that do not hash to the blob the request names are ignored (the blob is then
    downloaded): the inline copy is a shortcut, never a second source of truth.
    """
    try:
        meta, tensors = msg.body()
    except ValueError:
        return  # the handler reports the malformed request
    inline = tensors.get(m.INLINE_WEIGHTS)
    ref = meta.get("weights")
    if inline is not None and isinstance(ref, dict) and isinstance(ref.get("sha256"), str):
        transport.offer(ref["sha256"], np.ascontiguousarray(inline, dtype=np.uint8).tobytes())


def _wait_for_admission(client: HubClient, tid: int, tname: str, poll_wait: float, idle_timeout_s: float | None) -> None:
    """Block until the creator approves our join request; a refusal or an ended task is an error."""
    started = time.monotonic()
    while True:
        info = client.get_task(tid)
        standing = info.get("membership")
        if standing == "ADMITTED":
            return
        if standing in ("DECLINED", "REMOVED"):
            what = "declined your request to join" if standing == "DECLINED" else "removed you from it"
            raise FedpactError(f"the creator of task {tname!r} {what}; ask them to approve you")
        if info["status"] in TERMINAL:
            raise FedpactError(f"task {tname!r} ended ({info['status']}) before its creator approved your request")
        if idle_timeout_s is not None and time.monotonic() - started > idle_timeout_s:
            raise FedpactError(f"the creator of {tname!r} did not approve your request within {idle_timeout_s:.0f} s")
        time.sleep(min(max(poll_wait, 0.2), 1.0))  # a GET a second: approval shows promptly


def _show_previous(msg: Message, shown: set[int], progress: Progress, rounds: int) -> None:
    """Report the round the aggregator just finished: its next request carries the metrics."""
    previous = msg.body()[0].get("previous")
    if previous and int(previous["round"]) not in shown:
        shown.add(int(previous["round"]))
        progress.round_finished(int(previous["round"]), rounds, previous.get("metrics", {}))


def _answer_stats(client: HubClient, tid: int, address: str, p: Participant, msg: Message, handled: set[str],
                  priv: ParticipantRound) -> None:
    meta, tensors = msg.body()
    key = f"stats:{meta.get('request_id')}"
    if key in handled:
        return
    _apply_fills(p, meta)
    _apply_standardization(p, tensors)
    kind = meta.get("kind")
    try:
        reply = p.answer_statistics(str(kind), meta) if kind else p.local_moments()
    except (ValueError, TypeError, KeyError) as exc:
        # The aggregator goes on without this site; it learns why.
        payload = m.pack({"request_id": meta.get("request_id"), "unsupported": True, "error": str(exc)[:500]})
    else:
        if reply is not None and meta.get("secure"):
            # secure aggregation of the statistics: only the masked sum reaches the aggregator
            handled.add(key)
            try:
                priv.join_secure_sum(meta, reply)
                return
            except (ValueError, RuntimeError) as exc:  # a plan or statistic that cannot be summed
                priv.progress.warning(f"cannot take part in the secure sum of {kind or 'moments'}: {exc}")
                reply = None
        if reply is None:
            payload = m.pack({"request_id": meta.get("request_id"), "unsupported": True})
        else:
            payload = m.pack({"request_id": meta.get("request_id")}, reply)
    client.send(tid, sender=address, recipient=m.AGGREGATOR, kind=m.STATS, payload=payload)
    handled.add(key)


def _apply_fills(p: Participant, meta: Mapping[str, Any]) -> None:
    fills = meta.get("fills")
    if isinstance(fills, dict) and fills:
        p.set_fills(fills)


def _apply_standardization(p: Participant, tensors: Mapping[str, np.ndarray]) -> None:
    std = m.split_prefixed(tensors, "std.")
    if "mean" in std:
        p.set_standardization(std["mean"], std["std"])
    if "y_mean" in std:
        p.set_target_scale(float(std["y_mean"].reshape(-1)[0]), float(std["y_std"].reshape(-1)[0]))


def _train_round(
    client: HubClient,
    tid: int,
    address: str,
    p: Participant,
    msg: Message,
    handled: set[str],
    progress: Progress,
    me: str,
    result: ParticipantResult,
    priv: ParticipantRound,
) -> None:
    meta, tensors = msg.body()
    round_id = str(meta.get("round_id"))
    if me not in meta.get("selected", []) or f"round:{round_id}" in handled:
        return
    if priv.needs_keys_first(meta, msg):
        return
    handled.add(f"round:{round_id}")
    weights = priv.global_weights(meta)
    _apply_fills(p, meta)
    _apply_standardization(p, tensors)
    c = meta["config"]
    cfg = TrainConfig(
        round=msg.round,
        epochs=int(c["epochs"]),
        batch_size=int(c["batch_size"]),
        learning_rate=float(c["learning_rate"]),
        optimizer=str(c["optimizer"]),
        seed=int(c["seed"]),
        prox_mu=float(c.get("prox_mu", 0.0)),
    )
    progress.round_started(msg.round, int(meta.get("rounds", 0)), meta.get("selected", []))
    started = time.monotonic()
    val = p.evaluate(weights)
    new_weights, n, train_metrics = p.fit(weights, cfg, progress)
    train = {k: float(v) for k, v in train_metrics.items()}
    val_f = {k: float(v) for k, v in val.items()}
    result.rounds_trained.append(msg.round)
    outcome = priv.contribution(meta, msg.round, weights, new_weights, int(n), train, val_f)
    if outcome is None:
        return  # secure aggregation: the masked input goes out when the aggregator asks for it
    overrides, to_send = outcome
    reply = {
        "round_id": round_id,
        "num_samples": int(n),
        "train": train,
        "val": val_f,
        "train_seconds": time.monotonic() - started,
        **overrides,
    }
    # Streamed from the arrays themselves: no packed copy of the model is made.
    client.send(tid, sender=address, recipient=m.AGGREGATOR, kind=m.UPDATE, round=msg.round,
                payload=m.pack_parts(reply, to_send))


def _final_evaluation(client: HubClient, tid: int, address: str, p: Participant, msg: Message, handled: set[str],
                      priv: ParticipantRound) -> None:
    meta, tensors = msg.body()
    key = f"final:{meta.get('request_id')}"
    if key in handled:
        return
    handled.add(key)
    _apply_fills(p, meta)
    _apply_standardization(p, tensors)
    metrics = p.evaluate(priv.global_weights(meta))
    client.send(tid, sender=address, recipient=m.AGGREGATOR, kind=m.EVALUATION,
                payload=m.pack({"request_id": meta.get("request_id"), "metrics": metrics,
                                "num_samples": int(metrics.get("num_samples", 0))}))


def _finish(
    client: HubClient, meta: dict[str, Any], result: ParticipantResult, model_dir: str | Path | None, progress: Progress,
    priv: ParticipantRound | None = None,
) -> ParticipantResult:
    result.status = "COMPLETE"
    result.model_id = meta.get("model_id")
    result.metrics = meta.get("metrics", {})
    if model_dir is not None and result.model_id is not None:
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        result.model_path = client.download_model(result.model_id, model_dir)
        if priv is not None and priv.he is not None:
            # encrypted mode: the hub holds the model encrypted; only participants can read it
            encrypted = result.model_path.read_bytes()
            result.model_path.write_bytes(decrypted_model_file(encrypted, priv.he))
            progress.info("decrypted the final model with the task's key")
        progress.info(f"final model saved to {result.model_path}")
    progress.info(f"task {result.task_name!r} complete")
    return result


def _ended_without_notice(
    client: HubClient, tid: int, status: str, result: ParticipantResult, model_dir: str | Path | None, progress: Progress,
    priv: ParticipantRound | None = None,
) -> ParticipantResult:
    """The task ended while we were not listening (e.g. we joined after the last round)."""
    if status != "COMPLETE":
        events = client.get_task(tid).get("events", [])
        raise TaskEnded(status, events[-1].get("reason", "") if events else "")
    models = client.list_models(tid)
    if not models:
        result.status = status
        return result
    newest = models[-1]
    return _finish(client, {"model_id": newest["id"], "metrics": newest.get("metrics", {})}, result, model_dir, progress,
                   priv)
