"""Regression, clustering, imputation and analytics through the real runtime and a real hub.

Participants are ``TaskParticipant``s (fedpact.runtime.kind_participant) and the aggregator
is the runtime's: the statistics exchange before round 1 (imputation fills, the k-means++
seed sample, analytics summaries), target standardisation and the pooled evaluations of
each task kind all travel through the hub.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from federation_helpers import Runner, start_aggregator, start_participant
from safetensors.numpy import load_file
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression as SkLinear

import fedpact
from fedpact.algorithms.standardize import apply_standardization, combine_moments, local_moments
from fedpact.client.hub import HubError
from fedpact.common.definition import parse_definition
from fedpact.data import Dataset, federated_fill_values
from fedpact.inference import load_model, write_predictions
from fedpact.models.metrics import inertia
from fedpact.runtime import run_aggregator, task_kinds
from fedpact.runtime.kind_participant import TaskParticipant
from fedpact.runtime.progress import Events
from support import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "examples"))


def _federate(make_user, name: str, definition: dict, parts: list[Dataset], participants=None, **aggregator):
    alice = make_user("alice")
    users = [make_user(f"site{i}") for i in range(len(parts))]
    alice.create_task(name, {**definition, "admission": "open"})
    run = Runner()
    for i, (user, data) in enumerate(zip(users, parts)):
        p = participants[i] if participants else TaskParticipant(data)
        start_participant(run, user, name, p, f"site{i}")
    events = start_aggregator(run, alice, name, **aggregator)
    run.join()
    assert not run.errors, run.errors
    result = run.results["aggregator"]
    assert result.status == "COMPLETE"
    return alice, result, events


def _diabetes_parts() -> tuple[np.ndarray, np.ndarray, list[Dataset]]:
    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    return x, y, [Dataset(x[i], y[i], continuous=True) for i in np.array_split(order, 3)]


REGRESSION = {"model": {"name": "linear_regression"}, "rounds": 25, "local_epochs": 2, "batch_size": 16,
              "learning_rate": 0.05, "quorum": 3, "min_participants": 3, "round_timeout_s": 60,
              "data": {"task": "regression", "features": 10, "label": "progression", "standardize": True},
              "evaluation": {"holdout": 0.2}}


def test_regression_standardises_the_target_and_predicts_in_its_unit(make_user, tmp_path: Path) -> None:
    x, y, parts = _diabetes_parts()
    alice, result, _ = _federate(make_user, "diabetes", REGRESSION, parts, eval_data=Dataset(x, y, continuous=True))
    model = alice.list_models("diabetes")[0]
    meta = model["metadata"]
    assert meta["data"]["task"] == "regression" and "confusion_matrix" not in meta
    # the target scale is the pooled training targets' mean and deviation
    d = parse_definition(REGRESSION)
    trains = [p.split(d.evaluation.holdout, seed=d.seed)[0] for p in parts]
    pooled = np.concatenate([t.y for t in trains])
    assert meta["target_scale"] == pytest.approx([pooled.mean(), pooled.std()], rel=1e-6)
    assert meta["preview"]["kind"] == "regression" and len(meta["preview"]["points"]) > 0
    # pooled hold-out figures are in the target's unit (diabetes progression: variance ~5900)
    assert 1500 < result.metrics["val_mse"] < 5000 and 0.3 < result.metrics["val_r2"] < 0.7
    assert result.metrics["val_mae"] == pytest.approx(np.sqrt(result.metrics["val_mse"]), rel=0.3)
    # inference maps predictions back to the target's unit; R2 close to least squares
    path = alice.download_model(model["id"], tmp_path)
    trained = load_model(path)
    pred = trained.predict(x)
    assert pred.dtype == np.float64 and 100 < pred.mean() < 200
    mean, std = combine_moments([local_moments(t.x) for t in trains])
    xs = apply_standardization(x.astype(np.float32), mean, std)
    reference = SkLinear().fit(xs, y).score(xs, y)
    assert trained.evaluate(x, y)["r2"] == pytest.approx(reference, abs=0.03)
    out = write_predictions(tmp_path / "pred.csv", trained, x[:3])
    assert [float(v) for v in out.read_text().split()[1:]] == pytest.approx(pred[:3], rel=1e-4)


def _stored(alice, model: dict) -> dict:
    path = alice.download_model(model["id"], tempfile.mkdtemp())
    return {k: v for k, v in load_file(str(path)).items() if not k.startswith("standardization.")}


def test_kmeans_starts_from_kmeans_plus_plus_and_matches_pooled_kmeans(make_user, tmp_path: Path) -> None:
    x = load_iris().data
    order = np.random.default_rng(1).permutation(len(x))
    parts = [Dataset.unlabelled(x[i]) for i in np.array_split(order, 3)]
    definition = {"model": {"name": "kmeans", "params": {"k": 3}}, "rounds": 10, "quorum": 3, "min_participants": 3,
                  "round_timeout_s": 60, "seed": 3,
                  "data": {"task": "clustering", "features": 4, "standardize": True}, "evaluation": {"holdout": 0.2}}
    alice, result, events = _federate(make_user, "iris", definition, parts, eval_data=Dataset.unlabelled(x))
    assert any(e.get("text") == "statistics exchange: kmeans_seed" for e in events.events)
    model = alice.list_models("iris")[0]
    assert model["metadata"]["preview"]["kind"] == "clustering" and "confusion_matrix" not in model["metadata"]
    trained = load_model(alice.download_model(model["id"], tmp_path))
    mean, std = combine_moments([local_moments(p.split(0.2, seed=3)[0].x) for p in parts])
    xs = apply_standardization(x.astype(np.float32), mean, std).astype(np.float64)
    reference = SkKMeans(3, n_init=10, random_state=0).fit(xs).inertia_
    # the k-means++ start from the sites' seed samples reaches the pooled optimum, not ~191 of a bad start
    assert inertia(xs, trained.model.resolved_centroids()) <= 1.05 * reference
    labels = trained.predict(x)
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1, 2}
    assert result.metrics["val_inertia"] > 0 and 0.3 < result.metrics["val_silhouette"] <= 1.0
    assert result.metrics["eval_silhouette"] > 0.3


def _heart():
    import heart_disease  # examples/, on sys.path above

    raw = heart_disease.load_sites(heart_disease.DEFAULT_DATA)
    definition = {**heart_disease.DEFINITION, "rounds": 4, "min_participants": 4, "admission": "open"}
    return list(raw.values()), definition


def test_imputation_fills_are_federated_checkpointed_and_kept_on_resume(make_user) -> None:
    sites, definition = _heart()
    alice = make_user("alice")
    users = [make_user(f"site{i}") for i in range(len(sites))]
    alice.create_task("heart", definition)
    run = Runner()
    for i, (user, data) in enumerate(zip(users, sites)):
        start_participant(run, user, "heart", TaskParticipant(data), f"site{i}")  # no fills: they come from the hub
    first, second = Events(), Events()

    def crash(r: int, metrics: dict) -> None:
        if r == 2:
            raise KeyboardInterrupt("the aggregator process dies after checkpointing round 2")

    def first_then_resume():
        try:
            run_aggregator(alice, "heart", progress=first, poll_wait=0.5, on_round=crash)
        except KeyboardInterrupt:
            pass
        ckpt = alice.get_checkpoint("heart")
        assert ckpt["round"] == 2
        expected = federated_fill_values(sites, parse_definition(definition).data)
        assert ckpt["state"]["fills"] == pytest.approx(expected)
        return run_aggregator(alice, "heart", progress=second, poll_wait=0.5, resume=True)

    run.start("aggregator", first_then_resume)
    run.join()
    assert not run.errors, run.errors
    result = run.results["aggregator"]
    assert result.status == "COMPLETE" and result.rounds_completed == 4
    said = [e.get("text", "") for e in first.events]
    assert "statistics exchange: impute_range" in said and "statistics exchange: impute_summary" in said
    assert not [t for t in (e.get("text", "") for e in second.events) if t.startswith("statistics exchange")]
    assert result.metrics["val_accuracy"] >= 0.7


IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ANALYTICS = {"quorum": 3, "min_participants": 2, "round_timeout_s": 30,
             "data": {"task": "analytics", "features": IRIS_COLUMNS},
             "analytics": {"bins": 10, "edges": {"petal_width": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]}}}


def _iris_sites() -> list[Dataset]:
    x = load_iris().data.copy()
    x[::17, 1] = np.nan  # a few gaps: counted as missing
    return [Dataset.unlabelled(x[i], IRIS_COLUMNS) for i in np.array_split(np.arange(len(x)), 3)]


def test_analytics_report_is_exchanged_stored_and_returned_by_the_sdk(hub, make_user) -> None:
    sites = _iris_sites()
    alice, result, _ = _federate(make_user, "iris-stats", ANALYTICS, sites)
    expected = task_kinds.analytics_report(sites, parse_definition(ANALYTICS))
    report = fedpact.Client(hub.url, token=alice.token).analytics_report("iris-stats")
    assert result.rounds_completed == 0 and set(report) == set(IRIS_COLUMNS)
    pooled = np.concatenate([s.x for s in sites])
    for j, col in enumerate(IRIS_COLUMNS):
        assert report[col]["count"] == expected[col]["count"] == int((~np.isnan(pooled[:, j])).sum())
        assert report[col]["mean"] == pytest.approx(np.nanmean(pooled[:, j]))
        assert report[col]["variance"] == pytest.approx(np.nanvar(pooled[:, j]))
        assert report[col]["histogram"] == expected[col]["histogram"]
    assert report["sepal_width"]["missing"] == 9
    assert report["petal_width"]["histogram"]["edges"] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert alice.get_task("iris-stats")["status"] == "COMPLETE"


class _Hostile(TaskParticipant):
    """An admitted participant whose summaries claim impossible counts."""

    def answer_statistics(self, kind, meta):
        out = super().answer_statistics(kind, meta)
        return {**out, "count": -out["count"] * 1e6} if "count" in out else {**out, "min": out["min"][:2]}


def test_a_hostile_statistics_reply_drops_that_site_and_the_exchange_goes_on(hub, make_user) -> None:
    sites = _iris_sites()
    participants = [TaskParticipant(sites[0]), TaskParticipant(sites[1]), _Hostile(sites[2])]
    alice, _, events = _federate(make_user, "iris-hostile", ANALYTICS, sites, participants)
    honest = task_kinds.analytics_report(sites[:2], parse_definition(ANALYTICS))
    report = fedpact.Client(hub.url, token=alice.token).analytics_report("iris-hostile")
    for col in IRIS_COLUMNS:
        assert report[col]["count"] == honest[col]["count"]
        assert report[col]["mean"] == pytest.approx(honest[col]["mean"])
    ignored = [e["text"] for e in events.events if e["event"] == "warning"]
    assert any("site2" in t and "statistics reply" in t for t in ignored), ignored


def test_analytics_in_an_unsupported_mode_or_secure_without_edges_is_refused_precisely(make_user) -> None:
    alice = make_user("alice")
    with pytest.raises(HubError) as refused:
        alice.create_task("stats-he", {**ANALYTICS, "privacy": {"mode": "encrypted"}})
    assert refused.value.status == 422
    assert "data.task 'analytics' cannot run under privacy mode 'encrypted'" in str(refused.value)
    # secure works (tests/integration/test_runtime_secure_statistics.py), with every column's edges declared
    with pytest.raises(HubError) as refused:
        alice.create_task("stats-secure", {**ANALYTICS, "privacy": {"mode": "secure"}})
    assert refused.value.status == 422
    assert "needs analytics.edges for every column; none for: sepal_length, sepal_width, petal_length" in str(
        refused.value)
    assert alice.list_tasks() == []


def test_an_analytics_report_is_not_a_model_to_predict_with(make_user, tmp_path: Path) -> None:
    sites = _iris_sites()
    alice, _, _ = _federate(make_user, "iris-report", {**ANALYTICS, "min_participants": 3}, sites)
    path = alice.download_model(alice.list_models("iris-report")[0]["id"], tmp_path)
    with pytest.raises(fedpact.FedpactError, match="analytics report, not a model"):
        load_model(path)


