"""The demo data that ships with fedpact's own dependencies, so a fresh install needs no download."""

from __future__ import annotations

import numpy as np

from fedpact.common.definition import DataSchema
from fedpact.data.dataset import Dataset
from fedpact.data.partition import split_iid

DIGITS_CLASSES: list[int] = list(range(10))


def load_digits_dataset() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 samples), pixels scaled from 0..16 to [0, 1]."""
    from fedpact.common.extras import require

    require("data", "the bundled digits data set")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    return Dataset(x, bunch.target.astype(np.int64), [f"pixel_{i}" for i in range(x.shape[1])])


def digits_federation(
    n_participants: int, test_fraction: float = 0.25, seed: int = 0
) -> tuple[list[Dataset], Dataset]:
    """IID shards of the digits for ``n_participants`` plus a held-out test set for the aggregator."""
    train, test = load_digits_dataset().split(test_fraction, seed)
    return split_iid(train, n_participants, seed), test


def digits_schema() -> DataSchema:
    return DataSchema(kind="tabular", features=64, classes=DIGITS_CLASSES)
