"""The declarative task definition.

A task is described by data only: which built-in (or participant-registered) model and
algorithm to use, by name, and the numbers that drive the rounds. The hub validates a
definition with this schema before storing it, participants validate it again before they
train, and nobody ever imports code named by a definition. Every model is strict
(``extra="forbid"``) so a typo in a field name is an error, not a silently ignored setting.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedpact.common.algorithms import BUILTIN_ALGORITHMS, CATALOG, PRIVACY_MODES, TASK_KIND_CATALOG

__all__ = ["BUILTIN_ALGORITHMS", "BUILTIN_MODELS", "PRIVACY_MODES", "TaskDefinition", "parse_definition"]

#: Models that ship with fedpact. Other names must look like ``package.name``: those are
#: looked up among the plugins a participant has installed and registered.
BUILTIN_MODELS: tuple[str, ...] = (
    "softmax_regression", "mlp", "cnn", "logistic_regression", "linear_regression", "kmeans",
)
#: What a task asks for (``data.task``); see docs/algorithms.md "Task kinds".
TASK_KINDS: tuple[str, ...] = ("classification", "regression", "clustering", "analytics")
#: Which task kinds each built-in model serves; plugins declare none and are not checked.
MODEL_TASKS: dict[str, tuple[str, ...]] = {
    "softmax_regression": ("classification",),
    "logistic_regression": ("classification",),
    "linear_regression": ("regression",),
    "mlp": ("classification", "regression"),
    "cnn": ("classification",),
    "kmeans": ("clustering",),
}
#: The parameters each built-in model accepts (``model.params``); anything else is refused.
MODEL_PARAMETERS: dict[str, frozenset[str]] = {
    "softmax_regression": frozenset({"l2"}),
    "logistic_regression": frozenset({"l2"}),
    "linear_regression": frozenset({"l2"}),
    "mlp": frozenset({"hidden", "dropout"}),
    "cnn": frozenset({"channels", "hidden", "dropout"}),
    "kmeans": frozenset({"k", "seed_sample"}),
}
#: Evaluation metrics by task kind; the first is the default headline metric.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "loss"),
    "regression": ("r2", "mse", "mae", "loss"),
    "clustering": ("inertia", "silhouette"),
    "analytics": (),
}
#: Metrics where a larger value is better (the rest improve downwards), for convergence checks.
HIGHER_IS_BETTER: frozenset[str] = frozenset({"accuracy", "r2", "silhouette"})
#: What to do with missing cells (``data.missing``); see docs/algorithms.md "Data preparation".
MISSING_POLICIES: tuple[str, ...] = ("error", "drop", "impute")
#: Which privacy parameters each mode takes; any other parameter is refused for that mode.
_SECURE_PARAMS = {"clip", "bits", "threshold", "sparse", "degree"}
_DP_PARAMS = {"clip_norm", "noise_multiplier", "target_epsilon", "delta", "epsilon_budget", "accountant"}
PRIVACY_PARAMETERS: dict[str, frozenset[str]] = {
    "open": frozenset(),
    "secure": frozenset(_SECURE_PARAMS),
    "dp": frozenset(_DP_PARAMS | {"placement"}),
    "secure+dp": frozenset(_SECURE_PARAMS | _DP_PARAMS),
    "encrypted": frozenset({"he_poly_modulus_degree"}),
}

#: The largest num_samples any participant may claim (10**12), with or without a definition's cap.
MAX_SAMPLES = 10**12

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
    def _params(self) -> ModelSpec:
        allowed = MODEL_PARAMETERS.get(self.name)
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
    def _params(self) -> AlgorithmSpec:
        info = CATALOG.get(self.name)
        if info is not None:
            info.resolve(self.params)
        return self

    @property
    def resolved_params(self) -> dict[str, Any]:
        """Every declared parameter of a built-in strategy with its default filled in (plugins: as given)."""
        info = CATALOG.get(self.name)
        return info.resolve(self.params) if info is not None else dict(self.params)


class PrivacySpec(_Strict):
    """Who may see what during training; see docs/privacy.md.

    ``open``: plain FedAvg. ``secure``: secure aggregation (the aggregator learns only the
    sum). ``dp``: clipping and Gaussian noise, on each participant (``placement: local``) or
    on the aggregate (``central``), with an epsilon accountant. ``secure+dp``: each
    participant adds its share of the noise under secure aggregation. ``encrypted``: CKKS
    homomorphic encryption, the key held by the participants only. A parameter that the
    chosen mode does not use is an error, never silently ignored.
    """

    mode: str = "open"
    # secure, secure+dp
    clip: Annotated[float, Field(gt=0.0, le=1e6)] | None = Field(
        default=None, description="Each coordinate of an update (new weights minus the global model) is clipped to "
        "[-clip, clip] before quantisation. secure: default 1.0; secure+dp: default clip_norm + 8 noise deviations.")
    bits: Literal[32, 64] | None = Field(default=None, description="Ring Z_2^bits of secure aggregation (32).")
    threshold: int | float | None = Field(
        default=None, description="Fewest participants that must remain at every step of secure aggregation: a "
        "count (>= 2) or a fraction of the round's selected participants in (0.5, 1]. Default: a majority.")
    sparse: bool | None = Field(default=None, description="SecAgg+ sparse neighbour graph instead of the complete graph.")
    degree: Annotated[int, Field(ge=2)] | None = Field(default=None, description="Neighbours per participant with "
                                                       "sparse: true (default 3 log2 n, rounded up to even).")
    # dp, secure+dp
    clip_norm: Annotated[float, Field(gt=0.0)] | None = Field(default=None, description="L2 bound on one update.")
    noise_multiplier: Annotated[float, Field(gt=0.0)] | None = None
    target_epsilon: Annotated[float, Field(gt=0.0)] | None = None
    delta: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    epsilon_budget: Annotated[float, Field(gt=0.0)] | None = None
    accountant: Literal["rdp", "pld"] | None = None
    placement: Literal["local", "central"] | None = None
    # encrypted
    he_poly_modulus_degree: Literal[8192, 16384, 32768] | None = None

    @field_validator("mode")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in PRIVACY_MODES:
            raise ValueError(f"privacy mode {v!r} is not available; available: {', '.join(PRIVACY_MODES)}")
        return v

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_kind(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, float) and v.is_integer() and v > 1:
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"threshold must be a count (>= 2) or a fraction in (0.5, 1], got {v!r}")  # noqa: TRY004 - pydantic reports only ValueError
        if isinstance(v, int) and v < 2:
            raise ValueError(f"threshold as a count must be >= 2, got {v}")
        if isinstance(v, float) and not 0.5 < v <= 1.0:
            raise ValueError(f"threshold as a fraction must be in (0.5, 1] (a strict majority), got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PrivacySpec:
        allowed = PRIVACY_PARAMETERS[self.mode]
        given = sorted(k for k in self.model_fields_set if k != "mode" and getattr(self, k) is not None)
        wrong = [k for k in given if k not in allowed]
        if wrong:
            users = {k: [m for m, ps in PRIVACY_PARAMETERS.items() if k in ps] for k in wrong}
            detail = "; ".join(f"{k!r} belongs to mode(s) {', '.join(users[k])}" for k in wrong)
            raise ValueError(f"privacy mode {self.mode!r} takes no parameter(s) {', '.join(wrong)} ({detail})")
        if self.mode in ("dp", "secure+dp"):
            if self.clip_norm is None:
                raise ValueError(f"privacy mode {self.mode!r} needs clip_norm, the L2 bound on each update")
            if (self.noise_multiplier is None) == (self.target_epsilon is None):
                raise ValueError(
                    f"privacy mode {self.mode!r} needs exactly one of noise_multiplier (the noise, epsilon follows) "
                    "or target_epsilon (the epsilon after all rounds, the noise follows)"
                )
            if self.epsilon_budget is not None and self.target_epsilon is not None and self.epsilon_budget < self.target_epsilon:
                raise ValueError(
                    f"epsilon_budget ({self.epsilon_budget}) is below target_epsilon ({self.target_epsilon}): "
                    "the task would stop before its last round; raise the budget or lower the target"
                )
        if self.degree is not None and not self.sparse:
            raise ValueError("degree applies to the sparse neighbour graph: set sparse: true as well")
        if self.degree is not None and self.degree % 2:
            raise ValueError(f"degree must be even (each participant links to degree/2 on either side), got {self.degree}")
        return self

    # -- effective values (defaults depend on the mode) -------------------------------------
    @property
    def secure(self) -> bool:
        return self.mode in ("secure", "secure+dp")

    @property
    def differentially_private(self) -> bool:
        return self.mode in ("dp", "secure+dp")

    @property
    def effective_bits(self) -> int:
        return self.bits or 32

    @property
    def effective_delta(self) -> float:
        return self.delta if self.delta is not None else 1e-5

    @property
    def effective_accountant(self) -> str:
        return self.accountant or "rdp"

    @property
    def effective_placement(self) -> str:
        """Where DP noise is added: local, central or distributed (secure+dp)."""
        if self.mode == "secure+dp":
            return "distributed"
        return self.placement or "local"

    @property
    def effective_he_degree(self) -> int:
        return self.he_poly_modulus_degree or 8192

    def threshold_for(self, selected: int) -> int:
        """The secure-aggregation threshold of a round with ``selected`` participants.

        Never below a strict majority of them: with fewer, two disjoint groups of survivors
        could each be asked to unmask, which the protocol's guarantee does not cover.
        """
        majority = selected // 2 + 1
        if self.threshold is None:
            t = majority
        elif isinstance(self.threshold, float):
            t = math.ceil(self.threshold * selected)
        else:
            t = self.threshold
        return max(2, majority, min(t, selected)) if selected >= 2 else selected


Category = int | float | str


class DataSchema(_Strict):
    """What every participant's data must look like, and how it is prepared before training.

    ``features`` is either a count or the ordered list of column names (for CSV data the
    names are checked too). ``shape`` gives the per-sample shape for image data, e.g.
    ``[1, 28, 28]``; for tabular data it is ``[n_features]``. ``task`` says what is learnt
    (docs/algorithms.md "Task kinds"); ``missing``, ``impute``, ``header``, ``columns`` and
    ``categorical`` are the declared data preparation, applied identically at every site so
    that no participant has to prepare its table by hand ("Data preparation").
    """

    task: Literal["classification", "regression", "clustering", "analytics"] = Field(
        default="classification", description="What is learnt: class labels, a number, clusters, or statistics only.")
    kind: Literal["tabular", "image"] = "tabular"
    features: Annotated[int, Field(gt=0)] | list[str] | None = None
    shape: list[Annotated[int, Field(gt=0)]] | None = None
    label: str | None = Field(
        default=None, description="The label (classification) or target (regression) column; default 'label'. "
        "Clustering and analytics tasks have none.")
    classes: list[int] = Field(default_factory=list, description="The label values, e.g. [0, 1, ..., 9]; "
                               "classification only, at least two.")
    standardize: bool = Field(
        default=False,
        description="Federated standardisation: scale features by the global mean and deviation.",
    )
    header: bool = Field(default=True, description="Whether CSV files start with a row of column names.")
    columns: list[str] | None = Field(
        default=None, description="The column names of a CSV file without header row, in file order.")
    missing: Literal["error", "drop", "impute"] = Field(
        default="error", description="Missing cells: refuse the file, drop those rows, or impute federated values.")
    impute: Literal["mean", "median"] | None = Field(
        default=None, description="With missing: impute, the federated statistic filled in (default mean).")
    categorical: dict[str, list[Category]] = Field(
        default_factory=dict, description="Feature columns one-hot encoded by their declared categories.")

    @model_validator(mode="before")
    @classmethod
    def _default_label(cls, raw: Any) -> Any:
        supervised = isinstance(raw, dict) and raw.get("task", "classification") in ("classification", "regression")
        return {**raw, "label": "label"} if supervised and raw.get("label") is None else raw

    @model_validator(mode="after")
    def _consistent(self) -> DataSchema:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must not repeat")
        self._check_task()
        if self.kind == "image":
            if not self.shape or len(self.shape) != 3:
                raise ValueError("image data needs shape [channels, height, width]")
            if self.categorical or self.columns or self.missing == "impute" or not self.header:
                raise ValueError("categorical, columns, header: false and missing: impute apply to tabular data only")
        else:
            n = self.n_features
            if n is None:
                raise ValueError("tabular data needs 'features' (a count or the column names)")
            if self.shape is not None and self.shape != [n]:
                raise ValueError(f"shape {self.shape} does not match {n} features")
        if isinstance(self.features, list) and len(set(self.features)) != len(self.features):
            raise ValueError("feature names must be unique")
        self._check_preparation()
        return self

    def _check_task(self) -> None:
        if self.task == "classification":
            if len(self.classes) < 2:
                raise ValueError("a classification task needs 'classes': at least two label values")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError("classes must not repeat")
        elif self.classes:
            raise ValueError(f"a {self.task} task has no classes; remove 'classes' (it is for classification)")
        if self.task in ("clustering", "analytics") and self.label is not None:
            raise ValueError(f"a {self.task} task has no label column; remove 'label'")
        if self.task == "analytics" and self.standardize:
            raise ValueError("an analytics task computes statistics of the raw columns; remove 'standardize'")

    def _check_preparation(self) -> None:
        names = self.features if isinstance(self.features, list) else None
        if self.impute is not None and self.missing != "impute":
            raise ValueError(f"'impute: {self.impute}' needs 'missing: impute' (missing is {self.missing!r})")
        if self.columns is not None:
            if self.header:
                raise ValueError("'columns' names the columns of files without a header row: set header: false")
            if len(set(self.columns)) != len(self.columns):
                raise ValueError("columns must not repeat")
            wanted = ([self.label] if self.label else []) + (names or [])
            absent = [c for c in wanted if c not in self.columns]
            if absent:
                raise ValueError(f"columns lack {', '.join(map(repr, absent))} (the label and feature names)")
            if names is None and self.n_features is not None and len(self.columns) - bool(self.label) != self.n_features:
                raise ValueError(f"columns give {len(self.columns) - bool(self.label)} features, features says "
                                 f"{self.n_features}; list the feature names instead")
        elif not self.header and self.kind == "tabular":
            raise ValueError("header: false needs 'columns', the names of the file's columns in order")
        if names is not None and self.label in names:
            raise ValueError(f"the label column {self.label!r} cannot also be a feature")
        if self.categorical:
            if names is None:
                raise ValueError("categorical columns are named: give 'features' as the list of column names")
            for col, cats in self.categorical.items():
                if col not in names:
                    raise ValueError(f"categorical column {col!r} is not among the features")
                if len(cats) < 2:
                    raise ValueError(f"categorical column {col!r} needs at least two declared categories")
                numbers = [float(c) for c in cats if not isinstance(c, str)]
                if len({str(c) for c in cats}) != len(cats) or len(set(numbers)) != len(numbers):
                    raise ValueError(f"categorical column {col!r} declares a category twice")
                if any(isinstance(c, str) for c in cats) and self.task == "analytics":
                    raise ValueError("analytics counts categorical columns by their numeric codes; use numbers")

    @property
    def n_features(self) -> int | None:
        """The number of feature columns participants supply (before one-hot encoding)."""
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
    def encoded_features(self) -> list[str] | None:
        """Feature names after one-hot encoding (``col=category``), the model's input columns."""
        if not isinstance(self.features, list):
            return None
        out: list[str] = []
        for name in self.features:
            cats = self.categorical.get(name)
            out.extend([f"{name}={c}" for c in cats] if cats else [name])
        return out

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The model's input shape: one-hot encoding widens tabular samples."""
        if self.shape is not None and self.kind == "image":
            return tuple(self.shape)
        encoded = self.encoded_features
        if encoded is not None:
            return (len(encoded),)
        assert self.n_features is not None
        return (self.n_features,)

    @property
    def n_outputs(self) -> int:
        """Width of a supervised model's output: one per class, or one for regression."""
        return len(self.classes) if self.task == "classification" else 1


