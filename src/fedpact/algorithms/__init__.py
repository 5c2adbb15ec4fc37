"""Server-side algorithms: update validation, weighted averaging, strategies, standardisation.

Importing the package registers every built-in strategy (strategies, optimizers, robust).
"""

from fedpact.algorithms.fedavg import weighted_average
from fedpact.algorithms.optimizers import FedAdagrad, FedAdam, FedAvgM, FedYogi
from fedpact.algorithms.robust import Krum, Median, MultiKrum, TrimmedMean
from fedpact.algorithms.standardize import apply_standardization, combine_moments, local_moments
from fedpact.algorithms.strategies import (
    Aggregator,
    FedAvg,
    FedProx,
    available_algorithms,
    check_updates,
    get_aggregator,
)
from fedpact.algorithms.validation import validate_update

__all__ = [
    "Aggregator",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Krum",
    "Median",
    "MultiKrum",
    "TrimmedMean",
    "apply_standardization",
    "available_algorithms",
    "check_updates",
    "combine_moments",
    "get_aggregator",
    "local_moments",
    "validate_update",
    "weighted_average",
]
