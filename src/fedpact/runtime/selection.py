"""Which participants take part in a round: one rule for a federation and a simulation.

The draw depends only on the definition's seed, the round number and the sorted names of
the eligible participants, so a resumed aggregator and a simulation with the same seed pick
the same participants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedpact.common.definition import TaskDefinition


def select_participants(definition: TaskDefinition, eligible: Sequence[str], round_number: int) -> list[str]:
    """``fraction`` of the eligible participants (never fewer than ``min_participants``), sorted."""
    names = sorted(eligible)
    k = min(len(names), max(definition.min_participants, math.ceil(definition.fraction * len(names))))
    rng = np.random.default_rng([definition.seed, round_number])
    return sorted(rng.choice(names, size=k, replace=False).tolist())
