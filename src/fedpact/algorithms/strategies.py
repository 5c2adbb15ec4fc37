"""Aggregation strategies: the server side of an algorithm, chosen by name in a task.

A strategy has two halves. ``aggregate`` combines individual updates (open mode only); the
``server_step`` turns a round's mean update into the next global model. Every privacy mode
that shows the aggregator the mean in plaintext (open, dp, secure, secure+dp) hands it to
the same ``server_step``, so a server optimiser behaves alike in all of them. What a strategy
learns across rounds (optimiser moments) is in :meth:`Aggregator.state`, which the
aggregator stores with every checkpoint.

The declarations (names, parameters, privacy modes) live in :mod:`fedpact.common.algorithms`;
each built-in is registered in :data:`BUILTIN_FACTORIES` by the module that implements it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import numpy as np

from fedpact.algorithms.fedavg import weighted_average
from fedpact.algorithms.validation import validate_update
from fedpact.common.algorithms import BUILTIN_ALGORITHMS, CATALOG, AlgorithmInfo
from fedpact.common.definition import AlgorithmSpec
from fedpact.common.errors import UnknownComponent, UpdateRejected

PLUGIN_GROUP = "fedpact.algorithms"

Update = tuple[Mapping[str, np.ndarray], int]
Weights = dict[str, np.ndarray]


class Aggregator(ABC):
    """Server side of a federated algorithm: combines participants' weights into the next global model.

    A plugin need only implement :meth:`aggregate`; it then runs in open mode only (the
    definition refuses plugins under the other modes).
    """

    #: The built-in declaration, None for a plugin.
    info: AlgorithmInfo | None = None

    @abstractmethod
    def aggregate(self, global_weights: Mapping[str, np.ndarray], updates: Sequence[Update]) -> Weights:
        """The next global weights from ``(weights after local training, num_samples)`` pairs."""

    def server_step(self, global_weights: Mapping[str, np.ndarray], mean_delta: Mapping[str, np.ndarray]) -> Weights:
        """The next global weights from the round's mean update (new weights minus global, float64)."""
        return apply_delta(global_weights, mean_delta)

    def step_from_mean(self, global_weights: Mapping[str, np.ndarray], mean: Mapping[str, np.ndarray]) -> Weights:
        """The server step, given the mean of the participants' *models* rather than of their deltas."""
        return self.server_step(global_weights, delta_of(global_weights, mean))

    def participant_config(self) -> dict[str, Any]:
        """Settings participants need for local training (e.g. FedProx's ``prox_mu``)."""
        return {}

    def state(self) -> dict[str, np.ndarray]:
        """What the strategy carries from round to round (checkpointed); empty when stateless."""
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from :meth:`state` as saved by an earlier run (``--resume``)."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(state)}")


def apply_delta(global_weights: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> Weights:
    """``global + delta`` in float64, back in each tensor's dtype."""
    out: Weights = {}
    for k, g in global_weights.items():
        g = np.asarray(g)
        out[k] = (g.astype(np.float64) + np.asarray(delta[k], dtype=np.float64)).astype(g.dtype)
    return out


def delta_of(global_weights: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray]) -> Weights:
    """``new - global`` per tensor, in float64."""
    return {k: np.asarray(new[k], dtype=np.float64) - np.asarray(g, dtype=np.float64)
            for k, g in global_weights.items()}


def check_updates(global_weights: Mapping[str, np.ndarray], updates: Sequence[Update]) -> None:
    """Refuse the round's updates before any of them is used, naming the culprit by position."""
    if not updates:
        raise ValueError("no updates to aggregate")
    for i, (weights, num_samples) in enumerate(updates):
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise UpdateRejected(f"update {i}: num_samples must be a positive integer, got {num_samples!r}")
        try:
            validate_update(global_weights, weights)
        except UpdateRejected as exc:
            raise UpdateRejected(f"update {i}: {exc}") from exc


class FedAvg(Aggregator):
    """Federated averaging (McMahan et al. 2017): the sample-weighted mean of local models."""

    info = CATALOG["fedavg"]

    def aggregate(self, global_weights: Mapping[str, np.ndarray], updates: Sequence[Update]) -> Weights:
        check_updates(global_weights, updates)
        mean = weighted_average([w for w, _ in updates], [float(n) for _, n in updates])
        return self.step_from_mean(global_weights, mean)

    def step_from_mean(self, global_weights: Mapping[str, np.ndarray], mean: Mapping[str, np.ndarray]) -> Weights:
        if type(self).server_step is Aggregator.server_step:
            return dict(mean)  # global + (mean - global) is the mean: skip two passes over the model
        return super().step_from_mean(global_weights, mean)


class FedProx(FedAvg):
    """FedProx (Li et al. 2020): FedAvg on the server, a proximal term mu/2 ||w - w_global||^2 locally.

    The proximal term keeps heterogeneous participants from drifting far from the global
    model during many local epochs.
    """

    info = CATALOG["fedprox"]

    def __init__(self, mu: float = 0.01):
        if mu < 0:
            raise ValueError(f"FedProx mu must be >= 0, got {mu}")
        self.mu = float(mu)

    def participant_config(self) -> dict[str, Any]:
        return {"prox_mu": self.mu}


Factory = Callable[[dict[str, Any]], Aggregator]

#: Built-in strategies by name, each called with its resolved parameters (every module that
#: implements one registers it here: see fedpact.algorithms.__init__).
BUILTIN_FACTORIES: dict[str, Factory] = {
    "fedavg": lambda params: FedAvg(),
    "fedprox": lambda params: FedProx(params["mu"]),
}


def register(name: str, factory: Factory) -> None:
    """Register the implementation of a strategy declared in :data:`fedpact.common.algorithms.CATALOG`."""
    if name not in CATALOG:
        raise ValueError(f"strategy {name!r} is not declared in fedpact.common.algorithms.CATALOG")
    BUILTIN_FACTORIES[name] = factory


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def available_algorithms() -> list[str]:
    """Built-in names followed by the plugin names installed here."""
    return list(BUILTIN_ALGORITHMS) + sorted(set(_plugins()) - set(BUILTIN_ALGORITHMS))


def get_aggregator(spec: AlgorithmSpec) -> Aggregator:
    """The aggregator a task names; plugins are called with the spec and must return an Aggregator."""
    if spec.name in BUILTIN_FACTORIES:
        return BUILTIN_FACTORIES[spec.name](spec.resolved_params)
    plugins = _plugins()
    if spec.name not in plugins:
        raise UnknownComponent(
            f"algorithm {spec.name!r} is not available here; available algorithms: "
            f"{', '.join(available_algorithms())}. Install the package that provides it "
            f"(it registers an entry point in the {PLUGIN_GROUP!r} group)."
        )
    try:
        factory = plugins[spec.name].load()
    except Exception as exc:  # a broken plugin must not take the aggregator down with a traceback
        raise UnknownComponent(f"algorithm plugin {spec.name!r} is installed but failed to load: {exc}") from exc
    aggregator = factory(spec)
    if not isinstance(aggregator, Aggregator):
        raise UnknownComponent(
            f"algorithm plugin {spec.name!r} returned {type(aggregator).__name__}, not a fedpact.algorithms.Aggregator"
        )
    return aggregator
