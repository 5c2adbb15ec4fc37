"""The catalogue of aggregation strategies: each one declared once, as data.

Definition validation, the hub's ``GET /api/v1/algorithms``, the CLI's help and the
dashboard's form all read these declarations, so they cannot disagree about a name, a
parameter, a bound or a privacy mode. The module holds no NumPy and no training code: the
hub serves it without importing the strategies that implement it
(:mod:`fedpact.algorithms.strategies`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

#: Privacy modes (see docs/privacy.md for what each party can and cannot see in each).
PRIVACY_MODES: tuple[str, ...] = ("open", "secure", "dp", "secure+dp", "encrypted")
#: Modes in which the aggregator sees the mean update in plaintext, so a server step can run on it.
PLAINTEXT_MEAN_MODES: tuple[str, ...] = ("open", "secure", "dp", "secure+dp")
#: Modes in which the aggregator sees each participant's update on its own.
INDIVIDUAL_UPDATE_MODES: tuple[str, ...] = ("open",)


@dataclass(frozen=True)
class Param:
    """One parameter of a strategy: its type, default, bounds and a one-line help."""

    name: str
    type: Literal["float", "int"]
    default: float | int | None
    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False

    def check(self, algorithm: str, value: Any) -> float | int:
        """The value as its declared type, or ValueError naming the parameter and its bounds."""
        where = f"algorithm {algorithm!r} parameter {self.name!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a{'n integer' if self.type == 'int' else ' number'}, got {value!r}")
        if self.type == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{where} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{where} must be finite, got {value!r}")
        if not self._within(value):
            raise ValueError(f"{where} must be {self.bounds()}, got {value!r}")
        return value

    def _within(self, value: float) -> bool:
        lo, hi = self.minimum, self.maximum
        if lo is not None and (value <= lo if self.exclusive_minimum else value < lo):
            return False
        return not (hi is not None and (value >= hi if self.exclusive_maximum else value > hi))

    def bounds(self) -> str:
        """The bounds in words, e.g. ``in [0, 1)`` or ``> 0``."""
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"in {'(' if self.exclusive_minimum else '['}{lo:g}, {hi:g}{')' if self.exclusive_maximum else ']'}"
        if lo is not None:
            return f"{'>' if self.exclusive_minimum else '>='} {lo:g}"
        if hi is not None:
            return f"{'<' if self.exclusive_maximum else '<='} {hi:g}"
        return "any value"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "default": self.default, "help": self.help,
            "minimum": self.minimum, "maximum": self.maximum,
            "exclusive_minimum": self.exclusive_minimum, "exclusive_maximum": self.exclusive_maximum,
        }


@dataclass(frozen=True)
class AlgorithmInfo:
    """What a strategy declares: its name, parameters, privacy modes and whether it needs individual updates."""

    name: str
    title: str
    summary: str
    params: tuple[Param, ...]
    privacy_modes: tuple[str, ...]
    individual_updates: bool
    reference: str

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """Every parameter's value (given or default), checked; ValueError for an unknown or bad one."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            accepts = f"it accepts {', '.join(known)}" if known else "it takes no parameters"
            raise ValueError(f"algorithm {self.name!r} has no parameter(s) {', '.join(unknown)}; {accepts}")
        out: dict[str, Any] = {}
        for p in self.params:
            value = given.get(p.name, p.default)
            out[p.name] = None if value is None else p.check(self.name, value)
        return out

    def refusal(self, mode: str) -> str | None:
        """Why this strategy cannot run under privacy ``mode``, or None when it can."""
        if mode in self.privacy_modes:
            return None
        if self.individual_updates and mode == "dp":
            why = ("dp's noise and accounting are calibrated to the mean of clipped updates, which a robust rule "
                   "does not compute")
        elif self.individual_updates and mode not in INDIVIDUAL_UPDATE_MODES:
            why = "it needs each participant's update on its own, which this mode hides from the aggregator"
        elif mode not in PLAINTEXT_MEAN_MODES:
            why = "its server step needs the mean update in plaintext, and this mode keeps the model encrypted"
        else:
            why = "it does not declare support for this mode"
        return (f"algorithm {self.name!r} cannot run under privacy mode {mode!r}: {why}; "
                f"it supports {', '.join(self.privacy_modes)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "summary": self.summary,
            "params": [p.to_dict() for p in self.params], "privacy_modes": list(self.privacy_modes),
            "individual_updates": self.individual_updates, "reference": self.reference,
        }


def _lr(default: float) -> Param:
    return Param("server_learning_rate", "float", default, "Step size of the server update applied to the mean delta.",
                 minimum=0.0, maximum=100.0, exclusive_minimum=True)


_BETA1 = Param("beta1", "float", 0.9, "Decay of the first moment (server momentum) of the mean delta.",
               minimum=0.0, maximum=1.0, exclusive_maximum=True)
_BETA2 = Param("beta2", "float", 0.99, "Decay of the second moment of the mean delta.",
               minimum=0.0, maximum=1.0, exclusive_maximum=True)
_TAU = Param("tau", "float", 1e-3, "Adaptivity: added to the root of the second moment; larger is closer to SGD.",
             minimum=0.0, maximum=10.0, exclusive_minimum=True)
_REDDI = "Reddi et al. 2021, Adaptive Federated Optimization, ICLR (arXiv:2003.00295)"
_BLANCHARD = ("Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent, "
              "NeurIPS")
_MEAN_MODES = PLAINTEXT_MEAN_MODES
_F = Param("f", "int", 1, "Byzantine participants tolerated: Krum needs at least 2f + 3 updates in a round.",
           minimum=0, maximum=10_000)

