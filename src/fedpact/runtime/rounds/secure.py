"""``secure`` and ``secure+dp``: secure aggregation, the aggregator unmasks only the sum.

The four SecAgg steps run through the transport; the unmasked mean delta goes through the
strategy's server step. ``secure+dp`` adds distributed noise (each participant's share)
and the epsilon accountant of :mod:`fedpact.runtime.rounds.dp`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fedpact.common.errors import UpdateRejected
from fedpact.common.tensors import Weights
from fedpact.runtime import messages as m
from fedpact.runtime.privacy import ring_from_wire
from fedpact.runtime.rounds.base import (
    PrivacyRound,
    Reply,
    RoundFailed,
    RoundHost,
    RoundOutcome,
    RoundPlan,
    SumOutcome,
    Transport,
)
from fedpact.runtime.rounds.dp import DpAccounting

if TYPE_CHECKING:
    from fedpact.privacy.secure_sum import SumLayout, SumPlan


class SecureRound(PrivacyRound):
    mode = "secure"
    secure_statistics = True

    def __init__(self, host: RoundHost, transport: Transport) -> None:
        super().__init__(host, transport)
        self.accounting = DpAccounting(host.definition) if host.definition.privacy.differentially_private else None
        self._server: Any = None  # the SecAggServer of the round in progress
        self._plan: Any = None
        self._notes: list[str] = []
        self._sends = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fedpact-secagg")

    def budget_allows(self, r: int) -> bool:
        self.stop_reason = self.accounting.stop_reason(r) if self.accounting else None
        return self.stop_reason is None

    def round_metrics(self) -> dict[str, Any]:
        return self.accounting.step() if self.accounting else {}

    def restore(self, rounds_done: int) -> None:
        if self.accounting:
            self.accounting.accountant.step(rounds_done)

    def epsilon(self) -> float | None:
        return self.accounting.accountant.epsilon() if self.accounting else None

    def evaluates_final_model(self) -> bool:
        return False  # per-participant hold-out metrics are not covered by secure aggregation

    def config(self, plan: RoundPlan) -> dict[str, Any] | None:
        from fedpact.privacy.modes import make_secure_plan, num_values
        from fedpact.privacy.quantize import QuantizationError
        from fedpact.privacy.secagg import SecAggServer

        d = self.host.definition
        p = d.privacy
        cfg: dict[str, Any] = {"mode": p.mode}
        noise = None
        if self.accounting:
            noise = self.accounting.noise_multiplier
            cfg.update(clip_norm=p.clip_norm, noise_multiplier=noise, placement=p.effective_placement)
        announced = {n: int(self.host.ready.get(n, {}).get("num_samples") or 1) for n in plan.selected}
        self._notes = []
        while True:
            try:
                secure_plan = make_secure_plan(d, task=self.host.task_name, round_id=plan.round_id,
                                               selected=plan.selected, announced=announced,
                                               model_values=num_values(self.host.global_weights),
                                               noise_multiplier=noise)
                break
            except QuantizationError as exc:
                # One participant announcing a huge sample count must not fail every round: weights
                # are capped (participants clip theirs to the plan's) until the sum fits the ring.
                largest = max(announced.values())
                if largest <= 1:
                    raise RoundFailed(f"round {plan.number}: secure aggregation cannot quantise this round: "
                                      f"{exc}") from exc
                cap = largest // 2
                announced = {n: min(v, cap) for n, v in announced.items()}
        if max(announced.values()) < max(int(self.host.ready.get(n, {}).get("num_samples") or 1)
                                         for n in plan.selected):
            note = (f"sample counts capped at {max(announced.values())} so that the round's weighted sum fits "
                    f"the {p.effective_bits}-bit ring")
            self.host.progress.warning(f"round {plan.number}: {note}")
            self._notes.append(note)
        cfg["plan"] = secure_plan.to_dict()
        self._plan = secure_plan
        self._server = SecAggServer(secure_plan.secagg)
        return cfg

    def accept_update(self, name: str, meta: dict[str, Any], tensors: Weights) -> Reply:
        raise UpdateRejected("this task uses secure aggregation: plain updates are not accepted")

    def on_protocol_message(self, name: str, round: int, meta: dict[str, Any], tensors: Weights) -> None:
        from fedpact.privacy.secagg import SecAggError

        server = self._server
        if server is None:
            return
        try:
            vector = ring_from_wire(tensors["y"]) if "y" in tensors else None
            server.receive(name, meta, vector)
        except (SecAggError, ValueError, TypeError, KeyError, AttributeError) as exc:  # any malformed field
            note = f"a secure-aggregation message from {name} was rejected: {exc}"
            self.host.progress.warning(f"round {round}: {note}")
            self._notes.append(note)

    def _protocol(self, server: Any, r: int, deadline: float, what: str) -> tuple[Any, list[str]]:
        """Drive the four SecAgg steps of ``server`` through the transport; (unmasked ring sum, dropout notes).

        ``what`` names the input in the notes ("round 3", "statistics exchange ...").
        """
        from fedpact.privacy.secagg import RoundAborted

        d = self.host.definition
        grace = max(2.0, min(30.0, d.round_timeout_s / 4))
        dropped: list[str] = []

        def wait(until: float) -> None:
            self.transport.pump_until(lambda: server.expected <= server.received, until)

        def note_dropped(before: set[str], step: str) -> None:
            for name in sorted(before - server.received):
                dropped.append(f"{name} dropped out during {step}")
                self.host.ready.pop(name, None)
                self.host.progress.warning(f"{what}: {name} dropped out during secure aggregation ({step}); "
                                           "left out until it announces itself again")

        try:
            wait(deadline)
            note_dropped(set(server.expected), "AdvertiseKeys")
            self.transport.broadcast(m.SECAGG, server.roster(), round=r)
            wait(deadline)
            note_dropped(set(server.expected), "ShareKeys")
            forwards = server.forward_shares()
            list(self._sends.map(lambda item: self.transport.send_to(item[0], m.SECAGG, item[1], round=r),
                                 forwards.items()))
            wait(max(deadline, time.monotonic() + grace))
            note_dropped(set(server.expected), "MaskedInputCollection")
            self.transport.broadcast(m.SECAGG, server.unmask_request(), round=r)
            wait(max(deadline, time.monotonic() + grace))
            note_dropped(set(server.expected), "Unmasking (its input still counts)")
            return server.finish(), dropped
        except RoundAborted as exc:
            raise RoundFailed(f"{what}: {exc}", dropped + self._notes) from exc
        finally:
            self._server = None

    def run(self, plan: RoundPlan) -> RoundOutcome:
        from fedpact.privacy.modes import PrivacyModeError, decode_aggregate

        server, secure_plan = self._server, self._plan
        r = plan.number
        ring_sum, dropped = self._protocol(server, r, plan.deadline, f"round {r}")
        names = list(server.u3)
        try:
            new, agg_metrics, total = decode_aggregate(secure_plan, self.host.global_weights, ring_sum,
                                                       denominator=len(plan.selected))
        except PrivacyModeError as exc:
            raise RoundFailed(f"round {r}: the unmasked sum is unusable: {exc}") from exc
        notes = dropped + self._notes
        clipped = int(agg_metrics.pop("clipped_inputs", 0))
        if clipped:
            note = (f"{clipped} of {len(names)} inputs exceeded privacy.clip ({secure_plan.clip:g}) in some coordinate "
                    "and were clipped, which biases the mean: raise privacy.clip")
            self.host.progress.warning(f"round {r}: {note}")
            notes.append(note)
        # The mean update goes through the strategy's server step, as in every plaintext-mean mode.
        self.host.global_weights = self.host.algorithm.step_from_mean(self.host.global_weights, new)
        samples = total if secure_plan.weighted else sum(
            int(self.host.ready.get(n, {}).get("num_samples") or 0) for n in names)
        return RoundOutcome(
            contributors=sorted(names),
            train={k: v for k, v in agg_metrics.items() if k.startswith("train_")},
            val={k: v for k, v in agg_metrics.items() if k.startswith("val_")},
            num_samples=samples,
            notes=notes,
            metrics={"quantization_error_bound": secure_plan.error_bound(total)}
            | ({"clipped_inputs": clipped} if secure_plan.with_metrics else {}),
        )

    # -- statistics: exact secure sums of counts and sums (docs/privacy.md) -------------------
    def sum_plan(self, request_id: str, participants: Sequence[str], layout: SumLayout) -> SumPlan:
        from fedpact.privacy.secagg import SecAggServer
        from fedpact.privacy.secure_sum import make_sum_plan

        p = self.host.definition.privacy
        plan = make_sum_plan(task=self.host.task_name, request_id=request_id, participants=participants,
                             threshold=p.threshold_for(len(participants)), layout=layout, sparse=bool(p.sparse),
                             degree=p.degree)
        self._notes = []
        self._server = SecAggServer(plan.secagg)
        return plan

    def secure_sum(self, plan: SumPlan, deadline: float, what: str) -> SumOutcome:
        from fedpact.privacy.secure_sum import SecureSumError, decode_sums

        server = self._server
        if server is None or server.params != plan.secagg:
            raise RoundFailed(f"{what}: no secure sum of this plan is in progress")
        ring_sum, dropped = self._protocol(server, 0, deadline, what)
        try:
            totals = decode_sums(plan, ring_sum)
        except SecureSumError as exc:
            raise RoundFailed(f"{what}: the unmasked sum is unusable: {exc}", dropped + self._notes) from exc
        return SumOutcome(totals, sorted(server.u3), dropped + self._notes)

    def close(self) -> None:
        self._sends.shutdown(wait=False)


class SecureDpRound(SecureRound):
    mode = "secure+dp"
