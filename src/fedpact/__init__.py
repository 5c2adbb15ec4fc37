"""fedpact: federated learning across organisations through a hub.

The public API is exported lazily (PEP 562), so that ``import fedpact.hub`` in a hub
process never drags in the training stack (PyTorch, the runtime), and ``import fedpact``
stays fast in a notebook until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Client": "fedpact.sdk",
    "connect": "fedpact.sdk",
    "load_definition": "fedpact.sdk",
    "TaskDefinition": "fedpact.common.definition",
    "parse_definition": "fedpact.common.definition",
    "FedpactError": "fedpact.common.errors",
    "DataSchemaError": "fedpact.common.errors",
    "UpdateRejected": "fedpact.common.errors",
    "UnknownComponent": "fedpact.common.errors",
    "HubClient": "fedpact.client.hub",
    "HubError": "fedpact.client.hub",
    "BlobGone": "fedpact.client.hub",
    "Participant": "fedpact.runtime.participant",
    "DataParticipant": "fedpact.runtime.participant",
    "TrainConfig": "fedpact.runtime.participant",
    "TaskEnded": "fedpact.runtime.participant",
    "Progress": "fedpact.runtime.progress",
    "AggregationFailed": "fedpact.runtime.aggregator",
    "run_aggregator": "fedpact.runtime.aggregator",
    "run_participant": "fedpact.runtime.participant",
    "Dataset": "fedpact.data.dataset",
    "load_data": "fedpact.data.loaders",
    "load_model": "fedpact.inference",
    "simulate": "fedpact.simulation.run",
    "compare": "fedpact.simulation.compare",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fedpact' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
