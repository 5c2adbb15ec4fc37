"""The in-memory form of a participant's data, shared by loaders, checks and models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _as_labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype == np.int64:
        return y
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            raise ValueError(f"labels must be whole numbers (class values); found e.g. {y[~whole][:5].tolist()}")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"labels must be integer class values, not {y.dtype}")
    return y.astype(np.int64)


def _as_values(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "fiub":
        raise ValueError(f"regression targets must be numbers, not {y.dtype}")
    return y.astype(np.float64)


@dataclass
class Dataset:
    """Samples ``x`` (float32, shape ``(n, *sample_shape)``) and raw labels ``y`` (int64).

    Labels stay as the values found in the file (e.g. 0..4 for heart disease) so that the
    schema check can name offending values; models get indices from ``encode_labels``.
    With ``continuous`` (regression) ``y`` holds float64 target values instead. Unlabelled
    data (clustering, analytics) carries zeros as labels.
    """

    x: np.ndarray
    y: np.ndarray
    feature_names: list[str] | None = None
    continuous: bool = False

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=np.float32)
        if self.x.ndim == 1:
            self.x = self.x.reshape(-1, 1)
        self.y = (_as_values(self.y) if self.continuous else _as_labels(self.y)).reshape(-1)
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)} labels")
        if self.feature_names is not None:
            self.feature_names = [str(n) for n in self.feature_names]
            if self.x.ndim != 2 or len(self.feature_names) != self.x.shape[1]:
                raise ValueError(
                    f"{len(self.feature_names)} feature names given for samples of shape {self.sample_shape}"
                )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def subset(self, idx: np.ndarray | list[int] | slice) -> Dataset:
        """A new dataset holding the selected samples (copies, so shards never alias)."""
        if isinstance(idx, slice):
            return Dataset(self.x[idx].copy(), self.y[idx].copy(), self.feature_names, self.continuous)
        idx = np.asarray(idx, dtype=np.int64)
        return Dataset(self.x[idx], self.y[idx], self.feature_names, self.continuous)

    @classmethod
    def unlabelled(cls, x: np.ndarray, feature_names: list[str] | None = None) -> Dataset:
        """Samples without labels, for clustering and analytics."""
        return cls(x, np.zeros(len(x), dtype=np.int64), feature_names)

    def split(self, holdout: float, seed: int) -> tuple[Dataset, Dataset]:
        """Stratified shuffle split into (train, holdout), reproducible from ``seed``.

        Every class keeps its share in both parts as closely as whole samples allow, so
        small local holdouts still see the rare classes a participant has. Regression
        targets are not classes: their split is a plain shuffle.
        """
        if not 0.0 <= holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {holdout}")
        n = len(self)
        n_test = min(round(holdout * n), max(n - 1, 0))
        if n_test == 0:
            return self, self.subset(np.empty(0, dtype=np.int64))
        rng = np.random.default_rng(seed)
        if self.continuous:
            test_idx = np.sort(rng.permutation(n)[:n_test])
            keep = np.setdiff1d(np.arange(n), test_idx)
            return self.subset(keep), self.subset(test_idx)
        classes, inverse = np.unique(self.y, return_inverse=True)
        counts = np.bincount(inverse, minlength=len(classes))
        quota = counts * (n_test / n)
        take = np.floor(quota).astype(np.int64)
        remainder = n_test - int(take.sum())
        if remainder > 0:
            order = np.lexsort((rng.random(len(classes)), -(quota - take)))
            take[order[:remainder]] += 1
        test_parts = []
        for c, k in enumerate(take):
            members = np.flatnonzero(inverse == c)
            test_parts.append(rng.permutation(members)[:k])
        test_idx = np.sort(np.concatenate(test_parts))
        mask = np.ones(n, dtype=bool)
        mask[test_idx] = False
        return self.subset(np.flatnonzero(mask)), self.subset(test_idx)
