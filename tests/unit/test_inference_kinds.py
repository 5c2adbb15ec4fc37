"""``fedpact predict`` and ``load_model`` for regression (values in the target's unit) and k-means (cluster ids)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import fedpact
from fedpact.cli.main import app
from fedpact.common.definition import DataSchema, ModelSpec
from fedpact.common.tensors import encode_weights
from fedpact.models.registry import build_model

FEATURES = ["a", "b", "c"]


def _model_file(tmp_path: Path, name: str, task: str, weights: dict, extra: dict) -> Path:
    schema = DataSchema(task=task, features=FEATURES, label="y" if task == "regression" else None)
    spec = ModelSpec(name=name, params={"k": 2} if name == "kmeans" else {})
    model = build_model(spec, schema)
    model.set_weights(weights)
    meta = {"task": "t", "model": spec.model_dump(), "data": schema.model_dump(), "rounds": 1}
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(encode_weights(model.get_weights() | extra, {"fedpact": json.dumps(meta)}))
    return path


def _csv(path: Path, x: np.ndarray) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(FEATURES)
        w.writerows(x.tolist())
    return path


def _predict(tmp_path: Path, model: Path, data: Path) -> list[str]:
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(app, ["predict", str(model), "--data", str(data), "-o", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["prediction"]  # no class probabilities for these kinds
    return [r["prediction"] for r in rows]


def test_regression_predictions_come_back_in_the_targets_unit(tmp_path: Path) -> None:
    w = {"weight": np.array([1.0, -2.0, 0.5], dtype=np.float32), "bias": np.array([0.25], dtype=np.float32)}
    scale = {"standardization.mean": np.array([1.0, 2.0, 3.0], dtype=np.float32),
             "standardization.std": np.array([2.0, 1.0, 4.0], dtype=np.float32),
             "standardization.y_mean": np.array([150.0]), "standardization.y_std": np.array([70.0])}
    path = _model_file(tmp_path, "linear_regression", "regression", w, scale)
    x = np.random.default_rng(0).normal(2, 3, (6, 3))
    xs = (x - [1.0, 2.0, 3.0]) / [2.0, 1.0, 4.0]
    expected = (xs @ w["weight"] + 0.25) * 70.0 + 150.0
    trained = fedpact.load_model(path)
    assert trained.target == (150.0, 70.0)
    np.testing.assert_allclose(trained.predict(x), expected, rtol=1e-5)
    assert [float(v) for v in _predict(tmp_path, path, _csv(tmp_path / "x.csv", x))] == pytest.approx(expected, rel=1e-4)
    assert trained.evaluate(x, expected)["r2"] == pytest.approx(1.0)


def test_kmeans_predictions_are_cluster_indices(tmp_path: Path) -> None:
    centroids = np.array([[0.0, 0.0, 0.0], [10.0, 10.0, 10.0]], dtype=np.float32)
    w = {"centroids": centroids, "sums": np.zeros((2, 3), np.float32), "mass": np.zeros(2, np.float32)}
    path = _model_file(tmp_path, "kmeans", "clustering", w, {})
    x = np.array([[0.5, -0.2, 0.1], [9.0, 11.0, 10.0], [10.2, 9.9, 9.5], [-1.0, 0.0, 1.0]])
    trained = fedpact.load_model(path)
    assert trained.predict(x).tolist() == [0, 1, 1, 0] and trained.predict(x).dtype == np.int64
    assert _predict(tmp_path, path, _csv(tmp_path / "x.csv", x)) == ["0", "1", "1", "0"]
    assert trained.evaluate(x, None)["inertia"] == pytest.approx(float(((x - centroids[[0, 1, 1, 0]]) ** 2).sum()))
