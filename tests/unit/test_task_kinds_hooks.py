"""The per-kind hooks the rounds call: statistics exchanges and pooled evaluations, against pooled data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.metrics import r2_score

from fedpact.common.definition import parse_definition
from fedpact.common.errors import DataSchemaError
from fedpact.data import Dataset
from fedpact.models import LinearRegression
from fedpact.runtime import task_kinds as tk


def _exchange(definition_raw: dict, sites: list[Dataset]) -> dict:
    """Run the aggregator's statistics plan as the rounds will: request, answer at each site, merge."""
    d = parse_definition(definition_raw)
    meta: dict = {}
    for kind in tk.statistics_plan(d):
        replies = [tk.answer(kind, s, d, meta) for s in sites]
        meta = meta | tk.merge(kind, replies, d, meta)
    return meta


def _impute_sites() -> list[Dataset]:
    rng = np.random.default_rng(0)
    sites = []
    for n in (30, 70, 50):
        x = np.column_stack([rng.normal(5, 2, n), rng.integers(1, 4, n)]).astype(np.float64)
        x[rng.random(n) < 0.2, 0] = np.nan
        x[rng.random(n) < 0.1, 1] = np.nan
        sites.append(Dataset(x, rng.integers(0, 2, n), ["a", "cat"]))
    return sites


IMPUTE_DEF = {"model": {"name": "logistic_regression"},
              "data": {"features": ["a", "cat"], "classes": [0, 1], "missing": "impute",
                       "categorical": {"cat": [1, 2, 3]}}}


@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_imputation_exchange_fills_with_the_pooled_statistic(statistic: str) -> None:
    raw = {**IMPUTE_DEF, "data": {**IMPUTE_DEF["data"], "impute": statistic}}
    sites = _impute_sites()
    plan = tk.statistics_plan(parse_definition(raw))
    assert plan == ([tk.IMPUTE_RANGE] if statistic == "median" else []) + [tk.IMPUTE_SUMMARY]
    fills = _exchange(raw, sites)["fills"]
    pooled = np.concatenate([s.x[:, 0] for s in sites])
    expected = np.nanmean(pooled) if statistic == "mean" else np.nanmedian(pooled)
    tolerance = 1e-9 if statistic == "mean" else (np.nanmax(pooled) - np.nanmin(pooled)) / 512
    assert set(fills) == {"a"} and abs(fills["a"] - expected) <= tolerance
    schema = parse_definition(raw).data
    prepared = tk.prepare(sites[0], schema, fills)
    assert prepared.feature_names == ["a", "cat=1", "cat=2", "cat=3"] and not np.isnan(prepared.x).any()
    with pytest.raises(DataSchemaError, match="impute them with the federated values first"):
        tk.prepare(sites[0], schema, None)


def test_kmeans_seed_exchange_gives_k_centroids() -> None:
    x = load_iris().data
    sites = [Dataset.unlabelled(x[i::3]) for i in range(3)]
    raw = {"model": {"name": "kmeans", "params": {"k": 3, "seed_sample": 10}}, "data": {"task": "clustering", "features": 4}}
    meta = _exchange(raw, sites)
    assert meta["centroids"].shape == (3, 4)
    no_seed = {**raw, "model": {"name": "kmeans", "params": {"k": 3, "seed_sample": 0}}}
    assert tk.statistics_plan(parse_definition(no_seed)) == []


def test_analytics_exchange_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    sites = [Dataset.unlabelled(rng.normal(i, 1.0, (n, 2)), ["u", "v"]) for i, n in enumerate((40, 80))]
    raw = {"data": {"task": "analytics", "features": ["u", "v"]}, "analytics": {"bins": 50, "quantiles": [0.5]}}
    report = tk.analytics_report(sites, parse_definition(raw))
    pooled = np.concatenate([s.x for s in sites]).astype(np.float64)
    assert report["u"]["mean"] == pytest.approx(pooled[:, 0].mean(), rel=1e-6)
    assert report["v"]["variance"] == pytest.approx(pooled[:, 1].var(), rel=1e-5)
    declared = {**raw, "analytics": {"edges": {"u": [-5, 0, 5], "v": [-5, 0, 5]}}}
    assert tk.statistics_plan(parse_definition(declared)) == [tk.ANALYTICS_SUMMARY]
    report = tk.analytics_report(sites, parse_definition(declared))
    assert report["u"]["histogram"]["edges"] == [-5.0, 0.0, 5.0]  # type: ignore[index]
    with pytest.raises(ValueError, match="needs an analytics task"):
        tk.analytics_report(sites, parse_definition(IMPUTE_DEF))


