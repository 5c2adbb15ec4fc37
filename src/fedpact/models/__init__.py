"""Models participants train: the Model contract, built-ins and the name-based registry.

The torch models are imported on first use (``fedpact.models.MLPModel``), so importing
this package never loads torch.
"""

from __future__ import annotations

from typing import Any

from fedpact.models.base import Model, ModelConfigError
from fedpact.models.kmeans import KMeans
from fedpact.models.linear import LinearRegression, LogisticRegression
from fedpact.models.registry import available_models, build_model
from fedpact.models.softmax import SoftmaxRegression

__all__ = [
    "CNNModel",
    "KMeans",
    "LinearRegression",
    "LogisticRegression",
    "MLPModel",
    "Model",
    "ModelConfigError",
    "SoftmaxRegression",
    "TorchModel",
    "available_models",
    "build_model",
]

_TORCH_NAMES = ("CNNModel", "MLPModel", "TorchModel")


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        from fedpact.models import torch_nets

        return getattr(torch_nets, name)
    raise AttributeError(f"module 'fedpact.models' has no attribute {name!r}")
