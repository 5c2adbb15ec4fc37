"""Analytics, k-means and the statistics before round 1 under ``secure``, through a real hub.

The aggregator must learn only sums across sites: the analytics summaries, the
standardisation moments and the imputation summaries go through the same SecAgg protocol
as the model updates (masked vectors, dropout recovery), and the figures equal those of
the ``open`` run up to quantisation.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from federation_helpers import Runner, start_participant
from sklearn.datasets import load_iris

import fedpact
from fedpact.common.definition import parse_definition
from fedpact.data import Dataset
from fedpact.privacy import secagg
from fedpact.runtime import Events, task_kinds
from fedpact.runtime import messages as m
from fedpact.runtime.aggregator import Aggregator
from fedpact.runtime.kind_participant import TaskParticipant

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
EDGES = {"sepal_length": [4.0, 5.0, 6.0, 7.0, 8.0], "sepal_width": [2.0, 2.5, 3.0, 3.5, 4.0, 4.5],
         "petal_length": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], "petal_width": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]}
SITES = ["bob", "carol", "dave", "erin"]


def _analytics(mode: str) -> dict[str, Any]:
    return {"quorum": 4, "min_participants": 3, "round_timeout_s": 8, "admission": "open",
            "data": {"task": "analytics", "features": COLUMNS},
            "analytics": {"edges": EDGES, "quantiles": [0.1, 0.5, 0.9]}, "privacy": {"mode": mode}}


def _sites() -> list[Dataset]:
    x = load_iris().data.copy()
    x[::17, 1] = np.nan  # gaps: counted as missing
    x[5, 0] = 3.5  # below the first declared edge of sepal_length
    return [Dataset.unlabelled(x[i], COLUMNS) for i in np.array_split(np.random.default_rng(4).permutation(150), 4)]


class Spy(Aggregator):
    """Keeps every message body the aggregator receives, with its kind."""

    received: list[tuple[str, bytes]] = []

    def _dispatch(self, msg):  # type: ignore[no-untyped-def]
        data = self.client.message_payload(self.task_id, msg.raw)
        if data is not None:
            Spy.received.append((msg.kind, data))
        return super()._dispatch(msg)


class Crash(BaseException):
    """Ends a participant's thread as if its machine had died."""


def _federate(make_user, name: str, definition: dict[str, Any], parts: list[Dataset], aggregator_cls=Aggregator,
              suffix: str = "", **kw: Any) -> tuple[Any, Runner]:
    alice = make_user("alice" + suffix)
    users = {n: make_user(n + suffix) for n in SITES[: len(parts)]}
    alice.create_task(name, definition)
    run = Runner()
    for (n, user), data in zip(users.items(), parts):
        start_participant(run, user, name, TaskParticipant(data), n)
    events = Events()
    run.results["events"] = events
    run.start("aggregator", lambda: aggregator_cls(alice, name, progress=events, poll_wait=0.5, **kw).run())
    run.threads["aggregator"].join(120)
    assert not run.threads["aggregator"].is_alive()
    return alice, run


