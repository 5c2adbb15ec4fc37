"""Task kinds, data preparation and analytics fields of the definition: accepted and refused precisely."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from fedpact.common.definition import (
    DataSchema,
    EvaluationSpec,
    ModelSpec,
    TaskDefinition,
    parse_definition,
)
from hub_fixtures import definition


def _with_data(model: dict[str, Any] | None, **data: Any) -> dict[str, Any]:
    d = definition()
    d["data"] = {"kind": "tabular", "features": 4, **data}
    if model is None:
        d.pop("model")
    else:
        d["model"] = model
    return d


def test_classification_stays_the_default() -> None:
    d = parse_definition(definition())
    assert d.data.task == "classification" and d.data.label == "label" and d.evaluation.metric == "accuracy"


def test_regression_defaults_label_and_headline_metric() -> None:
    d = parse_definition(_with_data({"name": "linear_regression"}, task="regression"))
    assert d.data.label == "label" and d.data.classes == [] and d.evaluation.metric == "r2"
    assert d.data.n_outputs == 1
    mlp = parse_definition(_with_data({"name": "mlp"}, task="regression", label="price"))
    assert mlp.data.label == "price"


def test_clustering_has_no_label_and_kmeans_params() -> None:
    d = parse_definition(_with_data({"name": "kmeans", "params": {"k": 3}}, task="clustering"))
    assert d.data.label is None and d.evaluation.metric == "inertia"
    with pytest.raises(ValidationError, match="has no parameter"):
        parse_definition(_with_data({"name": "kmeans", "params": {"clusters": 3}}, task="clustering"))


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        ({"name": "linear_regression"}, {"classes": [0, 1]}, "does not do classification; for classification use"),
        ({"name": "softmax_regression"}, {"task": "regression"}, "does not do regression"),
        ({"name": "kmeans"}, {"task": "regression"}, "does not do regression"),
        ({"name": "linear_regression"}, {"task": "regression", "classes": [0, 1]}, "has no classes"),
        ({"name": "kmeans"}, {"task": "clustering", "label": "y"}, "has no label column"),
        ({"name": "mlp"}, {}, "needs 'classes'"),
        ({"name": "logistic_regression"}, {"classes": [0, 1, 2]}, "binary: it needs exactly two classes"),
        ({"name": "mlp"}, {"task": "ranking", "classes": [0, 1]}, "Input should be"),
    ],
)
def test_task_kind_mismatches_are_refused(model: dict[str, Any], data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_definition(_with_data(model, **data))


def test_metric_must_fit_the_task() -> None:
    d = _with_data({"name": "linear_regression"}, task="regression")
    d["evaluation"] = {"metric": "accuracy"}
    with pytest.raises(ValidationError, match="metric 'accuracy' does not apply to regression; use one of r2"):
        parse_definition(d)
    d["evaluation"] = {"metric": "mae"}
    d["convergence"] = {"target": 0.5}
    parsed = parse_definition(d)
    assert parsed.evaluation.metric == "mae" and parsed.convergence is not None and parsed.convergence.metric == "r2"


def test_analytics_needs_no_model_and_refuses_one() -> None:
    d = parse_definition(_with_data(None, task="analytics", features=["a", "b"]) | {
        "analytics": {"bins": 10, "edges": {"a": [0, 1, 2]}, "quantiles": [0.5]}})
    assert d.model is None and d.analytics is not None and d.analytics.edges == {"a": [0.0, 1.0, 2.0]}
    with pytest.raises(ValidationError, match="trains no model: remove 'model'"):
        parse_definition(_with_data({"name": "mlp"}, task="analytics"))
    with pytest.raises(ValidationError, match="needs a 'model'"):
        parse_definition(_with_data(None, classes=[0, 1]))
    with pytest.raises(ValidationError, match="names column\\(s\\) that are not features: z"):
        parse_definition(_with_data(None, task="analytics", features=["a"]) | {"analytics": {"edges": {"z": [0, 1]}}})
    with pytest.raises(ValidationError, match="strictly increasing"):
        parse_definition(_with_data(None, task="analytics", features=["a"]) | {"analytics": {"edges": {"a": [1, 1]}}})
    with pytest.raises(ValidationError, match="belong to data.task: analytics"):
        parse_definition(_with_data({"name": "mlp"}, classes=[0, 1]) | {"analytics": {}})



def test_analytics_privacy_modes_come_from_the_task_kind_catalog() -> None:
    from fedpact.common.algorithms import PRIVACY_MODES, TASK_KIND_CATALOG
    from fedpact.common.definition import TASK_KINDS

    assert tuple(TASK_KIND_CATALOG) == TASK_KINDS
    declared = {"analytics": {"edges": {"a": [0, 1, 2], "b": [0, 5]}}}
    secure = parse_definition(_with_data(None, task="analytics", features=["a", "b"]) | declared | {
        "privacy": {"mode": "secure"}, "min_participants": 2})
    assert secure.privacy.mode == "secure"
    for mode in sorted(set(PRIVACY_MODES) - set(TASK_KIND_CATALOG["analytics"].privacy_modes)):
        why = TASK_KIND_CATALOG["analytics"].refusal(mode)
        assert why is not None and "use 'secure'" in why
        privacy = {"mode": mode} | ({"clip_norm": 1.0, "noise_multiplier": 1.0} if "dp" in mode else {})
        with pytest.raises(ValidationError, match=re.escape(f"data.task 'analytics' cannot run under privacy mode '{mode}'")):
            parse_definition(_with_data(None, task="analytics", features=["a", "b"]) | declared | {
                "privacy": privacy, "min_participants": 2})
    # under secure the edge-agreement pass (each site's min and max) is skipped: every column declares edges
    with pytest.raises(ValidationError, match="needs analytics.edges for every column; none for: b "):
        parse_definition(_with_data(None, task="analytics", features=["a", "b"]) | {
            "analytics": {"edges": {"a": [0, 1]}}, "privacy": {"mode": "secure"}, "min_participants": 2})
    with pytest.raises(ValidationError, match="none for: any column"):
        parse_definition(_with_data(None, task="analytics") | {"privacy": {"mode": "secure"}, "min_participants": 2})


def test_preparation_fields() -> None:
    cols = ["age", "cp", "num"]
    d = parse_definition(_with_data({"name": "mlp"}, features=["age", "cp"], label="num", classes=[0, 1],
                                    header=False, columns=cols, missing="impute", impute="median",
                                    categorical={"cp": [1, 2, 3, 4]}))
    assert d.data.encoded_features == ["age", "cp=1", "cp=2", "cp=3", "cp=4"]
    assert d.data.sample_shape == (5,) and d.data.n_features == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"impute": "mean"}, "'impute: mean' needs 'missing: impute'"),
        ({"missing": "fill"}, "Input should be 'error', 'drop' or 'impute'"),
        ({"header": False}, "header: false needs 'columns'"),
        ({"columns": ["a", "b", "label"]}, "set header: false"),
        ({"header": False, "columns": ["a", "b"]}, "columns lack 'label'"),
        ({"header": False, "columns": ["a", "a", "label"]}, "columns must not repeat"),
        ({"categorical": {"z": [1, 2]}}, "categorical column 'z' is not among the features"),
        ({"categorical": {"a": [1]}}, "at least two declared categories"),
        ({"categorical": {"a": [1, "1"]}}, "declares a category twice"),
        ({"categorical": {"a": [1, 1.0]}}, "declares a category twice"),
        ({"features": ["a", "label"]}, "cannot also be a feature"),
        ({"features": 2, "categorical": {"a": [1, 2]}}, "give 'features' as the list of column names"),
    ],
)
def test_bad_preparation_is_refused(data: dict[str, Any], message: str) -> None:
    base = {"features": ["a", "b"], "classes": [0, 1]}
    with pytest.raises(ValidationError, match=message):
        parse_definition(_with_data({"name": "mlp"}, **(base | data)))


def test_programmatic_definitions_get_the_task_metric_too() -> None:
    d = TaskDefinition(model=ModelSpec(name="kmeans"), data=DataSchema(task="clustering", features=3),
                       evaluation=EvaluationSpec(holdout=0.1))
    assert d.evaluation.metric == "inertia" and d.evaluation.holdout == 0.1
