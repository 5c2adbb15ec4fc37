"""A participant for every built-in task kind: classification, regression, clustering, analytics.

``DataParticipant`` encodes class labels, so it trains classifiers only. This one prepares
the local data as the definition declares (imputation with the federated fills, the schema
check, one-hot encoding), hands the model what its task kind trains on (class indices,
standardised float targets, or nothing for clustering) and answers the aggregator's
statistics requests (imputation summaries, the k-means++ seed sample, analytics summaries)
through :mod:`fedpact.runtime.task_kinds`. With ``missing: impute`` the fills arrive from
the aggregator before round 1, so the model-facing data is prepared only then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedpact.common.definition import TaskDefinition
from fedpact.common.tensors import Weights
from fedpact.data.dataset import Dataset
from fedpact.data.prepare import impute, imputed_columns
from fedpact.data.schema import ensure_fits
from fedpact.models.registry import build_model
from fedpact.runtime import task_kinds
from fedpact.runtime.participant import DataParticipant, Participant


class TaskParticipant(DataParticipant):
    """Trains the task's built-in model on local data of any task kind, or answers analytics."""

    def __init__(self, data: Any, *, fills: Mapping[str, float] | None = None, threads: int | None = None) -> None:
        super().__init__(data, threads=threads)
        self.fills = dict(fills or {})
        self._prepared = False
        self._target: tuple[float, float] | None = None
        self._raw_train_y = np.zeros(0)

    def setup(self, definition: TaskDefinition) -> None:
        Participant.setup(self, definition)
        schema = definition.data
        self._prepared = False
        if schema.task == "analytics":
            return  # no model: only statistics requests are answered
        if schema.missing == "impute" and not self.fills:
            # Refuse unfit data before joining, gaps aside: they are filled once the fills arrive.
            ensure_fits(impute(self.data, {c: 0.0 for c in imputed_columns(self.data, schema)}), schema)
            self._raw_split = self.data.split(definition.evaluation.holdout, seed=definition.seed)
            return
        self._prepare()

    def _prepare(self) -> None:
        definition = self.definition
        schema = definition.data
        raw_train, raw_test = self.data.split(definition.evaluation.holdout, seed=definition.seed)
        train = task_kinds.prepare(raw_train, schema, self.fills)
        test = task_kinds.prepare(raw_test, schema, self.fills) if len(raw_test) else raw_test
        self.model = build_model(definition.model, schema, seed=definition.seed)
        if self.threads and definition.model is not None and definition.model.name in ("mlp", "cnn"):
            import torch

            torch.set_num_threads(self.threads)
        self._raw_train_x, self._raw_test_x = train.x, test.x
        self.train_x, self.test_x = train.x, test.x
        self._raw_train_y = task_kinds.targets(train, schema)
        self.train_y = self._raw_train_y
        self.test_y = task_kinds.targets(test, schema) if len(test) else np.zeros(0)
        self._prepared = True
        if self._std is not None:
            mean, std = self._std
            self._std = None
            self.set_standardization(mean, std)
        if self._target is not None:
            self.set_target_scale(*self._target)

    def set_fills(self, fills: Mapping[str, float]) -> None:
        """The federated imputation values from the aggregator; prepares the data the first time."""
        if self.definition.data.task == "analytics" or (self._prepared and dict(fills) == self.fills):
            return
        self.fills = {str(k): float(v) for k, v in fills.items()}
        self._prepare()

    def _require_prepared(self) -> None:
        if not self._prepared:
            raise ValueError("the imputation fills have not arrived from the aggregator yet")

    def num_samples(self) -> int:
        if self.definition.data.task == "analytics":
            return len(self.data)
        if not self._prepared:
            return len(self._raw_split[0])
        return int(len(self.train_y))

    def local_moments(self) -> dict[str, np.ndarray]:
        self._require_prepared()
        y = self._raw_train_y if self.definition.data.task == "regression" else None
        ds = Dataset(self._raw_train_x, y if y is not None else np.zeros(len(self._raw_train_x)), continuous=True)
        return task_kinds.moments(ds, self.definition.data)

    def set_standardization(self, mean: np.ndarray, std: np.ndarray) -> None:
        if not self._prepared:
            self._std = (mean, std)
            return
        super().set_standardization(mean, std)

    def set_target_scale(self, mean: float, std: float) -> None:
        """Train on the standardised regression target; evaluation maps predictions back to its unit."""
        self._target = (float(mean), float(std))
        if self._prepared:
            self.train_y = ((self._raw_train_y - mean) / std).astype(np.float32)

    def answer_statistics(self, kind: str, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if kind == task_kinds.KMEANS_SEED:
            # The seed comes from the data the model sees: imputed and standardised.
            self._require_prepared()
            return task_kinds.answer(kind, Dataset.unlabelled(self.train_x), self.definition, meta)
        return task_kinds.answer(kind, self.data, self.definition, meta)

    def fit(self, weights: Weights, config: Any, progress: Any) -> tuple[Weights, int, dict[str, float]]:
        self._require_prepared()
        return super().fit(weights, config, progress)

    def evaluate(self, weights: Weights) -> dict[str, float]:
        self._require_prepared()
        task = self.definition.data.task
        if len(self.test_y) == 0 or task == "classification":
            return super().evaluate(weights)
        self.model.set_weights(weights)
        return task_kinds.evaluation_report(self.model, self.test_x, self.test_y, task, target_scale=self._target)
