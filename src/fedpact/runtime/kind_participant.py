"""A participant for every built-in task kind: classification, regression and clustering.

``DataParticipant`` encodes class labels, so it trains classifiers only. This one prepares
the local data as the definition declares (imputation with fills the caller obtained, the
schema check, one-hot encoding) and hands the model what its task kind trains on (class
indices, float targets, or nothing for clustering), through
:mod:`fedpact.runtime.task_kinds`. Training, evaluation and federated standardisation are
``DataParticipant``'s. Until the participant rounds fold it in, pass it to
``run_participant`` (or ``Client.run_participant``) explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedpact.common.definition import TaskDefinition
from fedpact.models.registry import build_model
from fedpact.runtime import task_kinds
from fedpact.runtime.participant import DataParticipant, Participant


class TaskParticipant(DataParticipant):
    """Trains the task's built-in model on local data of any task kind but analytics."""

    def __init__(self, data: Any, *, fills: Mapping[str, float] | None = None, threads: int | None = None) -> None:
        super().__init__(data, threads=threads)
        self.fills = dict(fills or {})

    def setup(self, definition: TaskDefinition) -> None:
        Participant.setup(self, definition)
        schema = definition.data
        if schema.task == "analytics":
            raise ValueError("an analytics task trains no model: answer its statistics requests instead")
        data = task_kinds.prepare(self.data, schema, self.fills)
        self.model = build_model(definition.model, schema, seed=definition.seed)
        if self.threads and definition.model is not None and definition.model.name in ("mlp", "cnn"):
            import torch

            torch.set_num_threads(self.threads)
        train, test = data.split(definition.evaluation.holdout, seed=definition.seed)
        self._raw_train_x, self._raw_test_x = train.x, test.x
        self.train_x, self.test_x = train.x, test.x
        self.train_y = task_kinds.targets(train, schema)
        self.test_y = task_kinds.targets(test, schema)
