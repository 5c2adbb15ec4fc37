"""``open``: the aggregator sees each participant's update and hands them all to the strategy."""

from __future__ import annotations

from typing import Any

from fedpact.algorithms.validation import validate_update
from fedpact.common.tensors import Weights
from fedpact.runtime import messages as m
from fedpact.runtime.rounds.base import PrivacyRound, Reply, RoundOutcome, RoundPlan


class OpenRound(PrivacyRound):
    mode = "open"

    def accept_update(self, name: str, meta: dict[str, Any], tensors: Weights) -> Reply:
        update = m.split_prefixed(tensors, "w.")
        validate_update(self.host.global_weights, update)
        return self.checked_meta(meta), update

    def config(self, plan: RoundPlan) -> dict[str, Any] | None:
        return None

    def run(self, plan: RoundPlan) -> RoundOutcome:
        replies, notes = self.collect_updates(plan)
        names = sorted(replies)
        updates = [(replies[n][1], int(replies[n][0]["num_samples"])) for n in names]
        self.host.global_weights = self.combine(updates, len(plan.selected))
        return self.plain_outcome(replies, notes)

    def combine(self, updates: list[tuple[Weights, int]], selected: int) -> Weights:
        """The next global weights from the checked ``(weights, num_samples)`` pairs."""
        return self.host.algorithm.aggregate(self.host.global_weights, updates)
