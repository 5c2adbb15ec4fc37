"""The participant's side of the privacy modes (docs/privacy.md), on top of the relay.

:class:`ParticipantPrivacy` holds what a participant keeps between messages: the
secure-aggregation state of the current round, its sealing key pair and, in ``encrypted``
mode, the task's CKKS context with the secret key (which never leaves this process except
sealed to another participant's public key). ``run_participant`` calls it at four points:
the hello, the start of a round (before training), the end of training (instead of sending
the plain update) and for each privacy message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedpact.client.hub import HubClient
from fedpact.common.definition import TaskDefinition
from fedpact.common.tensors import Weights, decode_metadata, decode_weights, encode_weights
from fedpact.runtime import messages as m
from fedpact.runtime.mailbox import Message
from fedpact.runtime.progress import Progress

#: Name prefix of the ciphertext chunks of an encrypted model or update.
CHUNK_PREFIX = "c."


def he_context_binding(task_id: int, recipient: str) -> bytes:
    from fedpact.privacy.sealing import make_context

    return make_context("fedpact/he-secret-context/v1", task_id, recipient)


def pack_ciphertexts(chunks: list[bytes], meta: Mapping[str, Any], extra: Mapping[str, np.ndarray] | None = None) -> bytes:
    """An encrypted vector as one safetensors container: each chunk a uint8 tensor."""
    tensors = {f"{CHUNK_PREFIX}{i:05d}": np.frombuffer(c, dtype=np.uint8) for i, c in enumerate(chunks)}
    tensors.update(extra or {})
    return m.pack(dict(meta), tensors)


def unpack_ciphertexts(tensors: Mapping[str, np.ndarray]) -> list[bytes]:
    names = sorted(k for k in tensors if k.startswith(CHUNK_PREFIX))
    for k in names:
        if tensors[k].dtype != np.uint8 or tensors[k].ndim != 1:
            raise ValueError(f"ciphertext chunk {k!r} must be a 1-D uint8 tensor")
    return [tensors[k].tobytes() for k in names]


def ring_to_wire(y: np.ndarray) -> np.ndarray:
    """uint32/uint64 ring vectors travel as the int32/int64 of the same bits (safetensors dtypes)."""
    return y.view(np.int32 if y.dtype == np.uint32 else np.int64)


def ring_from_wire(t: np.ndarray) -> np.ndarray:
    if t.dtype == np.int32:
        return t.view(np.uint32)
    if t.dtype == np.int64:
        return t.view(np.uint64)
    raise ValueError(f"a masked input must be int32 or int64 on the wire, got {t.dtype}")


class ParticipantPrivacy:
    def __init__(self, client: HubClient, task_id: int, address: str, me: str, definition: TaskDefinition,
                 progress: Progress) -> None:
        self.client = client
        self.task_id = task_id
        self.address = address
        self.me = me
        self.definition = definition
        self.mode = definition.privacy.mode
        self.progress = progress
        self._secure: dict[str, Any] = {}  # round_id -> {"client", "plan", "vector", "round"}
        self._seal_private: bytes | None = None
        self._seal_public: bytes | None = None
        self.he = None  # HEContext with the secret key, once received or created
        if self.mode == "encrypted":
            from fedpact.privacy import sealing

            self._seal_private, self._seal_public = sealing.generate_keypair()

    def _send(self, kind: str, payload: bytes, round: int = 0) -> None:
        self.client.send(self.task_id, sender=self.address, recipient=m.AGGREGATOR, kind=kind, round=round,
                         payload=payload)

    # -- hello ------------------------------------------------------------------------
    def hello_fields(self) -> dict[str, Any]:
        if self._seal_public is not None:
            return {"seal_pk": base64.b64encode(self._seal_public).decode("ascii")}
        return {}

    # -- global model -----------------------------------------------------------------
    def global_weights(self, meta: Mapping[str, Any]) -> Weights:
        """The global model a request refers to; in encrypted mode decrypted with the task's key."""
        data = self.client.download_blob(self.task_id, meta["weights"]["sha256"])
        info = json.loads(decode_metadata(data).get("fedpact", "{}"))
        if not info.get("encrypted"):
            return decode_weights(data)
        return self.decrypt_model(data)

    def decrypt_model(self, data: bytes) -> Weights:
        from fedpact.privacy import he

        if self.he is None:
            raise PrivacyRuntimeError("the model is encrypted and this participant has not received the task's key")
        info, tensors = m.unpack(data)
        flat = he.decrypt_vector(self.he, unpack_ciphertexts(tensors), int(info["length"]))
        return he.unflatten_weights(flat, info["layout"])

    # -- a round ----------------------------------------------------------------------
    def before_training(self, meta: Mapping[str, Any], round: int) -> None:
        """secure / secure+dp: make this round's keys and advertise them before training starts."""
        priv = (meta.get("config") or {}).get("privacy") or {}
        if "plan" not in priv:
            return
        from fedpact.privacy.modes import SecurePlan
        from fedpact.privacy.secagg import SecAggClient

        plan = SecurePlan.from_dict(priv["plan"])
        round_id = str(meta["round_id"])
        if round_id in self._secure:
            return  # already advertised (a repeated delivery of the round start)
        if plan.secagg.round_id != round_id:
            raise PrivacyRuntimeError("the secure-aggregation plan names another round")
        client = SecAggClient(plan.secagg, self.me)
        self._secure = {round_id: {"client": client, "plan": plan, "vector": None, "round": round, "deferred": None}}
        self._send(m.SECAGG, m.pack(client.advertise_keys()), round)

    @staticmethod
    def is_secure(meta: Mapping[str, Any]) -> bool:
        return "plan" in ((meta.get("config") or {}).get("privacy") or {})

    def keys_shared(self, round_id: str) -> bool:
        """secure: training waits until this participant's shares are out (ShareKeys before the input).

        Steps 0 and 1 of the protocol do not need the input, so they run while the others
        are still downloading and training; the masked input follows training at once.
        """
        from fedpact.privacy import secagg

        state = self._secure.get(round_id)
        return state is not None and state["client"].step not in (secagg.ADVERTISE, secagg.SHARE)

    def defer(self, round_id: str, msg: Message) -> None:
        state = self._secure.get(round_id)
        if state is not None:
            state["deferred"] = msg

    def after_training(self, meta: Mapping[str, Any], round: int, global_w: Weights, new_w: Weights, n: int,
                       train: dict[str, float], val: dict[str, float]) -> tuple[Weights, dict[str, Any]] | None:
        """What to send instead of the plain update: None (nothing: secure aggregation takes over)
        or (weights, reply fields) to send as the update."""
        priv = (meta.get("config") or {}).get("privacy") or {}
        mode = priv.get("mode", "open")
        if mode in ("secure", "secure+dp"):
            from fedpact.privacy.modes import encode_contribution

            state = self._secure.get(str(meta["round_id"]))
            if state is None:
                raise PrivacyRuntimeError("secure round state is missing (advertise step not run)")
            state["vector"], _ = encode_contribution(state["plan"], global_w, new_w, n, train, val)
            return None
        if mode == "dp" and priv.get("placement") == "local":
            from fedpact.privacy import dp

            delta = {k: np.asarray(new_w[k], dtype=np.float64) - np.asarray(global_w[k], dtype=np.float64)
                     for k in global_w}
            noised, norm = dp.privatize_local(delta, float(priv["clip_norm"]), float(priv["noise_multiplier"]))
            out = {k: (np.asarray(global_w[k], dtype=np.float64) + noised[k]).astype(np.asarray(global_w[k]).dtype)
                   for k in global_w}
            # Per-participant loss and accuracy are not covered by the noise: withheld.
            return out, {"train": {}, "val": {}}
        return new_w, {}

    def encrypted_update(self, new_w: Weights, n: int) -> bytes:
        """encrypted: ``Enc(n * w)`` as ciphertext chunks (the aggregator divides the sum by sum n)."""
        from fedpact.privacy import he

        if self.he is None:
            raise PrivacyRuntimeError("cannot encrypt the update: this participant has not received the task's key")
        flat, layout = he.flatten_weights(new_w)
        chunks = he.encrypt_vector(self.he, flat * float(n))
        return pack_ciphertexts(chunks, {"length": int(flat.size), "layout": layout})

    # -- privacy messages -------------------------------------------------------------
    def on_message(self, msg: Message) -> Message | None:
        """Handle a privacy message; returns a deferred round start whose training may begin now."""
        from fedpact.privacy.secagg import SecAggError

        if msg.kind == m.SECAGG:
            meta, tensors = msg.body()
            state = self._secure.get(str(meta.get("round_id")))
            if state is None:
                return None  # a round this participant is not part of (or an old one)
            try:
                self._secagg_step(state, meta)
                if state["deferred"] is not None and self.keys_shared(str(meta.get("round_id"))):
                    deferred, state["deferred"] = state["deferred"], None
                    return deferred
            except SecAggError as exc:
                self.progress.warning(f"round {state['round']}: secure aggregation: {exc}")
                self._secure.pop(str(meta.get("round_id")), None)
            except ValueError as exc:  # ChannelError and malformed fields
                self.progress.warning(f"round {state['round']}: secure aggregation message rejected: {exc}")
                self._secure.pop(str(meta.get("round_id")), None)
        elif msg.kind == m.HE_KEY_REQUEST:
            self._answer_key_request(msg)
        elif msg.kind == m.HE_KEY:
            self._receive_key(msg)
        return None

    def _secagg_step(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
        from fedpact.privacy import secagg

        c: secagg.SecAggClient = state["client"]
        step, r = meta.get("step"), state["round"]
        if step == secagg.SHARE and c.step == secagg.SHARE:
            self._send(m.SECAGG, m.pack(c.share_keys(meta)), r)
        elif step == secagg.MASKED and c.step == secagg.MASKED:
            if state["vector"] is None:
                raise secagg.SecAggError("asked for the masked input before training finished")
            out, y = c.masked_input(meta, state["vector"])
            state["vector"] = None
            self._send(m.SECAGG, m.pack(out, {"y": ring_to_wire(y)}), r)
        elif step == secagg.UNMASK and c.step in (secagg.UNMASK, secagg.DONE):
            self._send(m.SECAGG, m.pack(c.unmask(meta)), r)
        # anything else is a duplicate of a step already answered (at-least-once delivery)

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
        self._send(m.HE_KEYS, m.pack({"request_id": meta.get("request_id")}, tensors))

    def _receive_key(self, msg: Message) -> None:
        from fedpact.privacy import he, sealing

        meta, tensors = msg.body()
        if self.he is not None or self._seal_private is None:
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


class PrivacyRuntimeError(RuntimeError):
    """A privacy-mode step that cannot go on (missing key or state)."""


def decrypted_model_file(data: bytes, he_ctx: Any) -> bytes:
    """A plaintext model file (the same format as an ``open`` model) from the encrypted one on the hub."""
    from fedpact.privacy import he

    info, tensors = m.unpack(data)
    flat = he.decrypt_vector(he_ctx, unpack_ciphertexts(tensors), int(info["length"]))
    weights = he.unflatten_weights(flat, info["layout"])
    extra = {k: v for k, v in tensors.items() if k.startswith("standardization.")}
    metadata = dict(info.get("metadata", {}))
    metadata["decrypted_by_participant"] = True
    return encode_weights({**weights, **extra}, {"fedpact": json.dumps(metadata)})

