"""Does local data fit a task? Checks that explain every mismatch, and the fixes that are safe.

A participant learns about all problems at once (not one per attempt), each phrased in
terms of their own data, before any training or network traffic happens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedpact.common.definition import DataSchema
from fedpact.common.errors import DataSchemaError
from fedpact.data.dataset import Dataset

_MAX_LISTED = 10


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _listing(values: Sequence[object]) -> str:
    shown = ", ".join(repr(v) for v in values[:_MAX_LISTED])
    more = len(values) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _shape_problems(ds: Dataset, schema: DataSchema) -> list[str]:
    size = int(np.prod(ds.sample_shape, dtype=np.int64))
    if schema.kind == "tabular":
        expected = schema.n_features
        if ds.feature_names is not None and ds.feature_names == schema.encoded_features:
            return []
        if size != expected:
            return [f"task expects {expected} features, your data has {size}"]
        return []
    expected_shape = schema.sample_shape
    expected_size = int(np.prod(expected_shape))
    if ds.sample_shape != expected_shape and size != expected_size:
        return [
            (f"task expects images of shape {_shape_text(expected_shape)} ({expected_size} values per sample), "
             f"your data has samples of shape {_shape_text(ds.sample_shape)} ({size} values)")
        ]
    return []


def _name_problems(ds: Dataset, schema: DataSchema) -> list[str]:
    if not isinstance(schema.features, list) or ds.feature_names is None or ds.feature_names == schema.encoded_features:
        return []
    expected, got = schema.features, ds.feature_names
    problems = []
    absent = [n for n in expected if n not in got]
    extra = [n for n in got if n not in expected]
    if absent:
        problems.append(f"your data lacks the column(s) the task needs: {_listing(absent)}")
    if extra:
        problems.append(
            f"your data has column(s) the task does not use: {_listing(extra)} "
            "(load only the task's columns, e.g. features=[...])"
        )
    if not absent and not extra and list(got) != list(expected):
        problems.append(
            f"your columns are in a different order than the task's ({_listing(list(got))} instead of "
            f"{_listing(list(expected))}); conform() reorders them"
        )
    return problems


def _label_problems(ds: Dataset, schema: DataSchema) -> list[str]:
    if schema.task == "regression":
        if not ds.continuous:
            return [("a regression task needs numeric targets: load the data with continuous=True "
                     "(fedpact.data.prepare.load_task_data does so)")]
        bad = int((~np.isfinite(ds.y)).sum())
        return [f"{bad} target value(s) are NaN or infinite; fill or remove those rows"] if bad else []
    if schema.task != "classification":
        return []
    if ds.continuous:
        return ["a classification task needs class labels, but the data holds continuous targets"]
    values, counts = np.unique(ds.y, return_counts=True)
    unknown = ~np.isin(values, np.asarray(schema.classes, dtype=np.int64))
    if not unknown.any():
        return []
    listed = [f"{int(v)} ({int(c)} samples)" for v, c in zip(values[unknown], counts[unknown])]
    return [
        f"label values not among the task's classes {schema.classes}: "
        + ", ".join(listed[:_MAX_LISTED])
        + (f" and {len(listed) - _MAX_LISTED} more" if len(listed) > _MAX_LISTED else "")
    ]


def _categorical_columns(ds: Dataset, schema: DataSchema) -> list[int]:
    if not schema.categorical or ds.feature_names is None or ds.feature_names == schema.encoded_features:
        return []
    return [j for j, n in enumerate(ds.feature_names) if n in schema.categorical]


def _category_codes(values: np.ndarray, cats: Sequence[object]) -> np.ndarray:
    """Position of each value among the declared categories; -1 for an undeclared value, -2 for NaN.

    Numeric categories match by value; a column with text categories already holds positions.
    """
    codes = np.full(len(values), -1, dtype=np.int64)
    codes[np.isnan(values)] = -2
    if any(isinstance(c, str) for c in cats):
        whole = ~np.isnan(values) & (values == np.round(values)) & (values >= 0) & (values < len(cats))
        codes[whole] = values[whole].astype(np.int64)
        return codes
    for i, c in enumerate(cats):
        codes[values == float(c)] = i  # type: ignore[arg-type]
    return codes


def _categorical_problems(ds: Dataset, schema: DataSchema) -> list[str]:
    problems = []
    assert ds.feature_names is not None or not _categorical_columns(ds, schema)
    for j in _categorical_columns(ds, schema):
        name = ds.feature_names[j]  # type: ignore[index]
        cats = schema.categorical[name]
        values = ds.x[:, j].astype(np.float64)
        unknown = np.unique(values[_category_codes(values, cats) == -1])
        if unknown.size:
            problems.append(f"column {name!r} holds value(s) {_listing([float(v) for v in unknown])} that are not "
                            f"among its declared categories {list(cats)}")
    return problems


def _finite_problems(ds: Dataset, schema: DataSchema) -> list[str]:
    flat = ds.x.reshape(len(ds), -1)
    if schema.missing == "impute":
        # missing categorical cells become all-zero one-hot rows in conform(); only numeric gaps need fills
        flat = np.delete(flat, _categorical_columns(ds, schema), axis=1)
    nan = np.isnan(flat)
    inf = np.isinf(flat)
    n_nan, n_inf = int(nan.sum()), int(inf.sum())
    if not n_nan and not n_inf:
        return []
    bad_rows = int((nan | inf).any(axis=1).sum())
    where = ""
    if ds.feature_names is not None and flat.shape[1] == len(ds.feature_names):
        per_col = (nan | inf).sum(axis=0)
        cols = [f"{ds.feature_names[j]!r} ({int(per_col[j])})" for j in np.flatnonzero(per_col)]
        where = f"; by column: {', '.join(cols[:_MAX_LISTED])}"
    fix = ("impute them with the federated values first (fedpact.data.prepare.impute)" if schema.missing == "impute"
           else "fill or remove them, or declare data.missing: drop or impute")
    return [f"features contain {n_nan} NaN and {n_inf} infinite value(s) in {bad_rows} sample(s){where}; {fix}"]


def check_dataset(ds: Dataset, schema: DataSchema) -> list[str]:
    """Every way ``ds`` does not fit ``schema``, in plain words; empty when it fits."""
    if len(ds) == 0:
        return ["your data has no samples"]
    problems = _shape_problems(ds, schema)
    problems += _name_problems(ds, schema)
    problems += _label_problems(ds, schema)
    problems += _categorical_problems(ds, schema)
    problems += _finite_problems(ds, schema)
    return problems


def ensure_fits(ds: Dataset, schema: DataSchema) -> None:
    """Raise DataSchemaError listing every problem, so nothing is trained on unfit data."""
    problems = check_dataset(ds, schema)
    if problems:
        raise DataSchemaError(problems)


def one_hot(ds: Dataset, schema: DataSchema) -> Dataset:
    """Replace each categorical column by one 0/1 column per declared category (``col=cat``).

    A missing cell (NaN, kept by ``missing: impute``) becomes an all-zero row: "none of the
    declared categories". Data already encoded (named like ``schema.encoded_features``)
    passes through.
    """
    cols = _categorical_columns(ds, schema)
    if not cols:
        return ds
    assert ds.feature_names is not None
    parts: list[np.ndarray] = []
    names: list[str] = []
    for j, name in enumerate(ds.feature_names):
        if j not in cols:
            parts.append(ds.x[:, j : j + 1])
            names.append(name)
            continue
        cats = schema.categorical[name]
        codes = _category_codes(ds.x[:, j].astype(np.float64), cats)
        if (codes == -1).any():
            raise DataSchemaError(_categorical_problems(ds, schema))
        block = np.zeros((len(ds), len(cats)), dtype=np.float32)
        present = codes >= 0
        block[np.flatnonzero(present), codes[present]] = 1.0
        parts.append(block)
        names.extend(f"{name}={c}" for c in cats)
    return Dataset(np.concatenate(parts, axis=1), ds.y, names, ds.continuous)


def conform(ds: Dataset, schema: DataSchema) -> Dataset:
    """Apply the harmless fixes: reorder named columns, one-hot encode categorical ones, reshape.

    Columns are only reordered when the data has exactly the task's columns; missing or
    extra columns are left for ``check_dataset`` to report rather than silently dropped.
    """
    x, names = ds.x, ds.feature_names
    wanted = schema.features if isinstance(schema.features, list) else None
    if wanted is not None and names is not None and names != wanted and sorted(names) == sorted(wanted):
        order = [names.index(n) for n in wanted]
        x, names = x[:, order], list(wanted)
    if schema.categorical and names is not None and names != schema.encoded_features:
        encoded = one_hot(Dataset(x, ds.y, names, ds.continuous), schema)
        x, names = encoded.x, encoded.feature_names
    target = schema.sample_shape
    size = int(np.prod(target))
    if x.shape[1:] != target and int(np.prod(x.shape[1:], dtype=np.int64)) == size:
        x = x.reshape((len(ds), *target))
        if len(target) != 1:
            names = None
    if x is ds.x:
        return ds
    return Dataset(x, ds.y, names, ds.continuous)


def encode_labels(y: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Class indices 0..C-1 in the order of ``classes`` (the order the model's outputs use)."""
    classes_arr = np.asarray(classes, dtype=np.int64)
    y = np.asarray(y).astype(np.int64, copy=False).reshape(-1)
    order = np.argsort(classes_arr, kind="stable")
    sorted_classes = classes_arr[order]
    pos = np.clip(np.searchsorted(sorted_classes, y), 0, len(sorted_classes) - 1)
    known = sorted_classes[pos] == y
    if not known.all():
        values, counts = np.unique(y[~known], return_counts=True)
        listed = ", ".join(f"{int(v)} ({int(c)} samples)" for v, c in zip(values[:_MAX_LISTED], counts))
        raise DataSchemaError([f"label values not among the task's classes {list(classes)}: {listed}"])
    return order[pos].astype(np.int64)