MetricName = Literal["accuracy", "loss", "r2", "mse", "mae", "inertia", "silhouette"]


class AnalyticsSpec(_Strict):
    """Settings of a federated analytics task (``data.task: analytics``).

    Histograms use the declared ``edges`` of a column when given, else ``bins`` equal bins
    between the global minimum and maximum agreed in a first pass; quantiles are read from
    the merged histograms, so their precision is one bin.
    """

    bins: Annotated[int, Field(ge=1, le=10_000)] = Field(default=20, description="Bins per column without edges.")
    edges: dict[str, list[float]] = Field(default_factory=dict, description="Declared bin edges per column name.")
    quantiles: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75], description="Quantiles reported per column.")

    @model_validator(mode="after")
    def _edges(self) -> AnalyticsSpec:
        for col, e in self.edges.items():
            arr = [float(v) for v in e]
            if len(arr) < 2 or any(not math.isfinite(v) for v in arr) or any(b <= a for a, b in itertools.pairwise(arr)):
                raise ValueError(f"edges of column {col!r} must be at least two finite, strictly increasing numbers")
        return self


class EvaluationSpec(_Strict):
    """How the global model is evaluated each round.

    Participants hold out ``holdout`` of their data and report metrics of the global
    model on it; the aggregator also evaluates on its own data when it has some.
    """

    holdout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    metric: MetricName = Field(default="accuracy", description="The headline metric; default: the task kind's first.")


