"""Simulated federations: many virtual participants, the real round objects, no hub (docs/simulation.md)."""

from __future__ import annotations

from fedpact.simulation.compare import Comparison, compare
from fedpact.simulation.federation import Realism, SimFederation
from fedpact.simulation.partition import PartitionError, PartitionSpec
from fedpact.simulation.run import SimulationResult, simulate

__all__ = ["Comparison", "compare", "PartitionError", "PartitionSpec", "Realism", "SimFederation", "SimulationResult", "simulate"]
