"""The declarative task definition.

A task is described by data only: which built-in (or participant-registered) model and
algorithm to use, by name, and the numbers that drive the rounds. The hub validates a
definition with this schema before storing it, participants validate it again before they
train, and nobody ever imports code named by a definition. Every model is strict
(``extra="forbid"``) so a typo in a field name is an error, not a silently ignored setting.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Models that ship with fedpact. Other names must look like ``package.name``: those are
#: looked up among the plugins a participant has installed and registered.
BUILTIN_MODELS: tuple[str, ...] = ("softmax_regression", "mlp", "cnn")
#: Aggregation algorithms that ship with fedpact.
BUILTIN_ALGORITHMS: tuple[str, ...] = ("fedavg", "fedprox")
#: Privacy modes (see docs/privacy.md for what each party can and cannot see in each).
PRIVACY_MODES: tuple[str, ...] = ("open", "secure", "dp", "secure+dp", "encrypted")
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
            raise ValueError(f"threshold must be a count (>= 2) or a fraction in (0.5, 1], got {v!r}")
        if isinstance(v, int) and v < 2:
            raise ValueError(f"threshold as a count must be >= 2, got {v}")
        if isinstance(v, float) and not 0.5 < v <= 1.0:
            raise ValueError(f"threshold as a fraction must be in (0.5, 1] (a strict majority), got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "PrivacySpec":
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


_ADMISSION_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
ADMISSION_MODES: tuple[str, ...] = ("open", "approval", "invite")


class AdmissionSpec(_Strict):
    """Who may join the task; see docs/security-admission.md.

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
    admission: AdmissionSpec = AdmissionSpec()
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> "TaskDefinition":
        if self.min_participants > self.quorum:
            raise ValueError(
                f"min_participants ({self.min_participants}) cannot exceed quorum ({self.quorum})"
            )
        if self.model.name == "cnn" and self.data.kind != "image":
            raise ValueError("model 'cnn' needs image data (data.kind: image)")
        p = self.privacy
        if p.mode != "open" and self.algorithm.name not in BUILTIN_ALGORITHMS:
            raise ValueError(
                f"privacy mode {p.mode!r} works with the built-in algorithms ({', '.join(BUILTIN_ALGORITHMS)}); "
                f"plugin algorithm {self.algorithm.name!r} may need individual updates, which this mode hides"
            )
        if p.secure:
            if self.min_participants < 2:
                raise ValueError(f"privacy mode {p.mode!r} needs min_participants >= 2: a sum of one update is that update")
            if isinstance(p.threshold, int) and self.min_participants < p.threshold:
                raise ValueError(
                    f"privacy mode {p.mode!r} needs min_participants >= threshold: threshold is {p.threshold}, "
                    f"min_participants is {self.min_participants}, so a round could start that can never be unmasked"
                )
            if p.threshold is None or isinstance(p.threshold, float):
                if p.threshold_for(self.min_participants) > self.min_participants:
                    raise ValueError(f"privacy mode {p.mode!r}: min_participants ({self.min_participants}) is below "
                                     "the threshold it implies")
        if p.mode == "encrypted" and self.min_participants < 2:
            raise ValueError("privacy mode 'encrypted' needs min_participants >= 2: the aggregate of one update is that update")
        return self


def parse_definition(raw: dict[str, Any]) -> TaskDefinition:
    """Validate a raw (JSON/YAML) definition; raises pydantic.ValidationError."""
    return TaskDefinition.model_validate(raw)