def test_secure_analytics_equals_open_after_a_dropout_and_the_aggregator_sees_only_masked_sums(
        hub, make_user, monkeypatch: pytest.MonkeyPatch) -> None:
    sites = _sites()
    original = secagg.SecAggClient.masked_input

    def erin_vanishes(self: secagg.SecAggClient, *a: Any, **kw: Any) -> Any:
        if self.name == "erin":
            raise Crash("erin vanished after sharing its keys")
        return original(self, *a, **kw)

    monkeypatch.setattr(secagg.SecAggClient, "masked_input", erin_vanishes)
    Spy.received = []
    alice, run = _federate(make_user, "iris-secure", _analytics("secure"), sites, aggregator_cls=Spy)
    assert "aggregator" not in run.errors, run.errors.get("aggregator")
    assert isinstance(run.errors.get("erin"), Crash)
    secure = fedpact.Client(hub.url, token=alice.token).analytics_report("iris-secure")
    model = alice.list_models("iris-secure")[0]
    assert sorted(model["contributors"]) == ["bob", "carol", "dave"]  # erin's mask was removed, its data is not in

    # the same figures as an open run over the three sites whose input counts
    d_open = parse_definition(_analytics("open"))
    expected = task_kinds.analytics_report(sites[:3], d_open)
    pooled = np.concatenate([s.x for s in sites[:3]])
    for j, col in enumerate(COLUMNS):
        s, o = secure[col], expected[col]
        assert s["count"] == o["count"] and s["missing"] == o["missing"]
        assert s["histogram"] == o["histogram"] and s["quantiles"] == pytest.approx(o["quantiles"], rel=1e-12)
        assert s["mean"] == pytest.approx(o["mean"], rel=1e-12) and s["variance"] == pytest.approx(o["variance"], rel=1e-9)
        # no site's extremes: the range is the outermost non-empty bins, open beyond the declared edges
        values = pooled[:, j][~np.isnan(pooled[:, j])]
        assert s["range_from"] == "histogram" and o["range_from"] == "data"
        lo = None if values.min() < EDGES[col][0] else s["min"]
        assert s["min"] == lo and (lo is None or lo <= values.min()) and s["max"] >= values.max()
    assert secure["sepal_length"]["min"] is None  # 3.5 lies below the first edge: unknown, not a site's figure

    # what reached the aggregator: secure-aggregation messages and hellos, never a summary
    kinds = {kind for kind, _ in Spy.received}
    assert m.STATS not in kinds and kinds <= {m.HELLO, m.SECAGG}, kinds
    vectors = []
    for _, data in Spy.received:
        meta, tensors = m.unpack(data)
        assert set(tensors) <= {"y"}, sorted(tensors)
        assert "min" not in meta and "max" not in meta and "sum" not in meta
        if "y" in tensors:
            vectors.append(tensors["y"].view(np.uint64))
    assert len(vectors) == 3  # bob, carol and dave's masked inputs
    # no site's own figures in anything the hub stored or the aggregator received
    stored = _hub_bytes(hub.data_dir) + [data for _, data in Spy.received]
    for site in sites:
        summary = task_kinds.answer(task_kinds.ANALYTICS_SUMMARY, site, d_open, {"edges": list(EDGES.values())})
        for key in ("sum", "sumsq"):
            probe = summary[key].astype(np.float64).tobytes()
            assert not any(probe in blob for blob in stored), key
        for vector in vectors:  # a masked count is spread over the whole ring, not the site's small count
            assert not np.isin(summary["count"].astype(np.uint64), vector[:4]).all()


