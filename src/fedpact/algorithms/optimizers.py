"""Server optimisers: the round's mean update treated as a pseudo-gradient.

FedAvgM (Hsu et al. 2019) keeps a momentum buffer; FedAdagrad, FedAdam and FedYogi follow
Algorithm 2 of Reddi et al. 2021, "Adaptive Federated Optimization": with the mean delta
``d``, ``m = beta1 m + (1 - beta1) d``, a second moment ``v`` (Adagrad: ``v + d^2``; Adam:
``beta2 v + (1 - beta2) d^2``; Yogi: ``v - (1 - beta2) d^2 sign(v - d^2)``), started at
``tau^2`` as the paper does, and ``w = w + lr m / (sqrt(v) + tau)``. No bias correction,
as in the paper. Moments are float64 and checkpointed, so ``--resume`` continues the same
trajectory.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedpact.algorithms.strategies import FedAvg, Weights, apply_delta, register
from fedpact.common.algorithms import CATALOG


class _Stateful(FedAvg):
    """A FedAvg mean followed by a server step with per-tensor moments."""

    _slots: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._moments: dict[str, Weights] = {slot: {} for slot in self._slots}

    def state(self) -> dict[str, np.ndarray]:
        return {f"{slot}.{k}": v for slot, tensors in self._moments.items() for k, v in tensors.items()}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        moments: dict[str, Weights] = {slot: {} for slot in self._slots}
        for key, value in state.items():
            slot, _, name = key.partition(".")
            if slot not in moments or not name:
                raise ValueError(f"{type(self).__name__} has no state {key!r}")
            moments[slot][name] = np.asarray(value, dtype=np.float64).copy()
        self._moments = moments

    def _moment(self, slot: str, name: str, like: np.ndarray, start: float = 0.0) -> np.ndarray:
        tensors = self._moments[slot]
        if name not in tensors or tensors[name].shape != like.shape:
            tensors[name] = np.full(like.shape, start, dtype=np.float64)
        return tensors[name]


class FedAvgM(_Stateful):
    """Server momentum: ``b = momentum b + d``, ``w = w + lr b``."""

    info = CATALOG["fedavgm"]
    _slots = ("b",)

    def __init__(self, server_learning_rate: float, momentum: float) -> None:
        super().__init__()
        self.lr = float(server_learning_rate)
        self.momentum = float(momentum)

    def server_step(self, global_weights: Mapping[str, np.ndarray], mean_delta: Mapping[str, np.ndarray]) -> Weights:
        step: Weights = {}
        for k in global_weights:
            d = np.asarray(mean_delta[k], dtype=np.float64)
            b = self._moment("b", k, d)
            b *= self.momentum
            b += d
            step[k] = self.lr * b
        return apply_delta(global_weights, step)


class _Adaptive(_Stateful):
    """Reddi et al.'s adaptive server step; subclasses say how the second moment moves."""

    _slots = ("m", "v")

    def __init__(self, server_learning_rate: float, beta1: float, tau: float, beta2: float = 0.0) -> None:
        super().__init__()
        self.lr = float(server_learning_rate)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.tau = float(tau)

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        raise NotImplementedError

    def server_step(self, global_weights: Mapping[str, np.ndarray], mean_delta: Mapping[str, np.ndarray]) -> Weights:
        step: Weights = {}
        for k in global_weights:
            d = np.asarray(mean_delta[k], dtype=np.float64)
            m = self._moment("m", k, d)
            v = self._moment("v", k, d, start=self.tau**2)
            m *= self.beta1
            m += (1.0 - self.beta1) * d
            self._second_moment(v, d * d)
            step[k] = self.lr * m / (np.sqrt(v) + self.tau)
        return apply_delta(global_weights, step)


class FedAdagrad(_Adaptive):
    info = CATALOG["fedadagrad"]

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        v += d2


class FedAdam(_Adaptive):
    info = CATALOG["fedadam"]

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        v *= self.beta2
        v += (1.0 - self.beta2) * d2


class FedYogi(_Adaptive):
    info = CATALOG["fedyogi"]

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        v -= (1.0 - self.beta2) * d2 * np.sign(v - d2)


register("fedavgm", lambda p: FedAvgM(p["server_learning_rate"], p["momentum"]))
register("fedadagrad", lambda p: FedAdagrad(p["server_learning_rate"], p["beta1"], p["tau"]))
register("fedadam", lambda p: FedAdam(p["server_learning_rate"], p["beta1"], p["tau"], p["beta2"]))
register("fedyogi", lambda p: FedYogi(p["server_learning_rate"], p["beta1"], p["tau"], p["beta2"]))
