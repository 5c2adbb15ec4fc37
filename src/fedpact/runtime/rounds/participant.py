"""The participant's side of each privacy mode: one class per mode, chosen once from the definition.

A participant round object holds what a participant keeps between messages (the
secure-aggregation state of the current round; in ``encrypted`` mode its sealing key pair
and the task's CKKS context with the secret key, which never leaves this process except
sealed to another participant's public key). ``run_participant`` calls it at four points:
the hello, the start of a round (before training), the end of training (what to send
instead of the plain update) and for each privacy message. It talks to a
:class:`ParticipantTransport`, never to HTTP.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import numpy as np

from fedpact.common.definition import TaskDefinition
from fedpact.common.tensors import Payload, Weights, decode_stream
from fedpact.runtime import messages as m
from fedpact.runtime.mailbox import Message
from fedpact.runtime.privacy import (
    PrivacyRuntimeError,
    he_context_binding,
    pack_ciphertexts,
    ring_to_wire,
    unpack_ciphertexts,
)
from fedpact.runtime.progress import Progress

#: What a participant sends as its update: extra reply fields and the tensors.
Contribution = tuple[dict[str, Any], dict[str, np.ndarray]]


class ParticipantTransport(Protocol):
    """A participant's link to its aggregator."""

    def send(self, kind: str, payload: bytes | Payload, round: int = 0) -> None:
        """Send one message body to the aggregator."""

    def download_tensors(self, sha256: str, size: int | None) -> tuple[dict[str, str], Weights]:
        """A safetensors blob the aggregator published (a global model), decoded: (metadata, arrays)."""


class HubParticipantTransport:
    """The participant's transport over a hub's relay and blob store."""

    def __init__(self, client: Any, task_id: int, address: str) -> None:
        self.client = client
        self.task_id = task_id
        self.address = address
        self._offered: tuple[str, bytes] | None = None

    def offer(self, sha256: str, data: bytes) -> bool:
        """Keep the bytes of blob ``sha256`` that arrived inline, if they are that blob; True if kept.

        Only the latest one is kept: it is the model of the request being handled.
        """
        if hashlib.sha256(data).hexdigest() != sha256:
            return False
        self._offered = (sha256, data)
        return True

    def send(self, kind: str, payload: bytes | Payload, round: int = 0) -> None:
        self.client.send(self.task_id, sender=self.address, recipient=m.AGGREGATOR, kind=kind, round=round,
                         payload=payload)

    def download_tensors(self, sha256: str, size: int | None) -> tuple[dict[str, str], Weights]:
        if self._offered is not None and self._offered[0] == sha256:
            return decode_stream(self._offered[1])  # a small model that came inline, already checked
        # Decoded as it arrives: the global model is held once, in the arrays handed to fit.
        out: tuple[dict[str, str], Weights] = self.client.download_tensors(self.task_id, sha256, size)
        return out


class ParticipantRound:
    """``open`` (and the base of the others): the trained weights go to the aggregator as they are."""

    mode: ClassVar[str] = "open"

    def __init__(self, transport: ParticipantTransport, task_id: int, me: str, definition: TaskDefinition,
                 progress: Progress) -> None:
        self.transport = transport
        self.task_id = task_id
        self.me = me
        self.definition = definition
        self.progress = progress
        #: The task's CKKS context with the secret key (encrypted mode), for the final model.
        self.he: Any = None

    def hello_fields(self) -> dict[str, Any]:
        return {}

    def global_weights(self, meta: Mapping[str, Any]) -> Weights:
        """The global model a request refers to."""
        return self._download(meta)[1]

    def _download(self, meta: Mapping[str, Any]) -> tuple[dict[str, str], Weights]:
        ref = meta["weights"]
        return self.transport.download_tensors(str(ref["sha256"]), _size(ref))

    def needs_keys_first(self, meta: Mapping[str, Any], msg: Message) -> bool:
        """True when training must wait for this mode's key exchange (the round start is kept for later)."""
        return False

    def contribution(self, meta: Mapping[str, Any], round: int, global_w: Weights, new_w: Weights, n: int,
                     train: dict[str, float], val: dict[str, float]) -> Contribution | None:
        """What to send as the update: (reply fields, tensors); None when the mode sends it later."""
        return {}, m.prefixed(new_w, "w.")

    def on_message(self, msg: Message) -> Message | None:
        """Handle a privacy message; returns a deferred round start whose training may begin now."""
        return None

    def join_secure_sum(self, meta: Mapping[str, Any], reply: Mapping[str, np.ndarray]) -> None:
        """Feed this site's statistics into the secure sum a request announced (``meta["secure"]``)."""
        raise PrivacyRuntimeError(f"privacy mode {self.mode!r} does not sum statistics securely")


