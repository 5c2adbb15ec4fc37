"""Predictions from a model file: the Python API, ``fedpact predict`` and ONNX export.

Every built-in model is written as a real model file (the same format the aggregator
stores), loaded with ``fedpact.load_model`` and exported; onnxruntime then runs the ONNX
file and must agree with fedpact's own predictions and probabilities.
"""

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
from fedpact.common.errors import FedpactError
from fedpact.common.tensors import encode_weights
from fedpact.models.base import ModelConfigError
from fedpact.models.registry import build_model

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is part of fedpact[test]")

CASES = {
    "softmax_regression": ({"name": "softmax_regression"}, {"kind": "tabular", "features": 12, "classes": [3, 5, 7]}),
    "mlp": ({"name": "mlp", "params": {"hidden": [16, 8], "dropout": 0.2}},
            {"kind": "tabular", "features": 12, "classes": [0, 1, 2, 9]}),
    "cnn": ({"name": "cnn", "params": {"channels": [4, 6], "hidden": 10}},
            {"kind": "image", "shape": [1, 8, 8], "classes": [0, 1, 2]}),
}


def model_file(tmp_path: Path, case: str, standardize: bool) -> tuple[Path, DataSchema]:
    """A model file as the aggregator writes it, with random (not zero) weights."""
    spec_raw, data_raw = CASES[case]
    schema = DataSchema.model_validate({**data_raw, "standardize": standardize})
    spec = ModelSpec.model_validate(spec_raw)
    model = build_model(spec, schema, seed=1)
    rng = np.random.default_rng(7)
    # the model's own initialisation, perturbed: trained-looking weights that spread the classes
    model.set_weights({k: (v + rng.normal(0, 0.3, v.shape)).astype(np.float32) for k, v in model.get_weights().items()})
    tensors = dict(model.get_weights())
    n = int(np.prod(schema.sample_shape))
    if standardize:
        tensors["standardization.mean"] = rng.normal(0, 1, n).astype(np.float32)
        tensors["standardization.std"] = rng.uniform(0.5, 2.0, n).astype(np.float32)
    meta = {"task": "t", "model": spec.model_dump(), "data": schema.model_dump(), "rounds": 1}
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(encode_weights(tensors, {"fedpact": json.dumps(meta)}))
    return path, schema


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_export_matches_fedpacts_predictions(tmp_path: Path, case: str, standardize: bool) -> None:
    path, schema = model_file(tmp_path, case, standardize)
    trained = fedpact.load_model(path)
    x = np.random.default_rng(3).normal(0, 1, (37, *schema.sample_shape)).astype(np.float32)
    labels, proba = trained.predict(x), trained.predict_proba(x)
    assert proba.shape == (37, len(schema.classes)) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert set(labels) <= set(schema.classes)
    np.testing.assert_array_equal(np.asarray(schema.classes)[proba.argmax(axis=1)], labels)

    onnx_path = trained.export(tmp_path / f"{case}.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got_proba, got_label = session.run(["probabilities", "label"], {"x": x})
    np.testing.assert_allclose(got_proba, proba, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got_label, labels)


def test_predict_and_export_from_the_terminal(tmp_path: Path) -> None:
    path, _ = model_file(tmp_path, "softmax_regression", standardize=True)
    x = np.random.default_rng(4).normal(0, 1, (9, 12)).astype(np.float32)
    data = tmp_path / "new.csv"
    with open(data, "w", newline="") as fh:  # a label column, if present, is ignored
        w = csv.writer(fh)
        w.writerow([f"f{i}" for i in range(12)] + ["label"])
        w.writerows([[*map(float, row), 3] for row in x])
    runner = CliRunner()
    out_csv = tmp_path / "out" / "predictions.csv"
    result = runner.invoke(app, ["predict", str(path), "--data", str(data), "-o", str(out_csv)])
    assert result.exit_code == 0, result.output
    assert "9 predictions written" in result.output
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    trained = fedpact.load_model(path)
    assert [int(r["prediction"]) for r in rows] == trained.predict(x).tolist()
    assert list(rows[0]) == ["prediction", "p_3", "p_5", "p_7"]
    np.testing.assert_allclose([[float(r[f"p_{c}"]) for c in (3, 5, 7)] for r in rows], trained.predict_proba(x),
                               rtol=1e-5)

    result = runner.invoke(app, ["model", "export", str(path), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert path.with_suffix(".onnx").is_file()


def test_bad_prediction_input_gets_one_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    path, _ = model_file(tmp_path, "softmax_regression", standardize=False)
    narrow = tmp_path / "narrow.csv"
    narrow.write_text("a,b\n1,2\n")
    runner = CliRunner()
    out_csv = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(path), "--data", str(narrow), "-o", str(out_csv)])
    assert result.exit_code == 1 and "expects 12 features per sample, the file has 2" in result.output
    assert not out_csv.exists()
    result = runner.invoke(app, ["model", "export", str(path), "--format", "pmml"])
    assert result.exit_code == 1 and "unknown export format 'pmml'" in result.output
    assert not path.with_suffix(".pmml").exists()
    with pytest.raises(FedpactError, match="no such file"):
        fedpact.load_model(tmp_path / "absent.safetensors")


def test_a_model_without_onnx_layers_says_so() -> None:
    from fedpact.models.base import Model

    class Plain(Model):
        num_classes = 2

        def get_weights(self):  # type: ignore[no-untyped-def]
            return {}

        def set_weights(self, weights):  # type: ignore[no-untyped-def]
            pass

        def fit(self, *a, **k):  # type: ignore[no-untyped-def]
            return {}

        def evaluate(self, *a, **k):  # type: ignore[no-untyped-def]
            return {}

        def predict(self, x):  # type: ignore[no-untyped-def]
            return np.zeros(len(x), dtype=np.int64)

    with pytest.raises(ModelConfigError, match="does not implement Model.onnx_layers"):
        Plain().onnx_layers(None, "x")  # type: ignore[arg-type]
    with pytest.raises(ModelConfigError, match="does not give class probabilities"):
        Plain().predict_proba(np.zeros((1, 1)))
