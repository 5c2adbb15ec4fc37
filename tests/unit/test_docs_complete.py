"""Every definition field, built-in model, model parameter, task kind and metric is documented.

Walks the pydantic definition and the registries, so a new field or model without a line in
docs/task-definition.md or docs/algorithms.md fails here instead of going unexplained.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from fedpact.common.definition import (
    BUILTIN_MODELS,
    MISSING_POLICIES,
    MODEL_PARAMETERS,
    MODEL_TASKS,
    TASK_KINDS,
    TASK_METRICS,
    TaskDefinition,
)
from fedpact.models import available_models

DOCS = Path(__file__).resolve().parents[2] / "docs"
TASK_DEFINITION = (DOCS / "task-definition.md").read_text()
ALGORITHMS = (DOCS / "algorithms.md").read_text()
BOTH = TASK_DEFINITION + ALGORITHMS


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (``X | None``, ``Annotated[...]``, lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated, list, dict):
        for arg in typing.get_args(annotation):
            found += _models_in(arg)
    return found


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        for sub in _models_in(info.annotation):
            paths += _field_paths(sub, f"{path}.")
    return paths


FIELDS = _field_paths(TaskDefinition)


def test_the_walk_sees_nested_fields() -> None:
    assert {"data.task", "data.missing", "data.categorical", "privacy.clip", "analytics.edges", "model.params"} <= set(FIELDS)


def _documented(path: str) -> bool:
    """By its dotted path, as a section whose fields are listed (`privacy.mode`), or by its own
    name inside a documented section (the privacy parameters' table, the analytics settings)."""
    if f"`{path}`" in BOTH or f"`{path}." in BOTH:
        return True
    parent, _, leaf = path.rpartition(".")
    return bool(parent) and _documented(parent) and f"`{leaf}`" in BOTH


@pytest.mark.parametrize("path", FIELDS)
def test_every_definition_field_is_documented(path: str) -> None:
    assert _documented(path), f"definition field {path!r} is in neither docs/task-definition.md nor docs/algorithms.md"


def test_an_undocumented_field_would_be_caught() -> None:
    assert not _documented("data.no_such_field") and not _documented("no_such_section.mode")


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_every_builtin_model_and_its_parameters_are_documented(name: str) -> None:
    assert f"`{name}`" in TASK_DEFINITION and f"`{name}`" in ALGORITHMS
    row = next(line for line in ALGORITHMS.splitlines() if line.startswith(f"| `{name}` |"))
    for param in MODEL_PARAMETERS[name]:
        assert f"`{param}`" in row, f"parameter {param!r} of {name!r} missing from its row in docs/algorithms.md"
    for task in MODEL_TASKS[name]:
        assert task in row


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_every_task_kind_its_metrics_and_privacy_modes_are_documented(kind: str) -> None:
    from fedpact.common.algorithms import PRIVACY_MODES, TASK_KIND_CATALOG

    row = next(line for line in ALGORITHMS.splitlines() if line.startswith(f"| `{kind}`"))
    for metric in TASK_METRICS[kind]:
        assert f"`{metric}`" in row
    assert f"`{kind}`" in TASK_DEFINITION
    modes = row.rstrip(" |").rsplit("|", 1)[1].strip()  # the table's last column
    declared = TASK_KIND_CATALOG[kind].privacy_modes
    if set(declared) == set(PRIVACY_MODES):
        assert modes.startswith("all"), (kind, modes)
    else:
        assert modes == ", ".join(f"`{m}`" for m in declared), (kind, modes)
        # each refused mode's reason is in the catalogue and the docs name the refusal
        for mode in set(PRIVACY_MODES) - set(declared):
            assert TASK_KIND_CATALOG[kind].refusal(mode)
            assert f"`{mode}`" in ALGORITHMS[ALGORITHMS.index("## Federated analytics"):]


def test_registries_agree_with_the_definition() -> None:
    assert list(available_models())[: len(BUILTIN_MODELS)] == list(BUILTIN_MODELS)
    assert set(MODEL_TASKS) == set(MODEL_PARAMETERS) == set(BUILTIN_MODELS)
    assert set(TASK_METRICS) == set(TASK_KINDS)
    for policy in MISSING_POLICIES:
        assert f"`{policy}`" in ALGORITHMS
    for heading in ("## Task kinds", "## Models", "## Federated analytics", "## Data preparation"):
        assert heading in ALGORITHMS


def test_the_definitions_shown_in_algorithms_md_are_valid() -> None:
    import yaml

    from fedpact.common.definition import parse_definition

    blocks = [b.split("```", 1)[0] for b in ALGORITHMS.split("```yaml\n")[1:]]
    shown = [d for b in blocks for d in yaml.safe_load_all(b)]
    assert {parse_definition(d).data.task for d in shown} == {"regression", "clustering", "analytics"}