class DpParticipantRound(ParticipantRound):
    """``dp``: with ``placement: local`` the clipped, noised delta replaces the update."""

    mode = "dp"

    def contribution(self, meta: Mapping[str, Any], round: int, global_w: Weights, new_w: Weights, n: int,
                     train: dict[str, float], val: dict[str, float]) -> Contribution | None:
        priv = (meta.get("config") or {}).get("privacy") or {}
        if priv.get("placement") != "local":
            return super().contribution(meta, round, global_w, new_w, n, train, val)
        from fedpact.privacy import dp

        delta = {k: np.asarray(new_w[k], dtype=np.float64) - np.asarray(global_w[k], dtype=np.float64)
                 for k in global_w}
        noised, _ = dp.privatize_local(delta, float(priv["clip_norm"]), float(priv["noise_multiplier"]))
        out = {k: (np.asarray(global_w[k], dtype=np.float64) + noised[k]).astype(np.asarray(global_w[k]).dtype)
               for k in global_w}
        # Per-participant loss and accuracy are not covered by the noise: withheld.
        return {"train": {}, "val": {}}, m.prefixed(out, "w.")


class SecureParticipantRound(ParticipantRound):
    """``secure`` and ``secure+dp``: keys are advertised before training, the masked input follows it."""

    mode = "secure"

    def __init__(self, transport: ParticipantTransport, task_id: int, me: str, definition: TaskDefinition,
                 progress: Progress) -> None:
        super().__init__(transport, task_id, me, definition, progress)
        self._secure: dict[str, Any] = {}  # round_id -> {"client", "plan", "vector", "round", "deferred"}

    def needs_keys_first(self, meta: Mapping[str, Any], msg: Message) -> bool:
        round_id = str(meta.get("round_id"))
        if "plan" not in ((meta.get("config") or {}).get("privacy") or {}) or self._keys_shared(round_id):
            return False
        # advertise keys now and train once this participant's shares are out
        self._advertise(meta, msg.round)
        state = self._secure.get(round_id)
        if state is not None:
            state["deferred"] = msg
        return True

    def _advertise(self, meta: Mapping[str, Any], round: int) -> None:
        from fedpact.privacy.modes import SecurePlan
        from fedpact.privacy.secagg import SecAggClient

        priv = (meta.get("config") or {}).get("privacy") or {}
        plan = SecurePlan.from_dict(priv["plan"])
        round_id = str(meta["round_id"])
        if round_id in self._secure:
            return  # already advertised (a repeated delivery of the round start)
        if plan.secagg.round_id != round_id:
            raise PrivacyRuntimeError("the secure-aggregation plan names another round")
        client = SecAggClient(plan.secagg, self.me)
        self._secure = {round_id: {"client": client, "plan": plan, "vector": None, "round": round, "deferred": None}}
        self.transport.send(m.SECAGG, m.pack(client.advertise_keys()), round)

    def join_secure_sum(self, meta: Mapping[str, Any], reply: Mapping[str, np.ndarray]) -> None:
        """Advertise keys for the request's secure sum; the masked statistics go out when asked for.

        Only the tensors the plan lays out are encoded (never a local minimum or maximum).
        """
        from fedpact.privacy.secagg import SecAggClient
        from fedpact.privacy.secure_sum import SumPlan, encode_sums, sum_round_id

        plan = SumPlan.from_dict(meta["secure"])
        round_id = sum_round_id(str(meta.get("request_id")))
        if plan.secagg.round_id != round_id:
            raise PrivacyRuntimeError("the secure-sum plan names another request")
        if round_id in self._secure:
            return  # a repeated delivery of the request
        names = {name for name, _, _ in plan.layout}
        vector = encode_sums(plan, {k: v for k, v in reply.items() if k in names})
        client = SecAggClient(plan.secagg, self.me)
        self._secure = {round_id: {"client": client, "plan": plan, "vector": vector, "round": 0, "deferred": None}}
        self.transport.send(m.SECAGG, m.pack(client.advertise_keys()), 0)

    def _keys_shared(self, round_id: str) -> bool:
        """Steps 0 and 1 of the protocol do not need the input, so they run while the others
        are still downloading and training; the masked input follows training at once."""
        from fedpact.privacy import secagg

        state = self._secure.get(round_id)
        return state is not None and state["client"].step not in (secagg.ADVERTISE, secagg.SHARE)

    def contribution(self, meta: Mapping[str, Any], round: int, global_w: Weights, new_w: Weights, n: int,
                     train: dict[str, float], val: dict[str, float]) -> Contribution | None:
        from fedpact.privacy.modes import encode_contribution

        state = self._secure.get(str(meta["round_id"]))
        if state is None:
            raise PrivacyRuntimeError("secure round state is missing (advertise step not run)")
        state["vector"], _ = encode_contribution(state["plan"], global_w, new_w, n, train, val)
        return None  # the masked input goes out when the aggregator asks for it

    def on_message(self, msg: Message) -> Message | None:
        from fedpact.privacy.secagg import SecAggError

        if msg.kind != m.SECAGG:
            return None
        meta, _ = msg.body()
        round_id = str(meta.get("round_id"))
        state = self._secure.get(round_id)
        if state is None:
            return None  # a round this participant is not part of (or an old one)
        try:
            self._step(state, meta)
            if state["deferred"] is not None and self._keys_shared(round_id):
                deferred, state["deferred"] = state["deferred"], None
                return deferred
        except SecAggError as exc:
            self.progress.warning(f"round {state['round']}: secure aggregation: {exc}")
            self._secure.pop(round_id, None)
        except ValueError as exc:  # ChannelError and malformed fields
            self.progress.warning(f"round {state['round']}: secure aggregation message rejected: {exc}")
            self._secure.pop(round_id, None)
        return None

    def _step(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
        from fedpact.privacy import secagg

        c: secagg.SecAggClient = state["client"]
        step, r = meta.get("step"), state["round"]
        if step == secagg.SHARE and c.step == secagg.SHARE:
            self.transport.send(m.SECAGG, m.pack(c.share_keys(meta)), r)
        elif step == secagg.MASKED and c.step == secagg.MASKED:
            if state["vector"] is None:
                raise secagg.SecAggError("asked for the masked input before training finished")
            out, y = c.masked_input(meta, state["vector"])
            state["vector"] = None
            self.transport.send(m.SECAGG, m.pack(out, {"y": ring_to_wire(y)}), r)
        elif step == secagg.UNMASK and c.step in (secagg.UNMASK, secagg.DONE):
            self.transport.send(m.SECAGG, m.pack(c.unmask(meta)), r)
        # anything else is a duplicate of a step already answered (at-least-once delivery)


class SecureDpParticipantRound(SecureParticipantRound):
    mode = "secure+dp"


class EncryptedParticipantRound(ParticipantRound):
    """``encrypted``: updates go out as ``Enc(n * w)``; the model comes back encrypted and is decrypted here."""

    mode = "encrypted"

    def __init__(self, transport: ParticipantTransport, task_id: int, me: str, definition: TaskDefinition,
                 progress: Progress) -> None:
        from fedpact.privacy import sealing

        super().__init__(transport, task_id, me, definition, progress)
        self._seal_private, self._seal_public = sealing.generate_keypair()

    def hello_fields(self) -> dict[str, Any]:
        return {"seal_pk": base64.b64encode(self._seal_public).decode("ascii")}

    def global_weights(self, meta: Mapping[str, Any]) -> Weights:
        metadata, tensors = self._download(meta)
        info = m.meta_of(metadata)
        if not info.get("encrypted"):
            return tensors
        return self._decrypt(info, tensors)

    def decrypt_model(self, data: bytes) -> Weights:
        return self._decrypt(*m.unpack(data))

    def _decrypt(self, info: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> Weights:
        from fedpact.privacy import he

        if self.he is None:
            raise PrivacyRuntimeError("the model is encrypted and this participant has not received the task's key")
        flat = he.decrypt_vector(self.he, unpack_ciphertexts(tensors), int(info["length"]))
        return he.unflatten_weights(flat, info["layout"])

    def contribution(self, meta: Mapping[str, Any], round: int, global_w: Weights, new_w: Weights, n: int,
                     train: dict[str, float], val: dict[str, float]) -> Contribution | None:
        from fedpact.privacy import he

        if self.he is None:
            raise PrivacyRuntimeError("cannot encrypt the update: this participant has not received the task's key")
        flat, layout = he.flatten_weights(new_w)
        chunks = he.encrypt_vector(self.he, flat * float(n))
        info, enc = m.unpack(pack_ciphertexts(chunks, {"length": int(flat.size), "layout": layout}))
        return info, enc

    def on_message(self, msg: Message) -> Message | None:
        if msg.kind == m.HE_KEY_REQUEST:
            self._answer_key_request(msg)
        elif msg.kind == m.HE_KEY:
            self._receive_key(msg)
        return None

    def _answer_key_request(self, msg: Message) -> None:
        from fedpact.privacy import he, sealing

        meta, _ = msg.body()
        if self.he is None:
            self.he = he.HEContext.create(poly_modulus_degree=int(meta.get("degree", 8192)))
            self.progress.info("created the task's CKKS key (the aggregator receives only its public part)")
        secret = self.he.serialize(secret=True)
        tensors = {"public": np.frombuffer(self.he.serialize(secret=False), dtype=np.uint8)}
        for name, pk in sorted((meta.get("recipients") or {}).items()):
            if name == self.me:
                continue
            sealed = sealing.seal(base64.b64decode(pk), secret, he_context_binding(self.task_id, name))
            tensors[f"sealed.{name}"] = np.frombuffer(sealed, dtype=np.uint8)
        self.transport.send(m.HE_KEYS, m.pack({"request_id": meta.get("request_id")}, tensors))

    def _receive_key(self, msg: Message) -> None:
        from fedpact.privacy import he, sealing

        _, tensors = msg.body()
        if self.he is not None:
            return
        try:
            secret = sealing.open_sealed(self._seal_private, tensors["sealed"].tobytes(),
                                         he_context_binding(self.task_id, self.me))
            ctx = he.HEContext.from_bytes(secret)
        except (KeyError, ValueError) as exc:
            self.progress.warning(f"rejected the task key delivered through the hub: {exc}")
            return
        if not ctx.has_secret_key:
            self.progress.warning("the delivered task key has no secret part; ignored")
            return
        self.he = ctx
        self.progress.info("received the task's CKKS key, sealed to this participant")


def _size(ref: Mapping[str, Any]) -> int | None:
    size = ref.get("size")
    return int(size) if isinstance(size, int) else None


#: The participant round object of each privacy mode.
PARTICIPANT_ROUNDS: dict[str, type[ParticipantRound]] = {
    "open": ParticipantRound,
    "dp": DpParticipantRound,
    "secure": SecureParticipantRound,
    "secure+dp": SecureDpParticipantRound,
    "encrypted": EncryptedParticipantRound,
}


def participant_round_for(transport: ParticipantTransport, task_id: int, me: str, definition: TaskDefinition,
                          progress: Progress) -> ParticipantRound:
    """The participant round object of the definition's privacy mode."""
    return PARTICIPANT_ROUNDS[definition.privacy.mode](transport, task_id, me, definition, progress)
