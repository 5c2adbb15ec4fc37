"""Regression and binary models, their pooled metrics, and target standardisation, against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression as SkLinear
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from fedpact.algorithms.standardize import (
    apply_standardization,
    combine_moments,
    combine_target_moments,
    local_moments,
    standardize_target,
    unstandardize_target,
)
from fedpact.common.definition import DataSchema, ModelSpec
from fedpact.models import LinearRegression, LogisticRegression, build_model
from fedpact.models.metrics import add_sums, regression_metrics, regression_sums


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_diabetes(return_X_y=True)
    return x.astype(np.float32), y.astype(np.float64)


def test_pooled_regression_metrics_equal_scikit_learn_on_pooled_data() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(3, 2, 300)
    p = t + rng.normal(0, 1, 300)
    parts = [regression_sums(t[a:b], p[a:b]) for a, b in ((0, 50), (50, 210), (210, 300))]
    m = regression_metrics(add_sums(parts))
    assert m["mse"] == pytest.approx(mean_squared_error(t, p))
    assert m["mae"] == pytest.approx(mean_absolute_error(t, p))
    assert m["r2"] == pytest.approx(r2_score(t, p))
    assert m["num_samples"] == 300
    with pytest.raises(ValueError, match="different keys"):
        add_sums([parts[0], {"n": 1.0}])


def test_target_standardisation_from_site_moments_equals_pooled() -> None:
    x, y = _diabetes()
    moments = [local_moments(x[i::3], y[i::3]) for i in range(3)]
    mean, std = combine_target_moments(moments)
    assert mean == pytest.approx(y.mean()) and std == pytest.approx(y.std())
    z = standardize_target(y, mean, std)
    assert unstandardize_target(z, mean, std) == pytest.approx(y)
    with pytest.raises(ValueError, match="target moments missing from site"):
        combine_target_moments([local_moments(x[:10])])
    with pytest.raises(ValueError, match="samples but"):
        local_moments(x[:10], y[:9])


def test_linear_regression_reaches_least_squares_fit() -> None:
    x, y = _diabetes()
    fmean, fstd = combine_moments([local_moments(x)])
    xs = apply_standardization(x, fmean, fstd)
    ref = SkLinear().fit(xs, y)
    model = build_model(ModelSpec(name="linear_regression"), DataSchema(task="regression", features=10))
    assert isinstance(model, LinearRegression)
    ys = standardize_target(y, y.mean(), y.std())
    model.fit(xs, ys, epochs=200, batch_size=64, lr=0.05, optimizer="sgd")
    pred = unstandardize_target(model.predict(xs), y.mean(), y.std())
    assert r2_score(y, pred) == pytest.approx(r2_score(y, ref.predict(xs)), abs=0.01)
    metrics = model.evaluate(xs, ys)
    assert set(metrics) == {"mse", "mae", "r2", "loss", "num_samples"} and metrics["r2"] > 0.5


def test_linear_regression_refuses_bad_input_and_keeps_its_weights() -> None:
    model = LinearRegression(3)
    before = model.get_weights()
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.fit(np.zeros((4, 3)), np.array([1.0, np.nan, 0, 0]), epochs=1, batch_size=2, lr=0.1)
    with pytest.raises(ValueError, match="expects 3 features"):
        model.fit(np.zeros((4, 2)), np.zeros(4), epochs=1, batch_size=2, lr=0.1)
    with pytest.raises(ValueError, match="expected shape"):
        model.set_weights({"weight": np.zeros(4), "bias": np.zeros(1)})
    assert all(np.array_equal(before[k], v) for k, v in model.get_weights().items())
    with pytest.raises(ValueError, match="diverged"):
        LinearRegression(1).fit(np.full((8, 1), 1e3), np.full(8, 1e6), epochs=50, batch_size=8, lr=10.0)
    with pytest.raises(TypeError, match="no confusion matrix"):
        model.confusion_matrix(np.zeros((1, 3)), np.zeros(1))


def test_logistic_regression_matches_softmax_accuracy_on_a_binary_task() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    w = np.array([1.5, -2.0, 0.5, 0.0, 1.0])
    y = (x @ w + rng.normal(0, 0.3, 400) > 0).astype(np.int64)
    schema = DataSchema(features=5, classes=[0, 1])
    model = build_model(ModelSpec(name="logistic_regression", params={"l2": 0.001}), schema)
    assert isinstance(model, LogisticRegression) and model.get_weights()["weight"].shape == (5,)
    model.fit(x, y, epochs=30, batch_size=32, lr=0.1, optimizer="adam", prox_mu=0.01)
    metrics = model.evaluate(x, y)
    assert metrics["accuracy"] > 0.93 and metrics["num_samples"] == 400
    proba = model.predict_proba(x)
    assert ((proba > 0.5) == model.predict(x).astype(bool)).all()
    with pytest.raises(ValueError, match="class indices 0..1"):
        model.fit(x, y + 1, epochs=1, batch_size=8, lr=0.1)


def test_mlp_regression_has_one_output_and_learns() -> None:
    x, y = _diabetes()
    xs = apply_standardization(x, *combine_moments([local_moments(x)]))
    ys = standardize_target(y, y.mean(), y.std())
    model = build_model(ModelSpec(name="mlp", params={"hidden": [16]}), DataSchema(task="regression", features=10))
    weights = model.get_weights()
    assert weights["out.weight"].shape == (1, 16)
    before = model.evaluate(xs, ys)["r2"]
    fitted = model.fit(xs, ys, epochs=30, batch_size=32, lr=0.01, optimizer="adam")
    after = model.evaluate(xs, ys)
    assert fitted["mse"] == fitted["loss"] and after["r2"] > max(0.4, before)
    assert model.predict(xs[:5]).dtype == np.float64
    with pytest.raises(ValueError, match="finite numbers"):
        model.fit(xs[:2], np.array([np.nan, 1.0]), epochs=1, batch_size=2, lr=0.01)
