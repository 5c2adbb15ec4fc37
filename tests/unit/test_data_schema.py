import numpy as np
import pytest

from fedpact.common.definition import DataSchema
from fedpact.common.errors import DataSchemaError
from fedpact.data import Dataset, check_dataset, conform, encode_labels, ensure_fits

TABULAR = DataSchema(kind="tabular", features=["a", "b", "c"], classes=[0, 1])
IMAGE = DataSchema(kind="image", shape=[1, 4, 4], classes=[0, 1, 2])


def _tab(names=("a", "b", "c"), y=(0, 1, 1, 0)) -> Dataset:
    return Dataset(np.arange(len(y) * len(names), dtype=np.float32).reshape(len(y), -1), np.array(y), list(names))


def test_fitting_data_has_no_problems():
    assert check_dataset(_tab(), TABULAR) == []
    ensure_fits(_tab(), TABULAR)


def test_feature_count():
    schema = DataSchema(features=64, classes=[0, 1])
    ds = Dataset(np.zeros((3, 13)), np.array([0, 1, 0]))
    assert check_dataset(ds, schema) == ["task expects 64 features, your data has 13"]


def test_image_shape():
    ds = Dataset(np.zeros((2, 1, 8, 8)), np.array([0, 1]))
    problems = check_dataset(ds, IMAGE)
    assert problems == ["task expects images of shape 1x4x4 (16 values per sample), your data has samples of shape 1x8x8 (64 values)"]
    assert check_dataset(Dataset(np.zeros((2, 16)), np.array([0, 1])), IMAGE) == []


def test_missing_extra_and_misordered_columns():
    problems = check_dataset(_tab(names=("a", "c", "z")), TABULAR)
    assert problems == [
        "your data lacks the column(s) the task needs: 'b'",
        "your data has column(s) the task does not use: 'z' (load only the task's columns, e.g. features=[...])",
    ]
    (problem,) = check_dataset(_tab(names=("c", "a", "b")), TABULAR)
    assert "different order" in problem and "conform()" in problem
    assert check_dataset(_tab(names=("c", "a", "b")), DataSchema(features=3, classes=[0, 1])) == []


def test_unknown_labels_listed_with_counts():
    (problem,) = check_dataset(_tab(y=(0, 1, 2, 2, 4, 1)), TABULAR)
    assert problem == "label values not among the task's classes [0, 1]: 2 (2 samples), 4 (1 samples)"


def test_non_finite_features_counted():
    ds = _tab()
    ds.x[0, 1] = np.nan
    ds.x[2, 1] = np.nan
    ds.x[3, 2] = np.inf
    (problem,) = check_dataset(ds, TABULAR)
    assert problem.startswith("features contain 2 NaN and 1 infinite value(s) in 3 sample(s)")
    assert "'b' (2)" in problem and "'c' (1)" in problem


def test_empty_dataset():
    assert check_dataset(Dataset(np.zeros((0, 3)), np.zeros(0)), TABULAR) == ["your data has no samples"]


def test_ensure_fits_reports_every_problem():
    ds = Dataset(np.full((2, 5), np.nan), np.array([0, 7]))
    with pytest.raises(DataSchemaError) as err:
        ensure_fits(ds, TABULAR)
    assert len(err.value.problems) == 3
    assert "task expects 3 features, your data has 5" in str(err.value)


def test_conform_reshapes_and_reorders():
    flat = Dataset(np.arange(32, dtype=np.float32).reshape(2, 16), np.array([0, 1]))
    shaped = conform(flat, IMAGE)
    assert shaped.x.shape == (2, 1, 4, 4) and shaped.x[1, 0, 3, 3] == 31
    ds = _tab(names=("c", "a", "b"))
    fixed = conform(ds, TABULAR)
    assert fixed.feature_names == ["a", "b", "c"]
    assert np.array_equal(fixed.x, ds.x[:, [1, 2, 0]])
    assert check_dataset(fixed, TABULAR) == []
    assert conform(_tab(), TABULAR) is not None
    assert conform(_tab(names=("a", "b", "z")), TABULAR).feature_names == ["a", "b", "z"]


def test_encode_labels_follows_class_order():
    y = np.array([10, 3, 7, 3])
    assert encode_labels(y, [3, 7, 10]).tolist() == [2, 0, 1, 0]
    assert encode_labels(y, [10, 7, 3]).tolist() == [0, 2, 1, 2]
    assert encode_labels(y, [10, 7, 3]).dtype == np.int64
    with pytest.raises(DataSchemaError, match=r"classes \[3, 7\]: 10 \(1 samples\)"):
        encode_labels(y, [3, 7])
