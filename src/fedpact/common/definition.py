"""The declarative task definition.

A task is described by data only: which built-in (or participant-registered) model and
algorithm to use, by name, and the numbers that drive the rounds. The hub validates a
definition with this schema before storing it, participants validate it again before they
train, and nobody ever imports code named by a definition. Every model is strict
(``extra="forbid"``) so a typo in a field name is an error, not a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Models that ship with fedpact. Other names must look like ``package.name``: those are
#: looked up among the plugins a participant has installed and registered.
BUILTIN_MODELS: tuple[str, ...] = ("softmax_regression", "mlp", "cnn")
#: Aggregation algorithms that ship with fedpact.
BUILTIN_ALGORITHMS: tuple[str, ...] = ("fedavg", "fedprox")
#: Privacy modes. Only ``open`` is implemented in this release; the hub refuses the others
#: until their protocols exist rather than pretending to protect anything.
PRIVACY_MODES: tuple[str, ...] = ("open",)

_PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_component_name(kind: str, name: str, builtins: tuple[str, ...]) -> str:
    if name in builtins or _PLUGIN_NAME.match(name):
        return name
    raise ValueError(
        f"unknown {kind} {name!r}: use one of {', '.join(builtins)} "
        f"or a registered plugin name such as 'mypackage.{kind}_name'"
    )


class ModelSpec(_Strict):
    """Which model to train, by name, with its hyper-parameters."""

    name: str = Field(description="Built-in model name or a registered plugin name.")
    params: dict[str, Any] = Field(default_factory=dict, description="Model-specific settings.")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_component_name("model", v, BUILTIN_MODELS)

    @model_validator(mode="after")
    def _params(self) -> "ModelSpec":
        allowed = {
            "softmax_regression": {"l2"},
            "mlp": {"hidden", "dropout"},
            "cnn": {"channels", "hidden", "dropout"},
        }.get(self.name)
        if allowed is not None:
            unknown = sorted(set(self.params) - allowed)
            if unknown:
                raise ValueError(
                    f"model {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                    f"it accepts {', '.join(sorted(allowed))}"
                )
        return self


class AlgorithmSpec(_Strict):
    """How the aggregator combines updates, by name."""

    name: str = "fedavg"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_component_name("algorithm", v, BUILTIN_ALGORITHMS)

    @model_validator(mode="after")
    def _params(self) -> "AlgorithmSpec":
        if self.name == "fedavg" and self.params:
            raise ValueError("algorithm 'fedavg' takes no parameters")
        if self.name == "fedprox":
            unknown = sorted(set(self.params) - {"mu"})
            if unknown:
                raise ValueError(f"algorithm 'fedprox' has no parameter(s) {', '.join(unknown)}; it accepts mu")
            mu = self.params.get("mu", 0.01)
            if not isinstance(mu, (int, float)) or mu < 0:
                raise ValueError("fedprox 'mu' must be a number >= 0")
        return self


class PrivacySpec(_Strict):
    mode: str = "open"

    @field_validator("mode")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in PRIVACY_MODES:
            raise ValueError(f"privacy mode {v!r} is not available; available: {', '.join(PRIVACY_MODES)}")
        return v


class DataSchema(_Strict):
    """What every participant's data must look like.

    ``features`` is either a count or the ordered list of column names (for CSV data the
    names are checked too). ``shape`` gives the per-sample shape for image data, e.g.
    ``[1, 28, 28]``; for tabular data it is ``[n_features]``.
    """

    kind: Literal["tabular", "image"] = "tabular"
    features: Annotated[int, Field(gt=0)] | list[str] | None = None
    shape: list[Annotated[int, Field(gt=0)]] | None = None
    label: str = "label"
    classes: list[int] = Field(min_length=2, description="The label values, e.g. [0, 1, ..., 9].")
    standardize: bool = Field(
        default=False,
        description="Federated standardisation: scale features by the global mean and deviation.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "DataSchema":
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must not repeat")
        if self.kind == "image":
            if not self.shape or len(self.shape) != 3:
                raise ValueError("image data needs shape [channels, height, width]")
        else:
            n = self.n_features
            if n is None:
                raise ValueError("tabular data needs 'features' (a count or the column names)")
            if self.shape is not None and self.shape != [n]:
                raise ValueError(f"shape {self.shape} does not match {n} features")
        if isinstance(self.features, list) and len(set(self.features)) != len(self.features):
            raise ValueError("feature names must be unique")
        return self

    @property
    def n_features(self) -> int | None:
        if isinstance(self.features, list):
            return len(self.features)
        if self.features is not None:
            return self.features
        if self.shape is not None:
            n = 1
            for d in self.shape:
                n *= d
            return n
        return None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        if self.shape is not None:
            return tuple(self.shape)
        assert self.n_features is not None
        return (self.n_features,)


class EvaluationSpec(_Strict):
    """How the global model is evaluated each round.

    Participants hold out ``holdout`` of their data and report metrics of the global
    model on it; the aggregator also evaluates on its own data when it has some.
    """

    holdout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    metric: Literal["accuracy", "loss"] = "accuracy"


class ConvergenceSpec(_Strict):
    """Stop before the round limit when the evaluation metric is good enough or stalls."""

    metric: Literal["accuracy", "loss"] = "accuracy"
    target: float | None = Field(default=None, description="Stop once the metric reaches this value.")
    patience: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Stop after this many rounds without improvement of min_delta."
    )
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0

    @model_validator(mode="after")
    def _something(self) -> "ConvergenceSpec":
        if self.target is None and self.patience is None:
            raise ValueError("convergence needs a target or a patience")
        return self


class TaskDefinition(_Strict):
    """The full, declarative definition of a federated learning task."""

    model: ModelSpec
    algorithm: AlgorithmSpec = AlgorithmSpec()
    rounds: Annotated[int, Field(ge=1, le=10_000)] = 10
    local_epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 32
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = 0.01
    optimizer: Literal["sgd", "adam"] = "sgd"
    quorum: Annotated[int, Field(ge=1)] = 2
    min_participants: Annotated[int, Field(ge=1)] = 1
    fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    round_timeout_s: Annotated[float, Field(gt=0.0, le=86_400.0)] = 600.0
    privacy: PrivacySpec = PrivacySpec()
    data: DataSchema
    evaluation: EvaluationSpec = EvaluationSpec()
    convergence: ConvergenceSpec | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> "TaskDefinition":
        if self.min_participants > self.quorum:
            raise ValueError(
                f"min_participants ({self.min_participants}) cannot exceed quorum ({self.quorum})"
            )
        if self.model.name == "cnn" and self.data.kind != "image":
            raise ValueError("model 'cnn' needs image data (data.kind: image)")
        return self


def parse_definition(raw: dict[str, Any]) -> TaskDefinition:
    """Validate a raw (JSON/YAML) definition; raises pydantic.ValidationError."""
    return TaskDefinition.model_validate(raw)
