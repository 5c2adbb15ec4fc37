"""How a dataset is dealt out to virtual participants: index lists, reproducible, never empty."""

from __future__ import annotations

import numpy as np
import pytest

from fedpact.simulation.partition import PartitionError, PartitionSpec, partition

LABELS = np.repeat(np.arange(10), 50)  # 500 samples, 10 classes


def classes_per_part(parts: list[np.ndarray]) -> float:
    return float(np.mean([len(np.unique(LABELS[p])) for p in parts]))


def test_iid_deals_every_sample_once_in_near_equal_parts() -> None:
    parts = partition(PartitionSpec.parse("iid"), LABELS, 7, seed=1)
    assert len(parts) == 7
    assert sorted(np.concatenate(parts).tolist()) == list(range(500))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_dirichlet_skews_labels_the_smaller_alpha_the_more() -> None:
    skewed = partition(PartitionSpec.parse("dirichlet:0.1"), LABELS, 20, seed=1)
    mild = partition(PartitionSpec.parse("dirichlet:100"), LABELS, 20, seed=1)
    assert all(len(p) > 0 for p in skewed)
    assert sorted(np.concatenate(skewed).tolist()) == list(range(500))
    assert classes_per_part(skewed) < 5 < classes_per_part(mild)


def test_shards_give_each_participant_at_most_k_labels_per_shard() -> None:
    parts = partition(PartitionSpec.parse("shards:2"), LABELS, 25, seed=3)
    assert len(parts) == 25 and all(len(p) == 20 for p in parts)
    assert max(len(np.unique(LABELS[p])) for p in parts) <= 2  # shards of 10 never straddle a class of 50


def test_more_participants_than_samples_reuses_samples_and_leaves_nobody_empty() -> None:
    for spec in ("iid", "dirichlet:0.3"):
        parts = partition(PartitionSpec.parse(spec), LABELS[:30], 100, seed=0)
        assert len(parts) == 100 and all(len(p) >= 1 for p in parts)
        assert set(np.concatenate(parts).tolist()) <= set(range(30))


def test_column_splits_by_value_and_refuses_a_wrong_count() -> None:
    site = np.tile(np.array([3.0, 1.0, 2.0]), 10)
    parts = partition(PartitionSpec.parse("column:site"), site, 3, seed=0, column=site)
    assert [set(site[p].tolist()) for p in parts] == [{1.0}, {2.0}, {3.0}]
    with pytest.raises(PartitionError, match="3 distinct values.*--participants 3"):
        partition(PartitionSpec.parse("column:site"), site, 4, seed=0, column=site)


def test_same_seed_same_partition_other_seed_another() -> None:
    spec = PartitionSpec.parse("dirichlet:0.5")
    a, b, c = (partition(spec, LABELS, 10, seed=s) for s in (4, 4, 5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize(("text", "message"), [
    ("dirichlet:-1", "finite number > 0"), ("dirichlet:x", "needs a number"), ("dirichlet:nan", "finite number"),
    ("shards:0", "whole number >= 1"), ("shards:two", "whole number"), ("column:", "unknown partition"),
    ("zipf:2", "unknown partition 'zipf:2'"), ("iid:3", "unknown partition"),
])
def test_bad_partition_specs_are_refused_precisely(text: str, message: str) -> None:
    with pytest.raises(PartitionError, match=message):
        PartitionSpec.parse(text)


def test_too_many_shards_and_no_participants_are_refused() -> None:
    with pytest.raises(PartitionError, match="need 1000 samples, the data has 500"):
        partition(PartitionSpec.parse("shards:10"), LABELS, 100, seed=0)
    with pytest.raises(PartitionError, match="at least 1 participant"):
        partition(PartitionSpec.parse("iid"), LABELS, 0, seed=0)
