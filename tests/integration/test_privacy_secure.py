"""`secure` mode against a real hub: what the hub stores and the aggregator receives reveals no update."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from federation_helpers import Runner, digits_definition, start_aggregator, start_participant

from fedpact.algorithms.fedavg import weighted_average
from fedpact.common.tensors import Weights
from fedpact.data.builtin import digits_federation
from fedpact.data.dataset import Dataset
from fedpact.privacy import secagg
from fedpact.privacy.modes import flatten
from fedpact.privacy.quantize import FixedPoint
from fedpact.runtime import AggregationFailed, DataParticipant, Progress, TrainConfig
from fedpact.runtime.aggregator import Aggregator

NAMES = ["bob", "carol", "dave", "erin", "frank"]


@pytest.fixture(scope="module")
def shards() -> tuple[list[Dataset], Dataset]:
    return digits_federation(5, test_fraction=0.25, seed=0)


def secure_definition(**overrides: Any) -> dict[str, Any]:
    d = digits_definition(quorum=5, min_participants=3, rounds=1, round_timeout_s=6,
                          privacy={"mode": "secure", "threshold": 3, "clip": 2.0})
    d.update(overrides)
    return d


class Recording(DataParticipant):
    """Keeps what it trained: the test's ground truth, never sent anywhere in secure mode."""

    def __init__(self, data: Dataset) -> None:
        super().__init__(data)
        self.trained: dict[int, tuple[Weights, Weights, int]] = {}

    def fit(self, weights: Weights, config: TrainConfig, progress: Progress) -> tuple[Weights, int, dict[str, float]]:
        w, n, metrics = super().fit(weights, config, progress)
        self.trained[config.round] = ({k: v.copy() for k, v in weights.items()}, {k: v.copy() for k, v in w.items()}, n)
        return w, n, metrics


class Crash(BaseException):
    """Ends a participant's thread as if its machine had died."""


def crash_at(monkeypatch: pytest.MonkeyPatch, name: str, method: str) -> None:
    original = getattr(secagg.SecAggClient, method)

    def maybe_crash(self: secagg.SecAggClient, *args: Any, **kw: Any) -> Any:
        # in a training round, not in the secure sum of the standardisation moments before it
        if self.name == name and not self.params.round_id.startswith("stats."):
            raise Crash(f"{name} vanished before {method}")
        return original(self, *args, **kw)

    monkeypatch.setattr(secagg.SecAggClient, method, maybe_crash)


class SpyAggregator(Aggregator):
    """Records every payload the aggregator receives, as bytes."""

    received: list[bytes] = []

    def _dispatch(self, msg):  # type: ignore[no-untyped-def]
        data = self.client.message_payload(self.task_id, msg.raw)
        if data is not None:
            SpyAggregator.received.append(data)
        return super()._dispatch(msg)


def run_federation(make_user, shards, definition: dict[str, Any], names=NAMES, aggregator_cls=Aggregator,
                   participant_cls=Recording) -> tuple[Runner, dict[str, Any], Any]:
    parts, test = shards
    alice = make_user("alice")
    users = {n: make_user(n) for n in names}
    alice.create_task("digits", definition)
    run = Runner()
    participants = {n: participant_cls(parts[i]) for i, n in enumerate(names)}
    for n in names:
        start_participant(run, users[n], "digits", participants[n], n)
    run.start("aggregator", lambda: aggregator_cls(alice, "digits", eval_data=test, progress=Progress(quiet=True),
                                                   poll_wait=0.5).run())
    run.threads["aggregator"].join(120)
    return run, participants, alice


