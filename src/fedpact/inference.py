"""Use a downloaded model: load the safetensors file and predict, standardisation included.

``fedpact.load_model(path)`` gives a :class:`TrainedModel` with ``predict`` (class values;
for a regression the target in its own unit, for k-means the cluster index),
``predict_proba`` and ``export`` (ONNX); ``fedpact predict`` and ``fedpact model export``
are the same calls from a terminal. Prediction input is read by :func:`read_features`, which
needs no label column, unlike the training loaders.
"""

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
    #: (mean, std) of a standardised regression target: predictions are mapped back to its unit.
    target: tuple[float, float] | None = None

    @property
    def task(self) -> str:
        return self.schema.task

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        from fedpact.algorithms.standardize import apply_standardization

        x = np.asarray(x, dtype=np.float32).reshape((-1, *self.schema.sample_shape))
        if self.mean is not None and self.std is not None:
            x = apply_standardization(x, self.mean, self.std)
        return x

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels (the task's class values, not indices), regression values in the
        target's unit, or cluster indices (0..k-1)."""
        out = np.asarray(self.model.predict(self._prepare(x)))
        if self.task == "regression":
            out = out.astype(np.float64).reshape(-1)
            return out * self.target[1] + self.target[0] if self.target is not None else out
        if self.task == "clustering":
            return out.astype(np.int64)
        return np.asarray(self.schema.classes)[out]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, C]``, columns in the order of :attr:`classes`."""
        return np.asarray(self.model.predict_proba(self._prepare(x)), dtype=np.float32)

    @property
    def classes(self) -> list[int]:
        """The task's class values, in the order of :meth:`predict_proba`'s columns."""
        return list(self.schema.classes)

    def to_onnx(self) -> bytes:
        """The model as an ONNX file, the standardisation included (needs ``fedpact[onnx]``).

        Input ``x``: float32 ``[N, *sample_shape]``; outputs ``probabilities`` ``[N, C]`` and
        ``label`` (the class values, int64).
        """
        from fedpact.models.onnx_export import OnnxGraph, standardized_input

        graph = OnnxGraph(self.schema.sample_shape)
        logits = self.model.onnx_layers(graph, standardized_input(graph, self.mean, self.std))
        return graph.to_bytes(logits, self.schema.classes)

    def export(self, path: str | Path, fmt: str = "onnx") -> Path:
        """Write the model in ``fmt`` (``onnx``) to ``path``; returns the path written."""
        if fmt != "onnx":
            raise FedpactError(f"unknown export format {fmt!r}; the supported format is 'onnx'")
        out = Path(path)
        out.write_bytes(self.to_onnx())
        return out

    def evaluate(self, x: np.ndarray, y: np.ndarray | None) -> dict[str, float]:
        from fedpact.data.schema import encode_labels
        from fedpact.models.metrics import regression_metrics, regression_sums

        if self.task == "regression":
            return regression_metrics(regression_sums(np.asarray(y, dtype=np.float64), self.predict(x)))
        if self.task == "clustering":
            return dict(self.model.evaluate(self._prepare(x)))
        assert y is not None

        return self.model.evaluate(self._prepare(x), encode_labels(np.asarray(y), self.schema.classes))


def load_model(path: str | Path) -> TrainedModel:
    """Load a model file written by the aggregator (built-in model names only)."""
    from fedpact.models.registry import build_model

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FedpactError(f"{path}: {'no such file; check the path' if isinstance(exc, FileNotFoundError) else exc}") from None
    meta_raw = decode_metadata(data).get("fedpact")
    if meta_raw is None:
        raise FedpactError(f"{path} is not a fedpact model file (no 'fedpact' metadata)")
    meta = json.loads(meta_raw)
    if meta.get("model") is None:
        raise FedpactError(f"{path} holds an analytics report, not a model: there is nothing to predict with")
    tensors = decode_weights(data)
    mean = tensors.pop("standardization.mean", None)
    std = tensors.pop("standardization.std", None)
    y_mean = tensors.pop("standardization.y_mean", None)
    y_std = tensors.pop("standardization.y_std", None)
    target = (float(y_mean.reshape(-1)[0]), float(y_std.reshape(-1)[0])) if y_mean is not None and y_std is not None \
        else None
    schema = DataSchema.model_validate(meta["data"])
    model = build_model(ModelSpec.model_validate(meta["model"]), schema)
    model.set_weights(tensors)
    return TrainedModel(model, schema, meta, mean, std, target)


def read_features(path: str | Path, schema: DataSchema) -> np.ndarray:
    """Samples to predict from a CSV (header row; the label column is ignored if present) or an
    NPZ archive with an array ``x``, checked against the task's features."""
    import csv

    p = Path(path)
    if not p.is_file():
        raise FedpactError(f"{p}: no such file; check the path")
    if p.suffix.lower() == ".npz":
        with np.load(p, allow_pickle=False) as archive:
            if "x" not in archive:
                raise FedpactError(f"{p.name}: the archive has no array 'x' (it has {', '.join(archive.files)})")
            x = np.asarray(archive["x"], dtype=np.float32)
    else:
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        if len(rows) < 2:
            raise FedpactError(f"{p.name}: needs a header row and at least one data row")
        header = rows[0]
        if isinstance(schema.features, list):
            absent = [f for f in schema.features if f not in header]
            if absent:
                raise FedpactError(f"{p.name}: feature column(s) {', '.join(map(repr, absent))} not found")
            cols = [header.index(f) for f in schema.features]
        else:
            cols = [i for i, name in enumerate(header) if name != schema.label]
        try:
            x = np.array([[float(row[c]) for c in cols] for row in rows[1:]], dtype=np.float32)
        except (ValueError, IndexError) as exc:
            raise FedpactError(f"{p.name}: every feature cell must be a number ({exc})") from None
    n = int(np.prod(schema.sample_shape))
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != n:
        raise FedpactError(
            f"{p.name}: the model expects {n} features per sample, the file has "
            f"{int(np.prod(x.shape[1:])) if x.ndim >= 2 else 0}"
        )
    return x


def write_predictions(path: str | Path, model: TrainedModel, x: np.ndarray) -> Path:
    """A CSV with one row per sample: ``prediction`` then ``p_<class>`` for every class."""
    import csv

    labels = model.predict(x)
    try:
        proba: np.ndarray | None = model.predict_proba(x)
    except FedpactError:
        proba = None
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["prediction"] + ([f"p_{c}" for c in model.classes] if proba is not None else []))
        for i, label in enumerate(labels):
            shown = f"{float(label):.6g}" if model.task == "regression" else int(label)
            w.writerow([shown] + ([f"{v:.6g}" for v in proba[i]] if proba is not None else []))
    return out
