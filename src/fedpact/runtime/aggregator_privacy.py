"""The aggregator's side of the privacy modes (docs/privacy.md).

A mixin of :class:`fedpact.runtime.aggregator.Aggregator`: the secure-aggregation steps of
a round, DP noise and accounting, and the encrypted mode's key set-up and ciphertext sums.
It works on the aggregator's own state (``self.definition``, ``self.client``, the mailbox
helpers), so the plain round in ``aggregator.py`` stays readable on its own.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

from fedpact.common.errors import FedpactError, UpdateRejected
from fedpact.common.tensors import Weights
from fedpact.runtime import messages as m
from fedpact.runtime.mailbox import Message
from fedpact.runtime.outcomes import AggregationFailed, now_iso
from fedpact.runtime.privacy import ring_from_wire, unpack_ciphertexts


class PrivacyRounds:
    """Privacy-mode behaviour of the aggregator; see the module docstring."""

    # Set by the Aggregator; declared here so the mixin's code is typed.
    eval_data: tuple[np.ndarray, np.ndarray] | None
    _weights_blob: dict[str, Any] | None

    # -- privacy modes (docs/privacy.md) ------------------------------------------------
    def _init_privacy(self) -> None:
        d = self.definition
        p = d.privacy
        self.mode = p.mode
        self.noise_multiplier: float | None = None
        self.accountant: Any = None
        self.budget_rounds: int | None = None
        self.stop_reason: str | None = None
        self._secure: Any = None  # the SecAggServer of the round in progress
        self._secure_notes: list[str] = []
        self.he_public: Any = None  # encrypted: the public CKKS context, never the secret key
        self.he_keyed: set[str] = set()
        self.enc_weights: list[bytes] | None = None
        if p.differentially_private:
            from fedpact.privacy import dp, modes

            self.noise_multiplier = modes.resolve_noise_multiplier(d)
            self.accountant = dp.PrivacyAccountant(self.noise_multiplier, modes.sampling_rate(d), p.effective_delta,
                                                   p.effective_accountant)  # type: ignore[arg-type]
            self.budget_rounds = modes.budget_rounds(d, self.noise_multiplier)
            if self.budget_rounds == 0:
                raise FedpactError(
                    f"the epsilon budget of {modes.epsilon_budget(d)} does not allow a single round at noise multiplier "
                    f"{self.noise_multiplier:.4g} (sampling rate {modes.sampling_rate(d)}, delta {p.effective_delta}); "
                    "raise the budget or the noise multiplier"
                )
        if self.mode == "encrypted" and self.eval_data is not None:
            self.progress.warning("encrypted mode: the aggregator never holds the model in plaintext, so it cannot "
                                  "evaluate it; evaluation metrics come from the participants")
            self.eval_data = None

    def _privacy_config(self, round_id: str, selected: list[str], started_at: str,
                        r: int) -> tuple[dict[str, Any], Any]:
        """The ``privacy`` section of a round's config, and the secure-aggregation plan if any."""
        from fedpact.privacy.modes import make_secure_plan, num_values
        from fedpact.privacy.quantize import QuantizationError

        p = self.definition.privacy
        cfg: dict[str, Any] = {"mode": p.mode}
        if p.differentially_private:
            cfg.update(clip_norm=p.clip_norm, noise_multiplier=self.noise_multiplier,
                       placement=p.effective_placement)
        if not p.secure:
            return cfg, None
        announced = {n: int(self.ready.get(n, {}).get("num_samples") or 1) for n in selected}
        try:
            plan = make_secure_plan(self.definition, task=self.task_name, round_id=round_id, selected=selected,
                                    announced=announced, model_values=num_values(self.global_weights),
                                    noise_multiplier=self.noise_multiplier)
        except QuantizationError as exc:
            reason = f"round {r}: secure aggregation cannot quantise this round: {exc}"
            self.client.put_round(self.task_id, r, status="failed", participants=selected, started_at=started_at,
                                  finished_at=now_iso(), metrics={}, reason=reason)
            raise AggregationFailed(reason) from exc
        cfg["plan"] = plan.to_dict()
        from fedpact.privacy.secagg import SecAggServer

        self._secure = SecAggServer(plan.secagg)
        self._secure_notes = []
        return cfg, plan

    def _on_secagg(self, msg: Message, name: str, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        from fedpact.privacy.secagg import SecAggError

        server = self._secure
        if server is None:
            return
        try:
            vector = ring_from_wire(tensors["y"]) if "y" in tensors else None
            server.receive(name, meta, vector)
        except (SecAggError, ValueError, TypeError, KeyError, AttributeError) as exc:  # any malformed field
            note = f"a secure-aggregation message from {name} was rejected: {exc}"
            self.progress.warning(f"round {msg.round}: {note}")
            self._secure_notes.append(note)

    def _secure_round(self, r: int, plan: Any, selected: list[str], started_at: str, t0: float,
                      deadline: float) -> dict[str, Any]:
        """Run the four SecAgg steps through the hub; only the sum is ever unmasked here."""
        from fedpact.privacy.modes import PrivacyModeError, decode_aggregate
        from fedpact.privacy.secagg import RoundAborted

        d = self.definition
        server = self._secure
        grace = max(2.0, min(30.0, d.round_timeout_s / 4))

        def wait(until: float) -> None:
            while not server.expected <= server.received and time.monotonic() < until:
                self._pump(wait=min(self.poll_wait, max(0.05, until - time.monotonic())))

        dropped: list[str] = []

        def note_dropped(before: set[str], step: str) -> None:
            for name in sorted(before - server.received):
                dropped.append(f"{name} dropped out during {step}")
                self.ready.pop(name, None)
                self.progress.warning(f"round {r}: {name} dropped out during secure aggregation ({step}); "
                                      "left out until it announces itself again")

        try:
            wait(deadline)
            note_dropped(set(server.expected), "AdvertiseKeys")
            self._broadcast(m.SECAGG, server.roster(), round=r)
            wait(deadline)
            note_dropped(set(server.expected), "ShareKeys")
            forwards = server.forward_shares()
            list(self._downloads.map(lambda item: self._send_to(item[0], m.SECAGG, item[1], round=r),
                                     forwards.items()))
            wait(max(deadline, time.monotonic() + grace))
            note_dropped(set(server.expected), "MaskedInputCollection")
            self._broadcast(m.SECAGG, server.unmask_request(), round=r)
            wait(max(deadline, time.monotonic() + grace))
            note_dropped(set(server.expected), "Unmasking (its input still counts)")
            ring_sum = server.finish()
        except RoundAborted as exc:
            reason = f"round {r}: {exc}"
            notes = dropped + self._secure_notes
            self.client.put_round(self.task_id, r, status="failed", participants=selected, started_at=started_at,
                                  finished_at=now_iso(), metrics={}, reason="; ".join([reason, *notes]))
            raise AggregationFailed(reason) from exc
        finally:
            self._secure = None
        names = list(server.u3)
        try:
            new, agg_metrics, total = decode_aggregate(plan, self.global_weights, ring_sum, denominator=len(selected))
        except PrivacyModeError as exc:
            reason = f"round {r}: the unmasked sum is unusable: {exc}"
            self.client.put_round(self.task_id, r, status="failed", participants=selected, started_at=started_at,
                                  finished_at=now_iso(), metrics={}, reason=reason)
            raise AggregationFailed(reason) from exc
        # The mean update goes through the strategy's server step, as in every plaintext-mean mode.
        self.global_weights = self.algorithm.step_from_mean(self.global_weights, new)
        self._weights_blob = None
        self.contributors.update(names)
        train = {k: v for k, v in agg_metrics.items() if k.startswith("train_")}
        val = {k: v for k, v in agg_metrics.items() if k.startswith("val_")}
        samples = total if plan.weighted else sum(int(self.ready.get(n, {}).get("num_samples") or 0) for n in names)
        metrics = self._round_metrics(r, train, val, samples, len(names), time.monotonic() - t0)
        metrics["selected"] = len(selected)
        metrics["quantization_error_bound"] = plan.error_bound(total)
        return self._complete_round(r, started_at, names, metrics, dropped + self._secure_notes)

    def _aggregate_dp(self, updates: list[Weights], expected: int) -> Weights:
        """dp: local (participants already clipped and noised: plain mean of deltas) or central."""
        from fedpact.privacy import dp

        p = self.definition.privacy
        g = self.global_weights
        deltas = [{k: np.asarray(u[k], dtype=np.float64) - np.asarray(g[k], dtype=np.float64) for k in g}
                  for u in updates]
        if p.effective_placement == "central":
            assert p.clip_norm is not None and self.noise_multiplier is not None
            mean = dp.central_dp_aggregate(deltas, self.noise_multiplier, p.clip_norm, expected_participants=expected)
        else:
            mean = {k: sum(dl[k] for dl in deltas) / len(deltas) for k in g}
        return self.algorithm.server_step(g, mean)

    # -- privacy modes: encrypted ---------------------------------------------------------
    def _he_length(self) -> int:
        from fedpact.privacy.modes import num_values

        return num_values(self.global_weights)

    def _check_encrypted_update(self, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, Any]:
        from fedpact.privacy import he

        if self.he_public is None:
            raise UpdateRejected("no task key is set up yet")
        try:
            chunks = unpack_ciphertexts(tensors)
        except ValueError as exc:
            raise UpdateRejected(str(exc)) from exc
        expected = -(-self._he_length() // self.he_public.slot_count)
        if meta.get("length") != self._he_length() or len(chunks) != expected:
            raise UpdateRejected(f"an encrypted update of this model has {expected} ciphertext chunk(s) of "
                                 f"{self._he_length()} values; got {len(chunks)} chunk(s), length {meta.get('length')!r}")
        try:
            he.sum_encrypted(self.he_public, [chunks])  # parses every chunk under the task's public key
        except he.HEError as exc:
            raise UpdateRejected(f"not a ciphertext under the task's key: {exc}") from exc
        return {"chunks": chunks}

    def _aggregate_encrypted(self, updates: list[tuple[Any, int]]) -> None:
        """encrypted: ``Enc(sum n_u w_u) * (1 / sum n_u)``, computed on ciphertexts with the public key only."""
        from fedpact.privacy import he

        total = sum(n for _, n in updates)
        summed = he.sum_encrypted(self.he_public, [u["chunks"] for u, _ in updates])
        self.enc_weights = he.scale_encrypted(self.he_public, summed, 1.0 / total)

    def _ensure_he_keys(self, r: int) -> None:
        """Have one participant create the task's CKKS key and seal it to every other ready participant."""
        from fedpact.privacy import he

        d = self.definition
        pending = sorted(n for n in self.ready if n not in self.he_keyed and self.ready[n].get("seal_pk"))
        if not pending:
            return
        holders = sorted(self.he_keyed & set(self.ready)) or pending[:1]
        holder = holders[0]
        recipients = {n: self.ready[n]["seal_pk"] for n in pending if n != holder}
        request_id = uuid.uuid4().hex
        self.progress.info(f"asking {holder} to seal the task's CKKS key to {', '.join(recipients) or 'nobody else'}")
        self._send_to(holder, m.HE_KEY_REQUEST, {"request_id": request_id, "recipients": recipients,
                                                 "degree": d.privacy.effective_he_degree})
        replies = self._collect(m.HE_KEYS, request_id, {holder}, d.round_timeout_s)
        if holder not in replies:
            if self.he_public is None:
                raise AggregationFailed(f"round {r}: {holder} did not create the task's encryption key within "
                                        f"{d.round_timeout_s:.0f} s")
            self.progress.warning(f"{holder} did not seal the key for {', '.join(recipients)}; they wait a round")
            return
        _, tensors = replies[holder]
        try:
            public = he.HEContext.from_bytes(tensors["public"].tobytes())
        except (KeyError, he.HEError) as exc:
            raise AggregationFailed(f"round {r}: the key holder sent no usable public context: {exc}") from exc
        if public.has_secret_key:
            raise AggregationFailed(f"round {r}: {holder} sent a context that contains the secret key; the aggregator "
                                    "refuses to hold it (encrypted mode keeps the key with the participants)")
        if self.he_public is None:
            self.he_public = public
        elif public.serialize(secret=False) != self.he_public.serialize(secret=False):
            raise AggregationFailed(f"round {r}: {holder} answered with a different key than the task's")
        self.he_keyed.add(holder)
        for n in recipients:
            sealed = tensors.get(f"sealed.{n}")
            if sealed is None:
                continue
            self._send_to(n, m.HE_KEY, {}, tensors={"sealed": sealed})
            self.he_keyed.add(n)

    def _enc_info(self) -> dict[str, Any]:
        from fedpact.privacy.he import flatten_weights

        return {"encrypted": True, "length": self._he_length(), "layout": flatten_weights(self.global_weights)[1]}