def hub_bytes(data_dir: Path) -> list[bytes]:
    """Every message payload in the hub's database and every blob file on its disk."""
    out = []
    with sqlite3.connect(data_dir / "hub.db") as db:
        out += [row[0] for row in db.execute("select payload from messages where payload is not null")]
    out += [p.read_bytes() for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    return out


def test_secure_round_reveals_no_update_and_recovers_the_sum_after_a_dropout(
        make_user, shards, hub, monkeypatch: pytest.MonkeyPatch) -> None:
    crash_at(monkeypatch, "erin", "unmask")  # erin sends its masked input, then vanishes
    SpyAggregator.received = []
    run, participants, alice = run_federation(make_user, shards, secure_definition(), aggregator_cls=SpyAggregator)
    assert "aggregator" not in run.errors, run.errors.get("aggregator")
    assert isinstance(run.errors.get("erin"), Crash)
    result = run.results["aggregator"]
    assert result.status == "COMPLETE"
    (r1,) = alice.list_rounds("digits")
    assert sorted(r1["participants"]) == sorted(NAMES)  # erin's input still counts
    assert "erin dropped out during Unmasking" in r1["reason"]

    # The aggregate equals plain FedAvg of the same trained models within the declared error.
    trained = {n: participants[n].trained[1] for n in NAMES}
    fedavg = weighted_average([trained[n][1] for n in NAMES], [trained[n][2] for n in NAMES])
    final = {k: np.asarray(v) for k, v in _final_model(alice).items() if not k.startswith("standardization.")}
    bound = r1["metrics"]["quantization_error_bound"]
    assert 0 < bound < 1e-6
    for k in fedavg:
        assert np.abs(final[k].astype(np.float64) - fedavg[k].astype(np.float64)).max() <= bound + 1e-6  # + float32

    # No individual update can be read from what the hub stored or the aggregator received.
    stored = hub_bytes(hub.data_dir) + SpyAggregator.received
    assert stored
    for n in NAMES:
        g, w, count = trained[n]
        delta, _ = flatten({k: w[k].astype(np.float64) - g[k].astype(np.float64) for k in g})
        weights_f32 = np.concatenate([w[k].reshape(-1) for k in sorted(w)]).astype(np.float32)
        # 16-byte windows of the trained weights where all four values moved away from the
        # global model (unchanged values are legitimately in the broadcast of the global model)
        moved = np.flatnonzero(np.convolve(np.abs(delta) > 1e-6, np.ones(4), "valid") == 4)
        assert moved.size > 20
        raw = weights_f32.tobytes()
        probes = [raw[4 * i:4 * i + 16] for i in moved[:: max(1, moved.size // 20)]]
        for blob in stored:
            assert not any(p in blob for p in probes), f"{n}'s trained weights appear in a stored payload"
        # the quantised update (as it enters secure aggregation) is uncorrelated with every
        # int32/uint32-sized stored payload of the same length
        fp = FixedPoint(clip=2.0, max_weight=max(t[2] for t in trained.values()), max_summands=5,
                        rounding="deterministic")
        q = fp.encode(delta, count).view(np.int32).astype(np.float64)
        for blob in stored:
            arr = _int32_tensor(blob, q.size)
            if arr is not None:
                r = np.corrcoef(arr, q)[0, 1]
                # Independent vectors of n values correlate with a standard deviation of
                # 1/sqrt(n); 5 of those is a bound chance crosses about once in 10^6 pairs,
                # while a payload carrying the update would correlate near 1.
                assert abs(r) < 5 / np.sqrt(q.size), (n, r, q.size)


def _final_model(alice) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    import tempfile

    from fedpact.common.tensors import decode_weights

    model = alice.list_models("digits")[-1]
    with tempfile.TemporaryDirectory() as d:
        path = alice.download_model(model["id"], d)
        return decode_weights(path.read_bytes())


def _int32_tensor(blob: bytes, length: int) -> np.ndarray | None:
    """The first ``length`` int32 values of a safetensors payload's y tensor, if it has one."""
    from fedpact.common.tensors import TensorFormatError, decode_weights

    try:
        tensors = decode_weights(blob)
    except TensorFormatError:
        return None
    y = tensors.get("y")
    if y is None or y.size < length:
        return None
    return y.reshape(-1)[:length].view(np.int32).astype(np.float64)


def test_below_threshold_the_round_fails_cleanly_and_reveals_nothing(
        make_user, shards, monkeypatch: pytest.MonkeyPatch) -> None:
    crash_at(monkeypatch, "dave", "share_keys")
    crash_at_too = secagg.SecAggClient.share_keys  # already wrapped for dave; wrap again for erin

    def also_erin(self: secagg.SecAggClient, *a: Any, **kw: Any) -> Any:
        if self.name == "erin" and not self.params.round_id.startswith("stats."):
            raise Crash("erin vanished")
        return crash_at_too(self, *a, **kw)

    monkeypatch.setattr(secagg.SecAggClient, "share_keys", also_erin)
    definition = secure_definition(min_participants=4, round_timeout_s=5,
                                   privacy={"mode": "secure", "threshold": 4})
    run, participants, alice = run_federation(make_user, shards, definition)
    err = run.errors.get("aggregator")
    assert isinstance(err, AggregationFailed), run.errors
    text = str(err)
    assert "round 1" in text and "after ShareKeys" in text and "only 3 of 5" in text and "threshold of 4" in text
    assert "nothing about any participant's update was revealed" in text
    task = alice.get_task("digits")
    assert task["status"] == "FAILED" and "threshold of 4" in task["events"][-1]["reason"]
    (r1,) = alice.list_rounds("digits")
    assert r1["status"] == "failed" and "dave dropped out during ShareKeys" in r1["reason"]
    assert alice.list_models("digits") == []


def test_tampered_and_replayed_messages_are_rejected(make_user, shards) -> None:
    parts, test = shards
    alice = make_user("alice")
    users = {n: make_user(n) for n in NAMES}
    alice.create_task("digits", secure_definition(rounds=2, round_timeout_s=6))
    sent: dict[str, list[bytes]] = {}

    def tamper_carol(original):  # type: ignore[no-untyped-def]
        def send(task, *, sender, recipient, kind, round=0, payload=None, headers=None):  # type: ignore[no-untyped-def]
            if kind == "secagg" and payload is not None:
                from fedpact.runtime import messages as m

                meta, tensors = m.unpack(payload)
                if round == 1 and meta.get("step") == "share_keys":
                    import base64

                    ct = bytearray(base64.b64decode(meta["ciphertexts"]["dave"]))
                    ct[30] ^= 0x40  # one bit flipped in transit
                    meta["ciphertexts"]["dave"] = base64.b64encode(bytes(ct)).decode()
                    payload = m.pack(meta, tensors)
            return original(task, sender=sender, recipient=recipient, kind=kind, round=round, payload=payload,
                            headers=headers)
        return send

    def replay_bob(original):  # type: ignore[no-untyped-def]
        def send(task, *, sender, recipient, kind, round=0, payload=None, headers=None):  # type: ignore[no-untyped-def]
            if kind == "secagg" and payload is not None:
                sent.setdefault(str(round), []).append(payload)
                if round == 2 and len(sent["2"]) == 1:  # replay round 1's AdvertiseKeys into round 2
                    original(task, sender=sender, recipient=recipient, kind=kind, round=2, payload=sent["1"][0])
            return original(task, sender=sender, recipient=recipient, kind=kind, round=round, payload=payload,
                            headers=headers)
        return send

    users["carol"].send = tamper_carol(users["carol"].send)  # type: ignore[method-assign]
    users["bob"].send = replay_bob(users["bob"].send)  # type: ignore[method-assign]
    run = Runner()
    events = {n: start_participant(run, users[n], "digits", DataParticipant(parts[i]), n) for i, n in enumerate(NAMES)}
    agg_events = start_aggregator(run, alice, "digits", eval_data=test)
    run.join()
    assert not run.errors, run.errors
    r1, r2 = alice.list_rounds("digits")
    # round 1: dave rejected the tampered share, stopped masking; the others completed without it
    dave_warnings = [e["text"] for e in events["dave"].events if e["event"] == "warning"]
    assert any("from 'carol' to 'dave' failed authentication" in w for w in dave_warnings), dave_warnings
    assert r1["status"] == "complete" and "dave" not in r1["participants"]
    assert "dave dropped out during MaskedInputCollection" in r1["reason"]
    # round 2: bob's replayed round-1 message was rejected, its genuine one accepted
    assert r2["status"] == "complete" and "bob" in r2["participants"]
    assert "replayed into round" in r2["reason"]
    warnings = [e["text"] for e in agg_events.events if e["event"] == "warning"]
    assert any("bob" in w and "replayed" in w for w in warnings), warnings


def test_secure_accuracy_matches_open_on_digits(make_user, shards) -> None:
    parts, test = shards
    accuracy = {}
    for mode in ("open", "secure"):
        alice = make_user(f"alice-{mode}")
        names = [f"{n}-{mode}" for n in ("bob", "carol", "dave")]
        users = {n: make_user(n) for n in names}
        privacy = {"mode": "open"} if mode == "open" else {"mode": "secure", "clip": 4.0}
        alice.create_task(f"digits-{mode}", digits_definition(quorum=3, min_participants=3, rounds=3,
                                                              privacy=privacy))
        run = Runner()
        for i, n in enumerate(names):
            start_participant(run, users[n], f"digits-{mode}", DataParticipant(parts[i]), n)
        start_aggregator(run, alice, f"digits-{mode}", eval_data=test)
        run.join()
        assert not run.errors, run.errors
        accuracy[mode] = run.results["aggregator"].metrics["eval_accuracy"]
        if mode == "secure":
            rounds = alice.list_rounds(f"digits-{mode}")
            assert all("train_loss" in r["metrics"] and "val_accuracy" in r["metrics"] for r in rounds[:-1])
    assert accuracy["open"] > 0.9
    assert abs(accuracy["secure"] - accuracy["open"]) <= 0.005, accuracy
