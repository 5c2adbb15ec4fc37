"""``dp`` (and the accounting ``secure+dp`` shares): clipped, noised updates and an epsilon accountant.

Noise is added on each participant (``placement: local``) or here on the aggregate
(``central``); either way the mean delta goes through the strategy's server step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedpact.common.definition import TaskDefinition
from fedpact.common.errors import FedpactError
from fedpact.common.tensors import Weights
from fedpact.runtime.rounds.base import RoundHost, RoundPlan, Transport
from fedpact.runtime.rounds.open import OpenRound


class DpAccounting:
    """The noise multiplier, the accountant and the epsilon budget of a differentially private task."""

    def __init__(self, d: TaskDefinition) -> None:
        from fedpact.privacy import dp, modes

        p = d.privacy
        self.definition = d
        self.noise_multiplier = modes.resolve_noise_multiplier(d)
        self.accountant = dp.PrivacyAccountant(self.noise_multiplier, modes.sampling_rate(d), p.effective_delta,
                                               "pld" if p.effective_accountant == "pld" else "rdp")
        self.budget_rounds = modes.budget_rounds(d, self.noise_multiplier)
        if self.budget_rounds == 0:
            raise FedpactError(
                f"the epsilon budget of {modes.epsilon_budget(d)} does not allow a single round at noise multiplier "
                f"{self.noise_multiplier:.4g} (sampling rate {modes.sampling_rate(d)}, delta {p.effective_delta}); "
                "raise the budget or the noise multiplier"
            )

    def stop_reason(self, r: int) -> str | None:
        """Why round ``r`` may not run (the budget is spent), or None."""
        from fedpact.privacy.modes import epsilon_budget

        if self.budget_rounds is None or r <= self.budget_rounds:
            return None
        d = self.definition
        return (f"privacy budget spent: epsilon {self.accountant.epsilon():.4g} (delta {d.privacy.effective_delta:g}) "
                f"after {r - 1} round(s); one more round would exceed the epsilon budget of {epsilon_budget(d):g}")

    def step(self) -> dict[str, Any]:
        self.accountant.step()
        return {"epsilon": self.accountant.epsilon(), "delta": self.definition.privacy.effective_delta,
                "noise_multiplier": self.noise_multiplier}


class DpRound(OpenRound):
    mode = "dp"

    def __init__(self, host: RoundHost, transport: Transport) -> None:
        super().__init__(host, transport)
        self.accounting = DpAccounting(host.definition)

    def budget_allows(self, r: int) -> bool:
        self.stop_reason = self.accounting.stop_reason(r)
        return self.stop_reason is None

    def config(self, plan: RoundPlan) -> dict[str, Any] | None:
        p = self.host.definition.privacy
        return {"mode": p.mode, "clip_norm": p.clip_norm, "noise_multiplier": self.accounting.noise_multiplier,
                "placement": p.effective_placement}

    def round_metrics(self) -> dict[str, Any]:
        return self.accounting.step()

    def restore(self, rounds_done: int) -> None:
        self.accounting.accountant.step(rounds_done)

    def epsilon(self) -> float | None:
        return self.accounting.accountant.epsilon()

    def evaluates_final_model(self) -> bool:
        # Per-participant hold-out metrics are not covered by local noise.
        return self.host.definition.privacy.effective_placement == "central"

    def combine(self, updates: list[tuple[Weights, int]], selected: int) -> Weights:
        from fedpact.privacy import dp

        p = self.host.definition.privacy
        g = self.host.global_weights
        deltas = [{k: np.asarray(u[k], dtype=np.float64) - np.asarray(g[k], dtype=np.float64) for k in g}
                  for u, _ in updates]
        if p.effective_placement == "central":
            assert p.clip_norm is not None
            mean = dp.central_dp_aggregate(deltas, self.accounting.noise_multiplier, p.clip_norm,
                                           expected_participants=selected)
        else:  # local: participants already clipped and noised; the plain mean of the deltas
            mean = {k: np.mean([dl[k] for dl in deltas], axis=0) for k in g}
        return self.host.algorithm.server_step(g, mean)
