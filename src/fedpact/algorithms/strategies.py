"""Aggregation strategies chosen by name in a task, built-in or from installed plugins."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import numpy as np

from fedpact.algorithms.fedavg import weighted_average
from fedpact.algorithms.validation import validate_update
from fedpact.common.definition import BUILTIN_ALGORITHMS, AlgorithmSpec
from fedpact.common.errors import UnknownComponent, UpdateRejected

PLUGIN_GROUP = "fedpact.algorithms"

Update = tuple[Mapping[str, np.ndarray], int]


class Aggregator(ABC):
    """Server side of a federated algorithm: combines participants' weights into the next global model."""

    @abstractmethod
    def aggregate(self, global_weights: Mapping[str, np.ndarray], updates: Sequence[Update]) -> dict[str, np.ndarray]:
        """The next global weights from ``(weights after local training, num_samples)`` pairs."""

    def participant_config(self) -> dict[str, Any]:
        """Settings participants need for local training (e.g. FedProx's ``prox_mu``)."""
        return {}


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

    def aggregate(self, global_weights: Mapping[str, np.ndarray], updates: Sequence[Update]) -> dict[str, np.ndarray]:
        check_updates(global_weights, updates)
        return weighted_average([w for w, _ in updates], [float(n) for _, n in updates])


class FedProx(FedAvg):
    """FedProx (Li et al. 2020): FedAvg on the server, a proximal term mu/2 ||w - w_global||^2 locally.

    The proximal term keeps heterogeneous participants from drifting far from the global
    model during many local epochs.
    """

    def __init__(self, mu: float = 0.01):
        if mu < 0:
            raise ValueError(f"FedProx mu must be >= 0, got {mu}")
        self.mu = float(mu)

    def participant_config(self) -> dict[str, Any]:
        return {"prox_mu": self.mu}


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def available_algorithms() -> list[str]:
    """Built-in names followed by the plugin names installed here."""
    return list(BUILTIN_ALGORITHMS) + sorted(set(_plugins()) - set(BUILTIN_ALGORITHMS))


def get_aggregator(spec: AlgorithmSpec) -> Aggregator:
    """The aggregator a task names; plugins are called with the spec and must return an Aggregator."""
    if spec.name == "fedavg":
        return FedAvg()
    if spec.name == "fedprox":
        return FedProx(spec.params.get("mu", 0.01))
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
