"""What differs between task kinds and data preparations, for the aggregator's and participants' rounds.

The round objects call these instead of branching on ``data.task`` themselves: which
statistics to request before round 1 (imputation fills, the k-means++ seed sample, target
moments, analytics summaries), how a participant answers each request from its own data,
what a participant trains on, and how per-participant evaluations combine into the pooled
figure of each kind. Every request is answered with additive arrays (or, for the two
documented exceptions, a range or a seed sample), so the secure rounds can carry them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpact.algorithms.analytics import (
    Summary,
    agree_edges,
    finalize,
    local_range,
    local_summary,
    merge_ranges,
    merge_summaries,
)
from fedpact.algorithms.standardize import local_moments
from fedpact.common.definition import HIGHER_IS_BETTER, DataSchema, TaskDefinition
from fedpact.data.dataset import Dataset
from fedpact.data.prepare import (
    IMPUTE_BINS,
    fill_values,
    impute,
    imputed_columns,
    plan_edges,
    site_range,
    site_summary,
)
from fedpact.data.schema import conform, encode_labels, ensure_fits
from fedpact.models.base import Model
from fedpact.models.kmeans import (
    DEFAULT_SEED_SAMPLE,
    initial_centroids,
    pool_samples,
    seed_sample,
)
from fedpact.models.metrics import (
    add_sums,
    clustering_metrics,
    regression_metrics,
    regression_sums,
)

if TYPE_CHECKING:
    from fedpact.privacy.secure_sum import SumLayout

#: Statistics requests, in the order the aggregator makes them before round 1.
IMPUTE_RANGE, IMPUTE_SUMMARY = "impute_range", "impute_summary"
#: Under the secure modes, median imputation's first pass: a secure sum of counts and moments.
IMPUTE_MOMENTS = "impute_moments"
KMEANS_SEED = "kmeans_seed"
#: The imputation exchange's requests (whichever the privacy mode uses).
IMPUTE_REQUESTS = frozenset({IMPUTE_RANGE, IMPUTE_MOMENTS, IMPUTE_SUMMARY})
#: Deviations either side of the mean that secure median imputation's histogram spans.
IMPUTE_SPREAD = 6.0
ANALYTICS_RANGE, ANALYTICS_SUMMARY = "analytics_range", "analytics_summary"


#: The standardisation moments request (sent without a ``kind``), named for :func:`sum_layout`.
MOMENTS = "moments"
#: Requests whose replies are sums only, so secure aggregation can carry them.
SUMMABLE = frozenset({IMPUTE_MOMENTS, IMPUTE_SUMMARY, ANALYTICS_SUMMARY, MOMENTS})


def better_is_higher(metric: str) -> bool:
    """Direction of a convergence metric (accuracy, r2, silhouette improve upwards)."""
    return metric in HIGHER_IS_BETTER


def statistics_plan(definition: TaskDefinition) -> list[str]:
    """The requests the aggregator sends (and merges) before round 1, in order.

    Under the secure modes the statistics are secure sums: median imputation then agrees
    its histogram edges from a first secure sum (:func:`secure_impute_edges`) instead of
    the sites' ranges, and analytics has declared edges for every column (definition
    validation), so no request reveals a site's minimum or maximum.
    """
    d = definition.data
    secure = definition.privacy.secure
    plan: list[str] = []
    if d.missing == "impute":
        if (d.impute or "mean") == "median":
            plan.append(IMPUTE_MOMENTS if secure else IMPUTE_RANGE)
        plan.append(IMPUTE_SUMMARY)
    seeded = definition.model is not None and int(definition.model.params.get("seed_sample", DEFAULT_SEED_SAMPLE)) > 0
    if d.task == "clustering" and seeded:
        plan.append(KMEANS_SEED)
    if d.task == "analytics":
        edges = definition.analytics.edges if definition.analytics else {}
        if not (isinstance(d.features, list) and set(d.features) <= set(edges)):
            plan.append(ANALYTICS_RANGE)
        plan.append(ANALYTICS_SUMMARY)
    return plan


# -- participant side ----------------------------------------------------------------------
def answer(kind: str, ds: Dataset, definition: TaskDefinition, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A participant's reply to one statistics request, from its raw (unprepared) data.

    ``meta`` carries what the aggregator agreed in an earlier step: ``edges`` (a list of
    lists) for the summaries.
    """
    schema = definition.data
    if kind in (IMPUTE_RANGE, IMPUTE_SUMMARY, IMPUTE_MOMENTS):
        columns = imputed_columns(ds, schema)
        if kind == IMPUTE_RANGE:
            return site_range(ds, columns)
        edges = _edges(meta, len(columns)) if "edges" in meta and kind == IMPUTE_SUMMARY else plan_edges(None, columns)
        return site_summary(ds, columns, edges)
    if kind == KMEANS_SEED:
        assert definition.model is not None
        size = int(definition.model.params.get("seed_sample", DEFAULT_SEED_SAMPLE))
        return {"points": seed_sample(np.asarray(ds.x).reshape(len(ds), -1), size, seed=int(meta.get("seed", 0)))}
    if kind in (ANALYTICS_RANGE, ANALYTICS_SUMMARY):
        table = np.asarray(conform(ds, schema).x if not schema.categorical else ds.x, dtype=np.float64)
        table = table.reshape(len(ds), -1)
        if kind == ANALYTICS_RANGE:
            return local_range(table)
        return local_summary(table, _edges(meta, table.shape[1]))
    raise ValueError(f"unknown statistics request {kind!r}")


