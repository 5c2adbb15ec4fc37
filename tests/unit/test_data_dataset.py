import numpy as np
import pytest

from fedpact.data import (
    Dataset,
    check_dataset,
    digits_federation,
    digits_schema,
    load_digits_dataset,
    split_dirichlet,
    split_iid,
)


def _ids_dataset(n: int = 300, classes: int = 3) -> Dataset:
    """Samples whose single feature is their own index, so shards can be traced back."""
    return Dataset(np.arange(n, dtype=np.float32).reshape(-1, 1), np.arange(n) % classes)


def test_dataset_coerces_types_and_checks_lengths():
    ds = Dataset(np.ones((4, 2), dtype=np.float64), np.array([0.0, 1.0, 1.0, 2.0]))
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64 and len(ds) == 4
    with pytest.raises(ValueError, match="3 samples but y has 2"):
        Dataset(np.ones((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="whole numbers"):
        Dataset(np.ones((2, 1)), np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="feature names"):
        Dataset(np.ones((2, 2)), np.array([0, 1]), ["a"])


def test_subset_copies():
    ds = _ids_dataset(10)
    sub = ds.subset([1, 3])
    sub.x[0, 0] = -1
    assert ds.x[1, 0] == 1 and sub.y.tolist() == [1, 0]


def test_split_is_stratified_disjoint_and_deterministic():
    ds = Dataset(np.arange(100, dtype=np.float32).reshape(-1, 1), np.array([0] * 80 + [1] * 20))
    train, test = ds.split(0.25, seed=3)
    assert len(train) == 75 and len(test) == 25
    assert np.bincount(test.y).tolist() == [20, 5]
    ids = np.concatenate([train.x[:, 0], test.x[:, 0]])
    assert sorted(ids.tolist()) == list(range(100))
    again = ds.split(0.25, seed=3)[1]
    other = ds.split(0.25, seed=4)[1]
    assert np.array_equal(again.x, test.x) and not np.array_equal(other.x, test.x)


def test_split_zero_holdout_gives_empty_second_part():
    ds = load_digits_dataset()
    train, test = ds.split(0.0, seed=0)
    assert train is ds and len(test) == 0 and test.x.shape == (0, 64)


def test_split_iid_shards_cover_everything_once():
    ds = _ids_dataset(301)
    parts = split_iid(ds, 4, seed=1)
    assert sorted(len(p) for p in parts) == [75, 75, 75, 76]
    ids = np.concatenate([p.x[:, 0] for p in parts])
    assert sorted(ids.tolist()) == list(range(301))
    assert all(np.array_equal(a.x, b.x) for a, b in zip(parts, split_iid(ds, 4, seed=1)))
    with pytest.raises(ValueError, match="at least one sample"):
        split_iid(_ids_dataset(3), 5, seed=0)


def test_split_dirichlet_is_label_skewed_and_never_empty():
    ds = _ids_dataset(1000, classes=10)
    parts = split_dirichlet(ds, 20, alpha=0.05, seed=0)
    assert len(parts) == 20 and all(len(p) > 0 for p in parts)
    ids = np.concatenate([p.x[:, 0] for p in parts])
    assert sorted(ids.tolist()) == list(range(1000))
    skewed = np.mean([len(np.unique(p.y)) for p in parts])
    iid = np.mean([len(np.unique(p.y)) for p in split_iid(ds, 20, seed=0)])
    assert skewed < iid / 2
    with pytest.raises(ValueError, match="alpha"):
        split_dirichlet(ds, 2, alpha=0, seed=0)


def test_builtin_digits():
    ds = load_digits_dataset()
    assert ds.x.shape == (1797, 64) and ds.x.dtype == np.float32
    assert 0.0 <= ds.x.min() and ds.x.max() == 1.0
    assert ds.feature_names[0] == "pixel_0" and ds.feature_names[-1] == "pixel_63"
    shards, test = digits_federation(3, test_fraction=0.25, seed=0)
    assert len(shards) == 3 and len(test) == 449 and sum(len(s) for s in shards) == 1348
    schema = digits_schema()
    assert schema.n_features == 64 and schema.classes == list(range(10))
    assert check_dataset(ds, schema) == [] and all(check_dataset(s, schema) == [] for s in shards)