def test_pooled_regression_evaluation_equals_one_evaluation_on_all_rows() -> None:
    x, y = load_diabetes(return_X_y=True)
    model = LinearRegression(10)
    model.fit(x, (y - y.mean()) / y.std(), epochs=50, batch_size=32, lr=0.5)
    reports = [tk.evaluation_report(model, x[i::4], y[i::4], "regression") for i in range(4)]
    pooled = tk.combine_reports("regression", reports)
    assert pooled["r2"] == pytest.approx(r2_score(y, model.predict(x)))
    classification = tk.combine_reports("classification", [{"accuracy": 1.0, "num_samples": 1},
                                                           {"accuracy": 0.5, "num_samples": 3}])
    assert classification == {"accuracy": 0.625, "num_samples": 4.0}
    assert tk.combine_reports("regression", []) == {}


def test_targets_and_directions() -> None:
    d = parse_definition({"model": {"name": "linear_regression"}, "data": {"task": "regression", "features": 1}})
    ds = Dataset(np.zeros((2, 1)), np.array([1.5, 2.5]), continuous=True)
    assert tk.targets(ds, d.data).tolist() == [1.5, 2.5]
    assert tk.moments(ds, d.data)["y_sum"].tolist() == [4.0]
    assert tk.better_is_higher("r2") and tk.better_is_higher("silhouette") and not tk.better_is_higher("mse")
    with pytest.raises(ValueError, match="unknown statistics request"):
        tk.answer("nonsense", ds, d, {})


def _secure_exchange(definition_raw: dict, sites: list[Dataset]) -> dict:
    """The statistics plan under secure: each summable request's replies, laid out and summed."""
    from fedpact.privacy.secure_sum import decode_sums, encode_sums, make_sum_plan

    d = parse_definition(definition_raw)
    meta: dict = tk.declared_edges(d) if d.data.task == "analytics" else {}
    for kind in tk.statistics_plan(d):
        assert kind in tk.SUMMABLE, kind  # nothing goes in plaintext
        layout = tk.sum_layout(kind, d, meta)
        plan = make_sum_plan(task="t", request_id=kind, participants=[f"s{i}" for i in range(len(sites))],
                             threshold=2, layout=layout)
        names = {name for name, _, _ in layout}
        replies = [tk.answer(kind, s, d, meta) for s in sites]
        assert {"min", "max"} & names == set()
        ring = np.sum([encode_sums(plan, {k: v for k, v in r.items() if k in names}) for r in replies], axis=0,
                      dtype=np.uint64)
        meta = meta | tk.merge(kind, [decode_sums(plan, ring)], d, meta)
    return meta


def test_under_secure_median_imputation_agrees_its_edges_from_sums_not_ranges() -> None:
    raw = {**IMPUTE_DEF, "data": {**IMPUTE_DEF["data"], "impute": "median"},
           "privacy": {"mode": "secure"}, "min_participants": 2}
    sites = _impute_sites()
    assert tk.statistics_plan(parse_definition(raw)) == [tk.IMPUTE_MOMENTS, tk.IMPUTE_SUMMARY]
    meta = _secure_exchange(raw, sites)
    pooled = np.concatenate([s.x[:, 0] for s in sites])
    present = pooled[~np.isnan(pooled)]
    (edges,) = meta["edges"]
    assert edges[0] == pytest.approx(present.mean() - 6 * present.std())
    assert abs(meta["fills"]["a"] - np.median(present)) <= (edges[-1] - edges[0]) / 512


def test_the_secure_layouts_hold_what_the_merge_needs() -> None:
    reg = parse_definition({"model": {"name": "linear_regression"}, "data": {"task": "regression", "features": 3}})
    assert [(n, s) for n, s, _ in tk.sum_layout(tk.MOMENTS, reg, {})] == [
        ("count", (3,), ), ("sum", (3,)), ("sumsq", (3,)), ("y_count", (1,)), ("y_sum", (1,)), ("y_sumsq", (1,))]
    rng = np.random.default_rng(3)
    sites = [Dataset.unlabelled(rng.normal(i, 1.0, (n, 2)), ["u", "v"]) for i, n in enumerate((40, 80, 25))]
    raw = {"data": {"task": "analytics", "features": ["u", "v"]}, "privacy": {"mode": "secure"},
           "min_participants": 2, "analytics": {"edges": {"u": [-5, 0, 5], "v": [-5, -1, 0, 1, 5]}}}
    secure = _secure_exchange(raw, sites)["report"]
    plain = tk.analytics_report(sites, parse_definition({**raw, "privacy": {"mode": "open"}, "min_participants": 1}))
    for col in ("u", "v"):
        assert secure[col]["histogram"] == plain[col]["histogram"] and secure[col]["count"] == plain[col]["count"]
        assert secure[col]["mean"] == pytest.approx(plain[col]["mean"], rel=1e-12)
        assert secure[col]["range_from"] == "histogram"
    with pytest.raises(ValueError, match="not a sum"):
        tk.sum_layout(tk.KMEANS_SEED, reg, {})