def _edges(meta: Mapping[str, Any], n: int) -> list[np.ndarray]:
    edges = meta.get("edges")
    if not isinstance(edges, list) or len(edges) != n:
        raise ValueError(f"the request needs 'edges' for {n} columns")
    return [np.asarray(e, dtype=np.float64) for e in edges]


def prepare(ds: Dataset, schema: DataSchema, fills: Mapping[str, float] | None = None) -> Dataset:
    """The participant's data as the model sees it: imputed, checked, reordered, one-hot encoded.

    Call after the imputation fills arrived (``missing: impute``); before that the check
    refuses the gaps with a message that says so.
    """
    if schema.missing == "impute" and fills:
        ds = impute(ds, fills)
    ensure_fits(ds, schema)
    return conform(ds, schema)


def targets(ds: Dataset, schema: DataSchema) -> np.ndarray:
    """What ``Model.fit`` takes as ``y_idx``: class indices, float targets, or zeros (unlabelled)."""
    if schema.task == "classification":
        return encode_labels(ds.y, schema.classes)
    if schema.task == "regression":
        return np.asarray(ds.y, dtype=np.float64)
    return np.zeros(len(ds), dtype=np.int64)


def moments(ds: Dataset, schema: DataSchema) -> dict[str, np.ndarray]:
    """Federated standardisation moments: features, and the target too for regression."""
    return local_moments(ds.x, ds.y if schema.task == "regression" else None)


def evaluation_report(model: Model, x: np.ndarray, y: np.ndarray, task: str,
                      target_scale: tuple[float, float] | None = None) -> dict[str, float]:
    """A participant's evaluation, with the sums the pooled figure of its task kind needs.

    ``target_scale`` (mean, std): the model predicts the standardised target, ``y`` is in
    the target's unit, so predictions are mapped back before the errors are summed.
    """
    if task == "regression":
        pred = np.asarray(model.predict(x), dtype=np.float64)
        if target_scale is not None:
            pred = pred * target_scale[1] + target_scale[0]
        return regression_sums(y, pred) | {"num_samples": float(len(x))}
    return dict(model.evaluate(x, y))


