"""``encrypted``: CKKS homomorphic encryption; the aggregator only ever holds ciphertexts.

One participant creates the task's key and seals it to the others through the hub; the
aggregator receives the public context only. Updates arrive as ``Enc(n * w)``, the round's
model is ``Enc(sum n w) * (1 / sum n)``. The strategy's server step cannot run on
ciphertexts, so only the strategies whose step is the plain mean are allowed here (the
definition refuses the others).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedpact.common.errors import UpdateRejected
from fedpact.common.tensors import Weights
from fedpact.runtime import messages as m
from fedpact.runtime.privacy import pack_ciphertexts, unpack_ciphertexts
from fedpact.runtime.rounds.base import PrivacyRound, Reply, RoundFailed, RoundHost, RoundOutcome, RoundPlan, Transport


class EncryptedRound(PrivacyRound):
    mode = "encrypted"
    plaintext_model = False

    def __init__(self, host: RoundHost, transport: Transport) -> None:
        super().__init__(host, transport)
        self.he_public: Any = None  # the public CKKS context, never the secret key
        self.he_keyed: set[str] = set()
        self.enc_weights: list[bytes] | None = None

    def eligible(self, names: list[str]) -> list[str]:
        return [n for n in names if n in self.he_keyed]  # only key holders can decrypt the model

    def prepare(self, r: int) -> None:
        self._ensure_keys(r)

    # -- updates ------------------------------------------------------------------------------
    def _length(self) -> int:
        from fedpact.privacy.modes import num_values

        return num_values(self.host.global_weights)

    def accept_update(self, name: str, meta: dict[str, Any], tensors: Weights) -> Reply:
        from fedpact.privacy import he

        if self.he_public is None:
            raise UpdateRejected("no task key is set up yet")
        try:
            chunks = unpack_ciphertexts(tensors)
        except ValueError as exc:
            raise UpdateRejected(str(exc)) from exc
        expected = -(-self._length() // self.he_public.slot_count)
        if meta.get("length") != self._length() or len(chunks) != expected:
            raise UpdateRejected(f"an encrypted update of this model has {expected} ciphertext chunk(s) of "
                                 f"{self._length()} values; got {len(chunks)} chunk(s), length {meta.get('length')!r}")
        try:
            he.sum_encrypted(self.he_public, [chunks])  # parses every chunk under the task's public key
        except he.HEError as exc:
            raise UpdateRejected(f"not a ciphertext under the task's key: {exc}") from exc
        return self.checked_meta(meta), {"chunks": chunks}

    def run(self, plan: RoundPlan) -> RoundOutcome:
        from fedpact.privacy import he

        replies, notes = self.collect_updates(plan)
        total = sum(int(meta["num_samples"]) for meta, _ in replies.values())
        summed = he.sum_encrypted(self.he_public, [u["chunks"] for _, u in replies.values()])
        self.enc_weights = he.scale_encrypted(self.he_public, summed, 1.0 / total)
        return self.plain_outcome(replies, notes)

    # -- keys -----------------------------------------------------------------------------------
    def _ensure_keys(self, r: int) -> None:
        """Have one participant create the task's CKKS key and seal it to every other ready participant."""
        from fedpact.privacy import he

        d = self.host.definition
        ready = self.host.ready
        pending = sorted(n for n in ready if n not in self.he_keyed and ready[n].get("seal_pk"))
        if not pending:
            return
        holders = sorted(self.he_keyed & set(ready)) or pending[:1]
        holder = holders[0]
        recipients = {n: ready[n]["seal_pk"] for n in pending if n != holder}
        request_id = uuid.uuid4().hex
        self.host.progress.info(f"asking {holder} to seal the task's CKKS key to "
                                f"{', '.join(recipients) or 'nobody else'}")
        self.transport.send_to(holder, m.HE_KEY_REQUEST, {"request_id": request_id, "recipients": recipients,
                                                          "degree": d.privacy.effective_he_degree})
        replies = self.transport.collect(m.HE_KEYS, request_id, {holder}, d.round_timeout_s)
        if holder not in replies:
            if self.he_public is None:
                raise RoundFailed(f"round {r}: {holder} did not create the task's encryption key within "
                                  f"{d.round_timeout_s:.0f} s")
            self.host.progress.warning(f"{holder} did not seal the key for {', '.join(recipients)}; they wait a round")
            return
        _, tensors = replies[holder]
        try:
            public = he.HEContext.from_bytes(tensors["public"].tobytes())
        except (KeyError, AttributeError, he.HEError) as exc:
            raise RoundFailed(f"round {r}: the key holder sent no usable public context: {exc}") from exc
        if public.has_secret_key:
            raise RoundFailed(f"round {r}: {holder} sent a context that contains the secret key; the aggregator "
                              "refuses to hold it (encrypted mode keeps the key with the participants)")
        if self.he_public is None:
            self.he_public = public
        elif public.serialize(secret=False) != self.he_public.serialize(secret=False):
            raise RoundFailed(f"round {r}: {holder} answered with a different key than the task's")
        self.he_keyed.add(holder)
        for n in recipients:
            sealed = tensors.get(f"sealed.{n}")
            if not isinstance(sealed, np.ndarray) or sealed.dtype != np.uint8:
                continue
            self.transport.send_to(n, m.HE_KEY, {}, tensors={"sealed": sealed})
            self.he_keyed.add(n)

    # -- the encrypted model ----------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        from fedpact.privacy.he import flatten_weights

        return {"encrypted": True, "length": self._length(), "layout": flatten_weights(self.host.global_weights)[1]}

    def weights_payload(self) -> bytes | None:
        return None if self.enc_weights is None else pack_ciphertexts(self.enc_weights, self._info())

    def restore_weights(self, data: bytes, state: Mapping[str, Any]) -> bool:
        if not state.get("encrypted"):
            return False
        self.enc_weights = unpack_ciphertexts(m.unpack(data)[1])
        return True

    def checkpoint_state(self) -> dict[str, Any]:
        return {"encrypted": True} if self.enc_weights is not None else {}

    def model_payload(self, metadata: dict[str, Any], extra: Mapping[str, np.ndarray]) -> bytes | None:
        if self.enc_weights is None:
            return None
        # the model stays encrypted on the hub; participants decrypt their copy
        return pack_ciphertexts(self.enc_weights, {**self._info(), "metadata": {**metadata, "encrypted": True}},
                                dict(extra))