class ConvergenceSpec(_Strict):
    """Stop before the round limit when the evaluation metric is good enough or stalls."""

    metric: MetricName = Field(default="accuracy", description="Default: the task kind's headline metric.")
    target: float | None = Field(default=None, description="Stop once the metric reaches this value.")
    patience: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Stop after this many rounds without improvement of min_delta."
    )
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0

    @model_validator(mode="after")
    def _something(self) -> ConvergenceSpec:
        if self.target is None and self.patience is None:
            raise ValueError("convergence needs a target or a patience")
        return self


_ADMISSION_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
ADMISSION_MODES: tuple[str, ...] = ("open", "approval", "invite")


class AdmissionSpec(_Strict):
    """Who may join the task; see docs/security.md (Admission).

    ``approval`` (the default): a join is a request the creator approves or declines.
    ``invite``: the users named in ``users`` and every user of an organisation in
    ``organisations`` are admitted when they join; anyone else is refused. ``open``:
    every registered user who joins is admitted. Written either as the mode alone
    (``admission: open``) or as a mapping (``admission: {mode: invite, users: [bob]}``).
    """

    mode: Literal["open", "approval", "invite"] = "approval"
    users: list[str] = Field(default_factory=list, max_length=1000, description="Invited user names (invite only).")
    organisations: list[str] = Field(
        default_factory=list, max_length=1000, description="Invited organisations, matched exactly (invite only)."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v not in ADMISSION_MODES:
                raise ValueError(f"admission {v!r} is not a mode; use one of {', '.join(ADMISSION_MODES)}")
            return {"mode": v}
        return v

    @field_validator("users")
    @classmethod
    def _user_names(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not _ADMISSION_NAME.match(n)]
        if bad:
            raise ValueError(
                f"invited user name(s) {', '.join(map(repr, bad))} are not user names "
                "(3-64 letters, digits, '_', '.' or '-')"
            )
        if len(set(v)) != len(v):
            raise ValueError("invited users must not repeat")
        return v

    @field_validator("organisations")
    @classmethod
    def _organisations(cls, v: list[str]) -> list[str]:
        bad = [o for o in v if not 1 <= len(o) <= 200]
        if bad:
            raise ValueError("invited organisations are 1-200 characters each, as users registered them")
        if len(set(v)) != len(v):
            raise ValueError("invited organisations must not repeat")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> AdmissionSpec:
        if self.mode != "invite" and (self.users or self.organisations):
            raise ValueError(
                f"admission mode {self.mode!r} takes no invitation list; use mode 'invite' to admit named "
                "users and organisations"
            )
        if self.mode == "invite" and not (self.users or self.organisations):
            raise ValueError("admission mode 'invite' needs at least one entry in 'users' or 'organisations'")
        return self

    def invites(self, user: str, organisation: str) -> bool:
        """Whether a user is on this task's invitation list (by name or organisation)."""
        return user in self.users or organisation in self.organisations


class TaskDefinition(_Strict):
    """The full, declarative definition of a federated learning task."""

    model: ModelSpec | None = Field(default=None, description="Required, except for analytics tasks.")
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
    analytics: AnalyticsSpec | None = Field(default=None, description="Analytics settings (data.task: analytics).")
    admission: AdmissionSpec = AdmissionSpec()
    seed: int = 0
    max_samples_per_participant: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] | None = Field(
        default=None, description="Cap on the num_samples a participant may claim: a larger claim is clipped to the "
        "cap (and the round record says so), so no participant owns the weighted average by claiming a billion.")

    @property
    def sample_cap(self) -> int:
        """The largest num_samples the aggregator accepts as it is (larger claims are clipped)."""
        return self.max_samples_per_participant or MAX_SAMPLES

    @model_validator(mode="before")
    @classmethod
    def _task_metric_defaults(cls, raw: Any) -> Any:
        """Default the headline metrics to the task kind's own, so regression need not name 'r2'."""
        if not isinstance(raw, dict):
            return raw
        data = raw.get("data")
        task = data.get("task", "classification") if isinstance(data, dict) else getattr(data, "task", None)
        metrics = TASK_METRICS.get(task) if isinstance(task, str) else None
        if not metrics:
            return raw
        out = dict(raw)
        for key in ("evaluation", "convergence"):
            section = out.get(key)
            if key == "evaluation" and section is None:
                section = {}
            if isinstance(section, dict) and "metric" not in section:
                out[key] = {**section, "metric": metrics[0]}
            elif isinstance(section, BaseModel) and "metric" not in section.model_fields_set:
                out[key] = section.model_copy(update={"metric": metrics[0]})
        return out

    def _check_task_kind(self) -> None:
        task = self.data.task
        if task == "analytics":
            if self.model is not None:
                raise ValueError("an analytics task trains no model: remove 'model'")
            refusal = TASK_KIND_CATALOG[task].refusal(self.privacy.mode)
            if refusal:
                raise ValueError(refusal)
            if isinstance(self.data.features, list) and self.analytics is not None:
                unknown = sorted(set(self.analytics.edges) - set(self.data.features))
                if unknown:
                    raise ValueError(f"analytics.edges names column(s) that are not features: {', '.join(unknown)}")
            elif self.analytics is not None and self.analytics.edges:
                raise ValueError("analytics.edges are keyed by column name: give 'features' as the list of names")
            if self.privacy.secure:
                declared = set(self.analytics.edges) if self.analytics else set()
                names = self.data.features if isinstance(self.data.features, list) else []
                undeclared = [c for c in names if c not in declared]
                if not names or undeclared:
                    raise ValueError(
                        f"analytics under privacy mode {self.privacy.mode!r} needs analytics.edges for every column; "
                        f"none for: {', '.join(undeclared) or 'any column (name the features)'} (agreeing edges from "
                        "the data would reveal each site's minimum and maximum)")
            return
        refusal = TASK_KIND_CATALOG[task].refusal(self.privacy.mode)
        if refusal:
            raise ValueError(refusal)
        if self.analytics is not None:
            raise ValueError(f"'analytics' settings belong to data.task: analytics, not {task!r}")
        if self.model is None:
            raise ValueError(f"a {task} task needs a 'model'")
        served = MODEL_TASKS.get(self.model.name)
        if served is not None and task not in served:
            fitting = [m for m, ts in MODEL_TASKS.items() if task in ts]
            raise ValueError(f"model {self.model.name!r} does not do {task}; for {task} use {', '.join(fitting)}")
        if self.model.name == "logistic_regression" and len(self.data.classes) != 2:
            raise ValueError(f"model 'logistic_regression' is binary: it needs exactly two classes, "
                             f"got {len(self.data.classes)}; use softmax_regression for more")
        for spec in (self.evaluation, self.convergence):
            if spec is not None and spec.metric not in TASK_METRICS[task]:
                raise ValueError(f"metric {spec.metric!r} does not apply to {task}; use one of "
                                 f"{', '.join(TASK_METRICS[task])}")

    @model_validator(mode="after")
    def _consistent(self) -> TaskDefinition:
        self._check_task_kind()
        if self.min_participants > self.quorum:
            raise ValueError(
                f"min_participants ({self.min_participants}) cannot exceed quorum ({self.quorum})"
            )
        if self.model is not None and self.model.name == "cnn" and self.data.kind != "image":
            raise ValueError("model 'cnn' needs image data (data.kind: image)")
        p = self.privacy
        info = CATALOG.get(self.algorithm.name)
        if info is None and p.mode != "open":
            raise ValueError(
                f"privacy mode {p.mode!r} works with the built-in algorithms ({', '.join(BUILTIN_ALGORITHMS)}); "
                f"plugin algorithm {self.algorithm.name!r} may need individual updates, which this mode hides"
            )
        if info is not None:
            refusal = info.refusal(p.mode)
            if refusal:
                raise ValueError(refusal)
            if info.name in ("krum", "multi_krum"):
                self._check_krum()
        if p.secure:
            if self.min_participants < 2:
                raise ValueError(f"privacy mode {p.mode!r} needs min_participants >= 2: a sum of one update is that update")
            if isinstance(p.threshold, int) and self.min_participants < p.threshold:
                raise ValueError(
                    f"privacy mode {p.mode!r} needs min_participants >= threshold: threshold is {p.threshold}, "
                    f"min_participants is {self.min_participants}, so a round could start that can never be unmasked"
                )
            implied = p.threshold is None or isinstance(p.threshold, float)
            if implied and p.threshold_for(self.min_participants) > self.min_participants:
                    raise ValueError(f"privacy mode {p.mode!r}: min_participants ({self.min_participants}) is below "
                                     "the threshold it implies")
        if p.mode == "encrypted" and self.min_participants < 2:
            raise ValueError("privacy mode 'encrypted' needs min_participants >= 2: the aggregate of one update is that update")
        return self


    def _check_krum(self) -> None:
        params = self.algorithm.resolved_params
        f, need = params["f"], 2 * params["f"] + 3
        if self.min_participants < need:
            raise ValueError(
                f"algorithm {self.algorithm.name!r} with f={f} needs at least 2f + 3 = {need} updates in every "
                f"round: raise min_participants (now {self.min_participants}) to {need} or lower f"
            )
        m = params.get("m")
        if m is not None and m > self.min_participants - f:
            raise ValueError(
                f"algorithm 'multi_krum' averages m={m} updates, more than min_participants - f = "
                f"{self.min_participants - f} honest ones a round is sure to have: lower m or raise min_participants"
            )


def parse_definition(raw: dict[str, Any]) -> TaskDefinition:
    """Validate a raw (JSON/YAML) definition; raises pydantic.ValidationError."""
    return TaskDefinition.model_validate(raw)