# -- aggregator side -----------------------------------------------------------------------
def combine_reports(task: str, reports: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The pooled evaluation of all participants: what one evaluation on all their rows would give.

    Classification: the sample-weighted mean (accuracy and mean loss pool that way).
    Regression: MSE, MAE and R2 from the summed errors and target moments. Clustering:
    the summed inertia and the count-weighted silhouette.
    """
    reports = [r for r in reports if float(r.get("num_samples", 0)) > 0]
    if not reports:
        return {}
    if task == "regression":
        keys = ("n", "sse", "sae", "sum_y", "sum_y2")
        return {k: float(v) for k, v in regression_metrics(add_sums([{k: r[k] for k in keys} for r in reports])).items()}
    if task == "clustering":
        return {k: float(v) for k, v in clustering_metrics(reports).items()}
    total = sum(float(r["num_samples"]) for r in reports)
    names = sorted({k for r in reports for k in r if k != "num_samples"})
    out = {k: sum(float(r.get(k, 0.0)) * float(r["num_samples"]) for r in reports) / total for k in names}
    return out | {"num_samples": total}


def merge(kind: str, replies: Sequence[Mapping[str, np.ndarray]], definition: TaskDefinition,
          meta: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the participants' replies to one request into what the aggregator broadcasts next.

    ``*_range`` gives the ``edges`` of the following summary request; ``impute_summary`` the
    ``fills``; ``kmeans_seed`` the starting ``centroids``; ``analytics_summary`` the ``report``.
    """
    if kind in (IMPUTE_RANGE, ANALYTICS_RANGE):
        merged = merge_ranges(replies)
        if kind == IMPUTE_RANGE:
            return {"edges": [e.tolist() for e in plan_edges(merged, impute_columns(definition))]}
        spec = definition.analytics
        names = _column_names(definition, len(merged["min"]))
        declared = {names.index(c): e for c, e in (spec.edges.items() if spec else []) if c in names}
        return {"edges": [e.tolist() for e in agree_edges(merged, spec.bins if spec else 20, declared)]}
    if kind == IMPUTE_MOMENTS:
        return {"edges": [e.tolist() for e in secure_impute_edges(merge_summaries(replies))]}
    if kind == IMPUTE_SUMMARY:
        columns = impute_columns(definition)
        edges = [np.asarray(e) for e in meta["edges"]] if "edges" in meta else plan_edges(None, columns)
        return {"fills": fill_values(merge_summaries(replies), edges, columns, definition.data.impute or "mean")}
    if kind == KMEANS_SEED:
        assert definition.model is not None
        k = int(definition.model.params.get("k", 8))
        return {"centroids": initial_centroids(pool_samples([r["points"] for r in replies]), k, definition.seed)}
    if kind == ANALYTICS_SUMMARY:
        edges = [np.asarray(e) for e in meta["edges"]]
        quantiles = definition.analytics.quantiles if definition.analytics else [0.25, 0.5, 0.75]
        return {"report": finalize(merge_summaries(replies), edges, quantiles,
                                   _column_names(definition, len(edges)))}
    raise ValueError(f"unknown statistics request {kind!r}")


def secure_impute_edges(moments: Mapping[str, np.ndarray], bins: int = IMPUTE_BINS,
                        spread: float = IMPUTE_SPREAD) -> list[np.ndarray]:
    """Median imputation's histogram edges from securely summed counts and moments.

    ``bins`` equal bins over the mean plus or minus ``spread`` deviations of each column:
    values beyond them land in the outer bins, which moves the median only if more than
    half of a column lies there. The sites' ranges, which would reveal each site's extreme
    values, are never asked for.
    """
    n = np.asarray(moments["count"], dtype=np.float64)
    out = []
    for j, count in enumerate(n.tolist()):
        if count <= 0:
            out.append(np.array([0.0, 1.0]))
            continue
        mean = float(moments["sum"][j]) / count  # the trivial edges start at 0: no shift
        std = float(np.sqrt(max(float(moments["sumsq"][j]) / count - mean * mean, 0.0)))
        half = spread * std if std > 0 else 0.5
        out.append(np.linspace(mean - half, mean + half, bins + 1))
    return out


def sum_layout(kind: str, definition: TaskDefinition, meta: Mapping[str, Any]) -> SumLayout:
    """What a secure sum of the replies to ``kind`` holds: each tensor, its shape, count or real.

    Exactly the additive tensors :func:`merge` uses; the sites' local ``min``/``max`` of
    :func:`fedpact.algorithms.analytics.local_summary` are left out.
    """
    d = definition.data
    if kind == MOMENTS:
        width = int(np.prod(d.sample_shape))
        layout: SumLayout = [("count", (width,), "count"), ("sum", (width,), "real"), ("sumsq", (width,), "real")]
        if d.task == "regression":
            layout += [("y_count", (1,), "count"), ("y_sum", (1,), "real"), ("y_sumsq", (1,), "real")]
        return layout
    if kind in (IMPUTE_MOMENTS, IMPUTE_SUMMARY):
        columns = impute_columns(definition)
        n = len(columns)
        edges = ([np.asarray(e) for e in meta["edges"]] if "edges" in meta and kind == IMPUTE_SUMMARY
                 else plan_edges(None, columns))
    elif kind == ANALYTICS_SUMMARY:
        n = int(d.n_features or 0)
        edges = [np.asarray(e) for e in meta["edges"]]
    else:
        raise ValueError(f"statistics request {kind!r} is not a sum: it cannot go through secure aggregation")
    layout = [("count", (n,), "count"), ("missing", (n,), "count"), ("sum", (n,), "real"), ("sumsq", (n,), "real")]
    return layout + [(f"hist.{j}", (len(e) + 1,), "count") for j, e in enumerate(edges)]


def impute_columns(definition: TaskDefinition) -> list[str]:
    """The columns fill values are computed for, as the aggregator knows them from the definition.

    The same list a participant gets from :func:`fedpact.data.prepare.imputed_columns` on
    data that fits the schema.
    """
    d = definition.data
    n = d.n_features or 0
    names = list(d.features) if isinstance(d.features, list) else [f"feature_{i}" for i in range(n)]
    return [c for c in names if c not in d.categorical]


def _column_names(definition: TaskDefinition, n: int) -> list[str]:
    f = definition.data.features
    return list(f) if isinstance(f, list) and len(f) == n else [f"feature_{i}" for i in range(n)]


def declared_edges(definition: TaskDefinition) -> dict[str, Any]:
    """The ``edges`` of an analytics task whose every column declares them (no range pass)."""
    n = int(definition.data.n_features or 0)
    return merge(ANALYTICS_RANGE, [{"min": np.full(n, np.inf), "max": np.full(n, -np.inf)}], definition, {})


def analytics_report(datasets: Sequence[Dataset], definition: TaskDefinition) -> dict[str, dict[str, object]]:
    """Both analytics passes over several sites' data in one process (simulations, a local dry run)."""
    plan = statistics_plan(definition)
    if ANALYTICS_SUMMARY not in plan or not datasets:
        raise ValueError("analytics_report needs an analytics task and at least one dataset")
    if ANALYTICS_RANGE in plan:
        meta = merge(ANALYTICS_RANGE, [answer(ANALYTICS_RANGE, d, definition, {}) for d in datasets], definition, {})
    else:
        meta = declared_edges(definition)
    replies = [answer(ANALYTICS_SUMMARY, d, definition, meta) for d in datasets]
    report: dict[str, dict[str, object]] = merge(ANALYTICS_SUMMARY, replies, definition, meta)["report"]
    return report


__all__ = [
    "ANALYTICS_RANGE",
    "ANALYTICS_SUMMARY",
    "IMPUTE_MOMENTS",
    "IMPUTE_RANGE",
    "IMPUTE_REQUESTS",
    "IMPUTE_SUMMARY",
    "MOMENTS",
    "SUMMABLE",
    "KMEANS_SEED",
    "Summary",
    "analytics_report",
    "answer",
    "better_is_higher",
    "combine_reports",
    "declared_edges",
    "evaluation_report",
    "impute_columns",
    "merge",
    "moments",
    "prepare",
    "secure_impute_edges",
    "statistics_plan",
    "sum_layout",
    "targets",
]
