"""Declared data preparation: reading by the definition, federated imputation, one-hot encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedpact.common.definition import DataSchema
from fedpact.common.errors import DataSchemaError
from fedpact.data import (
    Dataset,
    check_dataset,
    conform,
    federated_fill_values,
    impute,
    load_task_data,
)
from fedpact.data.errors import DataLoadError

COLUMNS = ["age", "cp", "colour", "num"]


def _schema(**over: object) -> DataSchema:
    base: dict[str, object] = {"features": ["age", "cp", "colour"], "label": "num", "classes": [0, 1],
                               "header": False, "columns": COLUMNS, "missing": "impute",
                               "categorical": {"cp": [1, 2, 3], "colour": ["red", "blue"]}}
    return DataSchema.model_validate(base | over)


def _write(tmp_path: Path, name: str, rows: list[str]) -> Path:
    p = tmp_path / name
    p.write_text("\n".join(rows) + "\n")
    return p


def test_headerless_file_with_gaps_categories_and_text_is_read_by_the_definition(tmp_path: Path) -> None:
    p = _write(tmp_path, "site.data", ["50,1,red,0", "?,3,blue,1", "70,?,red,1", "60,2,?,?"])
    ds = load_task_data(p, _schema())
    assert len(ds) == 3  # the row without a label is dropped: a label cannot be imputed
    assert ds.feature_names == ["age", "cp", "colour"]
    assert np.isnan(ds.x[1, 0]) and np.isnan(ds.x[2, 1])
    assert ds.x[:, 2].tolist() == [0.0, 1.0, 0.0]  # text categories are held as their position


def test_unknown_category_in_a_file_is_named(tmp_path: Path) -> None:
    p = _write(tmp_path, "site.data", ["50,1,green,0"])
    with pytest.raises(DataLoadError, match="line 1, column 'colour': value\\(s\\) 'green' are not among"):
        load_task_data(p, _schema())


def test_federated_mean_and_median_use_every_site_never_one(tmp_path: Path) -> None:
    a = Dataset(np.array([[1.0, 1, 0], [np.nan, 2, 1], [3.0, 3, 0], [5.0, 3, 0]]), [0, 1, 0, 0],
                ["age", "cp", "colour"])
    b = Dataset(np.array([[10.0, 1, 0], [20.0, np.nan, 1], [30.0, 1, 1], [40.0, 2, 0]]), [0, 1, 0, 1],
                ["age", "cp", "colour"])
    pooled_age = np.array([1.0, 3, 5, 10, 20, 30, 40])
    fills = federated_fill_values([a, b], _schema())
    assert set(fills) == {"age"}  # categorical gaps become all-zero one-hot rows instead
    assert fills["age"] == pytest.approx(pooled_age.mean())
    median = federated_fill_values([a, b], _schema(impute="median"))["age"]
    width = (40 - 1) / 512
    assert abs(median - np.median(pooled_age)) <= width
    filled = impute(a, fills)
    assert filled.x[1, 0] == pytest.approx(pooled_age.mean()) and np.isnan(a.x[1, 0])  # input left unchanged
    assert check_dataset(filled, _schema()) == []
    encoded = conform(impute(b, fills), _schema())
    assert encoded.feature_names == ["age", "cp=1", "cp=2", "cp=3", "colour=red", "colour=blue"]
    assert encoded.x[1].tolist() == [20.0, 0, 0, 0, 0, 1]
    assert encoded.x[3].tolist() == [40.0, 0, 1, 0, 1, 0]


def test_gaps_not_yet_imputed_and_bad_categories_are_reported() -> None:
    ds = Dataset(np.array([[np.nan, 1, 0], [2.0, 7, 0]]), [0, 1], ["age", "cp", "colour"])
    problems = check_dataset(ds, _schema())
    assert any("impute them with the federated values first" in p for p in problems)
    assert any("column 'cp' holds value(s) 7.0 that are not among its declared categories [1, 2, 3]" in p
               for p in problems)
    with pytest.raises(DataSchemaError, match="not among its declared categories"):
        conform(impute(ds, {"age": 1.0}), _schema())
    with pytest.raises(ValueError, match="column\\(s\\) the data lacks: 'weight'"):
        impute(ds, {"weight": 1.0})
    with pytest.raises(ValueError, match="no site has any value in column\\(s\\) 'age'"):
        federated_fill_values([Dataset(np.array([[np.nan, 1, 0]]), [0], ["age", "cp", "colour"])], _schema())


def test_regression_and_unlabelled_files(tmp_path: Path) -> None:
    p = _write(tmp_path, "r.csv", ["x1,x2,price", "1,2,3.5", "2,3,4.25"])
    reg = load_task_data(p, DataSchema(task="regression", features=["x1", "x2"], label="price"))
    assert reg.continuous and reg.y.tolist() == [3.5, 4.25]
    assert check_dataset(reg, DataSchema(task="regression", features=["x1", "x2"], label="price")) == []
    train, test = reg.split(0.5, seed=0)
    assert train.continuous and len(train) + len(test) == 2
    un = load_task_data(p, DataSchema(task="clustering", features=["x1", "x2"]))
    assert un.x.shape == (2, 2) and un.y.tolist() == [0, 0]
    with pytest.raises(DataLoadError, match="not a finite number"):
        load_task_data(_write(tmp_path, "bad.csv", ["x1,x2,price", "1,2,3", "1,2,inf"]),
                       DataSchema(task="regression", features=["x1", "x2"], label="price", missing="impute"))
    classify = DataSchema(features=["x1", "x2"], label="price", classes=[0, 1])
    assert any("continuous targets" in p for p in check_dataset(reg, classify))


def test_npz_regression_targets_follow_the_task(tmp_path: Path) -> None:
    p = tmp_path / "site.npz"
    np.savez(p, x=np.ones((3, 2)), y=np.array([0.5, 1.5, 2.25]))
    ds = load_task_data(p, DataSchema(task="regression", features=2))
    assert ds.continuous and ds.y.tolist() == [0.5, 1.5, 2.25]
    with pytest.raises(DataLoadError, match="whole numbers"):
        load_task_data(p, DataSchema(features=2, classes=[0, 1]))