#: Built-in strategies, in the order they are listed.
CATALOG: dict[str, AlgorithmInfo] = {a.name: a for a in (
    AlgorithmInfo("fedavg", "FedAvg", "Sample-weighted average of the participants' models.", (), PRIVACY_MODES,
                  False, "McMahan et al. 2017, Communication-Efficient Learning of Deep Networks from "
                  "Decentralized Data, AISTATS"),
    AlgorithmInfo("fedprox", "FedProx", "FedAvg on the server; a proximal term mu/2 ||w - w_global||^2 in local "
                  "training keeps heterogeneous participants close to the global model.",
                  (Param("mu", "float", 0.01, "Weight of the proximal term in local training.", minimum=0.0,
                         maximum=1e6),), PRIVACY_MODES, False,
                  "Li et al. 2020, Federated Optimization in Heterogeneous Networks, MLSys"),
    AlgorithmInfo("fedavgm", "FedAvgM", "Server momentum: the mean delta feeds a momentum buffer that moves the "
                  "global model.", (_lr(1.0), Param("momentum", "float", 0.9, "Decay of the server momentum buffer.",
                                                    minimum=0.0, maximum=1.0, exclusive_maximum=True)),
                  _MEAN_MODES, False, "Hsu et al. 2019, Measuring the Effects of Non-Identical Data Distribution "
                  "for Federated Visual Classification (arXiv:1909.06335)"),
    AlgorithmInfo("fedadagrad", "FedAdagrad", "Adagrad on the server, with the mean delta as pseudo-gradient.",
                  (_lr(0.1), _BETA1, _TAU), _MEAN_MODES, False, _REDDI),
    AlgorithmInfo("fedadam", "FedAdam", "Adam on the server, with the mean delta as pseudo-gradient.",
                  (_lr(0.1), _BETA1, _BETA2, _TAU), _MEAN_MODES, False, _REDDI),
    AlgorithmInfo("fedyogi", "FedYogi", "Yogi on the server: Adam whose second moment grows additively, which "
                  "keeps the step size from collapsing.", (_lr(0.1), _BETA1, _BETA2, _TAU), _MEAN_MODES, False,
                  _REDDI),
    AlgorithmInfo("median", "Coordinate-wise median", "Each weight is the median of the participants' values: "
                  "robust to a minority of poisoned updates.", (), INDIVIDUAL_UPDATE_MODES, True,
                  "Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates, ICML"),
    AlgorithmInfo("trimmed_mean", "Trimmed mean", "Each weight is the mean of the participants' values after "
                  "dropping the beta fraction highest and lowest.",
                  (Param("beta", "float", 0.1, "Fraction trimmed at each end of every coordinate.", minimum=0.0,
                         maximum=0.5, exclusive_maximum=True),), INDIVIDUAL_UPDATE_MODES, True,
                  "Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates, ICML"),
    AlgorithmInfo("krum", "Krum", "Picks the one update closest to its n - f - 2 nearest neighbours.", (_F,),
                  INDIVIDUAL_UPDATE_MODES, True, _BLANCHARD),
    AlgorithmInfo("multi_krum", "Multi-Krum", "Averages the m updates with the best Krum scores.",
                  (_F, Param("m", "int", None, "Updates averaged; default n - f.", minimum=1, maximum=100_000)),
                  INDIVIDUAL_UPDATE_MODES, True, _BLANCHARD),
)}

@dataclass(frozen=True)
class TaskKindInfo:
    """The privacy modes a task kind (``data.task``) runs under, and why it refuses the others."""

    name: str
    privacy_modes: tuple[str, ...]
    #: (mode, why) for each mode it refuses.
    refusals: tuple[tuple[str, str], ...] = ()

    def refusal(self, mode: str) -> str | None:
        """Why a task of this kind cannot run under privacy ``mode``, or None when it can."""
        if mode in self.privacy_modes:
            return None
        why = dict(self.refusals).get(mode, "it does not declare support for this mode")
        return (f"data.task {self.name!r} cannot run under privacy mode {mode!r}: {why}; "
                f"it supports {', '.join(self.privacy_modes)}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "privacy_modes": list(self.privacy_modes), "refusals": dict(self.refusals)}


_NO_DP_RELEASE = ("the differential privacy of fedpact is calibrated to clipped model updates over rounds; an "
                  "analytics report is one release of counts and sums whose sensitivity depends on each column's "
                  "range, for which no noise or accounting is implemented")
#: Task kinds (``data.task``) and their privacy modes. Training kinds run wherever their
#: strategy runs (the strategy's own declaration decides); analytics has no strategy.
TASK_KIND_CATALOG: dict[str, TaskKindInfo] = {k.name: k for k in (
    TaskKindInfo("classification", PRIVACY_MODES),
    TaskKindInfo("regression", PRIVACY_MODES),
    TaskKindInfo("clustering", PRIVACY_MODES),
    TaskKindInfo("analytics", ("open", "secure"), (
        ("dp", _NO_DP_RELEASE + "; use 'secure', which reveals only the sums across sites"),
        ("secure+dp", _NO_DP_RELEASE + "; use 'secure', which reveals only the sums across sites"),
        ("encrypted", "'encrypted' keeps a model encrypted under a key only the participants hold, and an "
                      "analytics report is read by the task's creator; use 'secure', which reveals only the sums "
                      "across sites to the aggregator"),
    )),
)}

#: Names of the built-in strategies.
BUILTIN_ALGORITHMS: tuple[str, ...] = tuple(CATALOG)


def catalog() -> list[dict[str, Any]]:
    """The built-in strategies as JSON-ready dictionaries (served by the hub, read by the dashboard)."""
    return [a.to_dict() for a in CATALOG.values()]
