"""Use a downloaded model: load the safetensors file and predict, standardisation included."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpact.common.definition import DataSchema, ModelSpec
from fedpact.common.errors import FedpactError
from fedpact.common.tensors import decode_metadata, decode_weights


@dataclass
class TrainedModel:
    model: Any
    schema: DataSchema
    metadata: dict[str, Any]
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        from fedpact.algorithms.standardize import apply_standardization

        x = np.asarray(x, dtype=np.float32).reshape((-1, *self.schema.sample_shape))
        if self.mean is not None and self.std is not None:
            x = apply_standardization(x, self.mean, self.std)
        return x

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels (the task's class values, not indices)."""
        idx = self.model.predict(self._prepare(x))
        return np.asarray(self.schema.classes)[idx]

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        from fedpact.data.schema import encode_labels

        return self.model.evaluate(self._prepare(x), encode_labels(np.asarray(y), self.schema.classes))


def load_model(path: str | Path) -> TrainedModel:
    """Load a model file written by the aggregator (built-in model names only)."""
    from fedpact.models.registry import build_model

    data = Path(path).read_bytes()
    meta_raw = decode_metadata(data).get("fedpact")
    if meta_raw is None:
        raise FedpactError(f"{path} is not a fedpact model file (no 'fedpact' metadata)")
    meta = json.loads(meta_raw)
    tensors = decode_weights(data)
    mean = tensors.pop("standardization.mean", None)
    std = tensors.pop("standardization.std", None)
    schema = DataSchema.model_validate(meta["data"])
    model = build_model(ModelSpec.model_validate(meta["model"]), schema)
    model.set_weights(tensors)
    return TrainedModel(model, schema, meta, mean, std)