def _hub_bytes(data_dir: Path) -> list[bytes]:
    out = []
    with sqlite3.connect(data_dir / "hub.db") as db:
        out += [row[0] for row in db.execute("select payload from messages where payload is not null")]
    out += [p.read_bytes() for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    return out


def _kmeans(mode: str, seed_sample: int = 10, clip: float | None = None) -> dict[str, Any]:
    # the per-coordinate clip of secure aggregation must hold a site's fractions and the
    # centroids' moves: k-means' default (10) does on standardised features
    privacy = {"mode": mode} | ({"clip": clip} if clip else {})
    return {"model": {"name": "kmeans", "params": {"k": 3, "seed_sample": seed_sample}}, "rounds": 6, "quorum": 3,
            "min_participants": 3, "round_timeout_s": 20, "seed": 3, "admission": "open", "privacy": privacy,
            "data": {"task": "clustering", "features": 4, "standardize": True}, "evaluation": {"holdout": 0.2}}


def _centroids(alice, task: str, tmp_path: Path) -> np.ndarray:
    from fedpact.inference import load_model

    trained = load_model(alice.download_model(alice.list_models(task)[0]["id"], tmp_path / task))
    return np.asarray(trained.model.resolved_centroids())


def test_kmeans_under_secure_equals_the_open_run_and_only_the_seed_sample_travels_in_plaintext(
        hub, make_user, tmp_path: Path) -> None:
    x = load_iris().data
    parts = [Dataset.unlabelled(x[i]) for i in np.array_split(np.random.default_rng(1).permutation(len(x)), 3)]
    Spy.received = []
    alice, run = _federate(make_user, "km-secure", _kmeans("secure"), parts, aggregator_cls=Spy)
    assert not run.errors, run.errors
    assert all(r["metrics"]["clipped_inputs"] == 0 for r in alice.list_rounds("km-secure"))
    warnings = [e["text"] for e in run.results["events"].events if e["event"] == "warning"]
    assert any("k-means++ seed sample (up to 10 rows per participant) reaches the aggregator in plaintext" in w
               for w in warnings), warnings
    secure_received = list(Spy.received)
    other, plain = _federate(make_user, "km-open", _kmeans("open"), parts, suffix="2")
    assert not plain.errors, plain.errors

    secure_c, open_c = _centroids(alice, "km-secure", tmp_path), _centroids(other, "km-open", tmp_path)
    rounds = alice.list_rounds("km-secure")
    assert len(rounds) == 6 and all(r["status"] == "complete" for r in rounds)
    bound = max(r["metrics"]["quantization_error_bound"] for r in rounds)
    assert 0 < bound < 1e-6
    # same start (the seed sample), same Lloyd steps: equal up to quantisation (and float32 storage)
    assert np.abs(secure_c - open_c).max() < 1e-4

    # under secure the standardisation moments were a secure sum; the only plaintext statistics
    # are the k-means++ seed points (docs/privacy.md), at most seed_sample rows per site
    stats = [m.unpack(data) for kind, data in secure_received if kind == m.STATS]
    assert len(stats) == 3 and all(set(t) == {"points"} and t["points"].shape[0] <= 10 for _, t in stats)
    assert all(set(t) <= {"y"} for kind, data in secure_received if kind in (m.SECAGG, m.UPDATE)
               for _, t in [m.unpack(data)])


def test_kmeans_under_secure_without_a_seed_sample_sends_no_plaintext_statistics_and_reports_clipping(
        hub, make_user) -> None:
    x = load_iris().data
    parts = [Dataset.unlabelled(x[i]) for i in np.array_split(np.random.default_rng(2).permutation(len(x)), 3)]
    Spy.received = []
    # a clip too small for the centroids' moves from a standard-normal start: the secure sum counts
    # the clipped inputs (never says whose) and every such round's record says so
    alice, run = _federate(make_user, "km-noseed", _kmeans("secure", seed_sample=0, clip=1.0), parts,
                           aggregator_cls=Spy)
    assert not run.errors, run.errors
    assert alice.get_task("km-noseed")["status"] == "COMPLETE"
    rounds = alice.list_rounds("km-noseed")
    clipped = [r for r in rounds if r["metrics"]["clipped_inputs"] > 0]
    assert clipped and all("exceeded privacy.clip (1)" in r["reason"] and "raise privacy.clip" in r["reason"]
                           for r in clipped)
    assert all(r["reason"] == "" for r in rounds if r not in clipped)
    kinds = {kind for kind, _ in Spy.received}
    assert kinds <= {m.HELLO, m.SECAGG}, kinds


def test_imputation_and_standardisation_under_secure_are_secure_sums(hub, make_user) -> None:
    import sys

    from fedpact.algorithms.standardize import combine_moments, local_moments
    from fedpact.data import federated_fill_values
    from support import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "examples"))
    import heart_disease

    raw = list(heart_disease.load_sites(heart_disease.DEFAULT_DATA).values())
    definition = {**heart_disease.DEFINITION, "rounds": 2, "min_participants": 3, "admission": "open",
                  "round_timeout_s": 20, "privacy": {"mode": "secure"}}
    Spy.received = []
    alice, run = _federate(make_user, "heart-secure", definition, raw, aggregator_cls=Spy)
    assert not run.errors, run.errors
    assert alice.get_task("heart-secure")["status"] == "COMPLETE"
    # the median pass, the summaries and the moments were secure sums: no statistics in plaintext
    kinds = {kind for kind, _ in Spy.received}
    assert kinds <= {m.HELLO, m.SECAGG}, kinds
    state = alice.get_checkpoint("heart-secure")["state"]
    d = parse_definition(definition)
    open_fills = federated_fill_values(raw, parse_definition({**definition, "privacy": {"mode": "open"}}).data)
    assert set(state["fills"]) == set(open_fills)
    for column, value in open_fills.items():
        # the open run's edges span the sites' range, the secure run's the mean +- 6 deviations, each in
        # 512 bins: both medians lie within a bin of the pooled median
        pooled = np.concatenate([np.asarray(s.x)[:, s.feature_names.index(column)] for s in raw]).astype(float)
        present = pooled[~np.isnan(pooled)]
        width = max(np.ptp(present), 12 * present.std()) / 512
        assert abs(state["fills"][column] - np.median(present)) <= width + 1e-9, column
        assert abs(state["fills"][column] - value) <= 2 * width + 1e-9, column
    # the standardisation is that of the pooled, imputed training rows
    trains = [task_kinds.prepare(s.split(d.evaluation.holdout, seed=d.seed)[0], d.data, state["fills"]) for s in raw]
    mean, std = combine_moments([local_moments(t.x) for t in trains])
    assert state["standardization"]["mean"] == pytest.approx(mean.astype(np.float32).tolist(), rel=1e-6, abs=1e-6)
    assert state["standardization"]["std"] == pytest.approx(std.astype(np.float32).tolist(), rel=1e-6)
