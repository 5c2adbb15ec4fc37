"""The contract every model (built-in or plugin) offers to the federated runtime.

The runtime only moves named float32 arrays between parties and calls ``fit``/``evaluate``
on local data, so any framework can sit behind this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedpact.common.errors import FedpactError

if TYPE_CHECKING:
    from fedpact.models.onnx_export import OnnxGraph

EpochCallback = Callable[[int, dict[str, float]], None]
BatchCallback = Callable[[int, int], None]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


class ModelConfigError(FedpactError, ValueError):
    """Model parameters in a task definition that cannot build a working model."""


class Model(ABC):
    """A trainable classifier whose state is a set of named float32 arrays."""

    num_classes: int

    @abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]:
        """Float32 copies under stable names, safe to send while training continues."""

    @abstractmethod
    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Replace the state; raises ValueError naming any missing, extra or misshapen array."""

    @abstractmethod
    def fit(
        self,
        x: np.ndarray,
        y_idx: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        lr: float,
        optimizer: str = "sgd",
        seed: int = 0,
        prox_mu: float = 0.0,
        on_epoch: EpochCallback | None = None,
        on_batch: BatchCallback | None = None,
    ) -> dict[str, float]:
        """Train from the current weights; returns the last epoch's loss, accuracy, num_samples."""

    @abstractmethod
    def evaluate(self, x: np.ndarray, y_idx: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
        """Loss, accuracy and num_samples; an empty set gives zeros so callers can weight by count."""

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices 0..C-1."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, C]``; a model without them says so rather than guessing."""
        raise ModelConfigError(f"{type(self).__name__} does not give class probabilities")

    def onnx_layers(self, graph: OnnxGraph, x: str) -> str:
        """Add this model's layers to ``graph`` after tensor ``x``; return the logits' name.

        The extension point of ``fedpact model export --format onnx``: a model class that
        implements it is exportable, with no registration elsewhere.
        """
        raise ModelConfigError(
            f"{type(self).__name__} cannot be exported to ONNX (it does not implement Model.onnx_layers)"
        )

    def confusion_matrix(self, x: np.ndarray, y_idx: np.ndarray) -> np.ndarray:
        """Counts with true classes as rows and predicted classes as columns."""
        c = self.num_classes
        truth = np.asarray(y_idx, dtype=np.int64)
        pred = self.predict(x).astype(np.int64)
        return np.bincount(truth * c + pred, minlength=c * c).reshape(c, c)


def check_weights(expected: Mapping[str, tuple[int, ...]], weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validated float32 contiguous arrays in ``expected`` order, or a ValueError listing every mismatch."""
    problems = []
    absent = [k for k in expected if k not in weights]
    extra = [k for k in weights if k not in expected]
    if absent:
        problems.append(f"missing tensor(s) {', '.join(absent)}")
    if extra:
        problems.append(f"unexpected tensor(s) {', '.join(extra)}")
    out: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        if name not in weights:
            continue
        arr = np.asarray(weights[name])
        if arr.dtype.kind not in "fiu":
            problems.append(f"{name}: dtype {arr.dtype} is not numeric")
        elif tuple(arr.shape) != tuple(shape):
            problems.append(f"{name}: expected shape {tuple(shape)}, got {tuple(arr.shape)}")
        else:
            out[name] = np.ascontiguousarray(arr, dtype=np.float32)
    if problems:
        raise ValueError("weights do not fit this model: " + "; ".join(problems))
    return out


def check_fit_args(
    n: int, n_labels: int, epochs: int, batch_size: int, lr: float, optimizer: str, prox_mu: float
) -> None:
    """Reject settings that would otherwise fail deep inside a training loop."""
    if n != n_labels:
        raise ValueError(f"x has {n} samples but y_idx has {n_labels} labels")
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if prox_mu < 0:
        raise ValueError(f"prox_mu must be >= 0, got {prox_mu}")


def check_labels(y_idx: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices as int64, refusing raw label values that were never encoded."""
    y = np.asarray(y_idx)
    if y.dtype.kind not in "iu":
        raise ValueError(f"y_idx must hold integer class indices, got {y.dtype}")
    y = y.astype(np.int64, copy=False).reshape(-1)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"y_idx must be class indices 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}; "
            "encode raw labels with fedpact.data.encode_labels"
        )
    return y


def empty_metrics() -> dict[str, float]:
    return {"loss": 0.0, "accuracy": 0.0, "num_samples": 0}
