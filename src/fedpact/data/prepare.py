"""Data preparation declared in the task definition, identical at every site.

A definition says how files are read (header row or ``columns``, the label column), what
happens to missing cells (``error``, ``drop``, or ``impute`` with a *federated* mean or
median: never one site's own figure, which would give every site a different model
input), and which columns are categorical (one-hot encoded by their declared categories in
:func:`fedpact.data.schema.conform`). Imputation needs statistics of all sites: each site
computes :func:`site_range` / :func:`site_summary` (sums and histogram counts, nothing
row-level), the aggregator merges them with the analytics functions and broadcasts
:func:`fill_values`, and each site applies :func:`impute`. :func:`federated_fill_values`
runs that exchange in one process, for simulations and tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedpact.algorithms.analytics import (
    Summary,
    agree_edges,
    column_means,
    column_medians,
    local_range,
    local_summary,
    merge_ranges,
    merge_summaries,
)
from fedpact.common.definition import DataSchema
from fedpact.data.dataset import Dataset
from fedpact.data.loaders import load_data

#: Bins of the histograms a federated median is read from (its precision is one bin).
IMPUTE_BINS = 512


def load_task_data(path: str | Path, schema: DataSchema, *, labels_path: str | Path | None = None) -> Dataset:
    """Read a participant's file the way the task's definition says: label, header, missing, categories.

    With ``missing: impute`` the gaps stay NaN until :func:`impute` fills them with the
    federated values.
    """
    features = schema.features if isinstance(schema.features, list) else None
    return load_data(
        path,
        label=schema.label,
        labels_path=labels_path,
        features=features,
        missing=schema.missing,
        header=None if schema.header else schema.columns,
        continuous=schema.task == "regression",
        categories=schema.categorical or None,
    )


def load_for_task(
    path: str | Path,
    schema: DataSchema | None,
    *,
    label: str | None = None,
    missing: str | None = None,
    labels_path: str | Path | None = None,
) -> Dataset:
    """A participant's data read as the task says, with the participant's explicit overrides.

    ``label`` and ``missing`` given here win over the definition (a site whose file names
    the label column differently); without a definition (the task could not be read) the
    old defaults apply: a column named ``label``, missing values refused.
    """
    if schema is None:
        return load_data(path, label=label or "label", labels_path=labels_path,
                         missing=missing or "error")  # type: ignore[arg-type]
    update: dict[str, object] = {}
    if label is not None:
        update["label"] = label
    if missing is not None:
        if missing not in ("error", "drop", "impute"):
            raise ValueError(f"missing must be 'error', 'drop' or 'impute', not {missing!r}")
        update["missing"] = missing
    if schema.columns is not None and label is not None and label not in schema.columns:
        raise ValueError(f"label column {label!r} is not among the task's columns {schema.columns}")
    return load_task_data(path, schema.model_copy(update=update) if update else schema, labels_path=labels_path)


def _names(ds: Dataset) -> list[str]:
    width = int(np.prod(ds.sample_shape))
    return list(ds.feature_names) if ds.feature_names else [f"feature_{i}" for i in range(width)]


def imputed_columns(ds: Dataset, schema: DataSchema) -> list[str]:
    """The columns a fill value is computed for: every numeric (non-categorical) feature.

    A missing categorical cell needs none: it becomes an all-zero one-hot row.
    """
    return [n for n in _names(ds) if n not in schema.categorical]


def _table(ds: Dataset, columns: Sequence[str]) -> np.ndarray:
    names = _names(ds)
    absent = [c for c in columns if c not in names]
    if absent:
        raise ValueError(f"the data has no column(s) {', '.join(map(repr, absent))}")
    flat = np.asarray(ds.x, dtype=np.float64).reshape(len(ds), -1)
    return flat[:, [names.index(c) for c in columns]]


def site_range(ds: Dataset, columns: Sequence[str]) -> Summary:
    """First pass, median only: this site's per-column minimum and maximum."""
    return local_range(_table(ds, columns))


def plan_edges(merged_range: Mapping[str, np.ndarray] | None, columns: Sequence[str]) -> list[np.ndarray]:
    """The histogram edges every site uses: from the merged range (median), or none needed (mean)."""
    if merged_range is None:
        return [np.array([0.0, 1.0]) for _ in columns]
    return agree_edges(merged_range, IMPUTE_BINS)


def site_summary(ds: Dataset, columns: Sequence[str], edges: Sequence[np.ndarray]) -> Summary:
    """Second pass: this site's counts, sums and histogram counts (additive, fit for secure sums)."""
    return local_summary(_table(ds, columns), edges)


def fill_values(merged: Mapping[str, np.ndarray], edges: Sequence[np.ndarray], columns: Sequence[str],
                statistic: str) -> dict[str, float]:
    """The federated mean or median per column, from the sites' merged summaries."""
    if statistic not in ("mean", "median"):
        raise ValueError(f"impute statistic must be 'mean' or 'median', not {statistic!r}")
    values = column_medians(merged, edges) if statistic == "median" else column_means(merged, edges)
    empty = [c for c, v in zip(columns, values.tolist()) if not np.isfinite(v)]
    if empty:
        raise ValueError(f"no site has any value in column(s) {', '.join(map(repr, empty))}: nothing to impute from")
    return {c: float(v) for c, v in zip(columns, values.tolist())}


def impute(ds: Dataset, fills: Mapping[str, float]) -> Dataset:
    """Fill the NaN cells of each named column with its federated value; other columns untouched."""
    names = _names(ds)
    unknown = [c for c in fills if c not in names]
    if unknown:
        raise ValueError(f"fill values for column(s) the data lacks: {', '.join(map(repr, unknown))}")
    x = np.asarray(ds.x, dtype=np.float32).reshape(len(ds), -1).copy()
    for name, value in fills.items():
        if not np.isfinite(value):
            raise ValueError(f"fill value of column {name!r} is not finite: {value}")
        j = names.index(name)
        col = x[:, j]
        col[np.isnan(col)] = np.float32(value)
    return Dataset(x.reshape(ds.x.shape), ds.y, ds.feature_names, ds.continuous)


def federated_fill_values(datasets: Sequence[Dataset], schema: DataSchema) -> dict[str, float]:
    """Both passes of the imputation exchange over several sites' data, in one process.

    The same functions run on each site and on the aggregator in a federation; only the
    summaries would travel.
    """
    if schema.missing != "impute":
        return {}
    if not datasets:
        raise ValueError("no datasets to compute fill values from")
    columns = imputed_columns(datasets[0], schema)
    statistic = schema.impute or "mean"
    merged_range = merge_ranges([site_range(d, columns) for d in datasets]) if statistic == "median" else None
    edges = plan_edges(merged_range, columns)
    merged = merge_summaries([site_summary(d, columns, edges) for d in datasets])
    return fill_values(merged, edges, columns, statistic)
