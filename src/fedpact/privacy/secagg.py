"""Secure aggregation (Bonawitz et al., CCS 2017; SecAgg+, Bell et al., CCS 2020) as two state machines.

The server learns the sum of the participants' vectors in Z_{2^bits} and nothing else,
even when participants drop out mid-round, as long as at every step at least
``threshold`` participants (and, with the sparse graph, that share of every
neighbourhood) are still there. Nothing here knows about HTTP or the hub: the client and
server classes consume and produce JSON-able dicts (and one vector), and the runtime
carries them as opaque messages. Every message carries an envelope (protocol, task, round
id, step, sender) checked on receipt, so a message replayed from another round or step, or
claiming a sender other than the one the transport authenticated, is rejected.

The four steps, for participant u with neighbours N(u) (everyone else in the complete
graph, k = O(log n) others in SecAgg+), and holders H(u) = N(u) + {u}:

0. **AdvertiseKeys**: u makes two fresh X25519 key pairs, (c_pk, c_sk) for the share
   channel and (s_pk, s_sk) for masks, and sends both public keys. The server forwards
   the roster of U1, those who advertised, to everyone (abort if |U1| < t).
1. **ShareKeys**: u draws a 32-byte self-mask seed b_u and Shamir-shares s_sk_u and b_u
   among H(u) with threshold t_u; the share for v is encrypted under AES-GCM with the key
   HKDF(X25519(c_sk_u, c_pk_v), task, round, u, v) and associated data binding task, round,
   step, sender and recipient. The server forwards each ciphertext to its recipient and
   tells everyone U2, those who sent shares (abort if |U2| < t).
2. **MaskedInputCollection**: u decrypts the shares it holds (rejecting any tampered one),
   derives s_uv = HKDF(X25519(s_sk_u, s_pk_v), ...) for each neighbour v in U2 and sends
   ``y_u = x_u + PRG(b_u) + sum_{v in N(u) cap U2, v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)``
   (mod 2^bits). The server adds up the y_u it gets from U3 (abort if |U3| < t).
3. **Unmasking**: the server sends U3. Each u in U3 reveals, for each v whose share it
   holds, the share of b_v if v is in U3 and the share of s_sk_v if v dropped (in U2, not
   U3) -- never both for the same v, and it answers only one unmasking request per round,
   so the server can never hold both secrets of a participant. With t_v shares per secret
   the server rebuilds each b_v (survivors) and s_sk_v (dropped: checked against s_pk_v),
   removes the self-masks and the dropped participants' pairwise masks, and is left with
   ``sum_{u in U3} x_u``. Participants who drop after sending y_u (in U3 but silent in
   step 3) are still counted: their b_u comes from the others' shares.

Threat model: honest-but-curious server (it follows the protocol but looks at everything
it receives), any number of dropouts up to n - t, and fewer than t colluding participants.
The consistency-check round and signatures of the actively secure variant are not
implemented; docs/privacy.md says what that means.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedpact.common.errors import FedpactError
from fedpact.privacy import channel, keys, shamir
from fedpact.privacy.graph import Graph, holder_threshold, neighbour_graph
from fedpact.privacy.prg import add_mask
from fedpact.privacy.quantize import ring_dtype

PROTOCOL = channel.PROTOCOL
SERVER = "aggregator"
ADVERTISE = "advertise_keys"
SHARE = "share_keys"
MASKED = "masked_input"
UNMASK = "unmask"
DONE = "done"
STEPS = (ADVERTISE, SHARE, MASKED, UNMASK)
_SHARE_PAIR_BYTES = 2 * shamir.SHARE_BYTES


class SecAggError(FedpactError):
    """Base class of secure-aggregation errors."""


class MessageRejected(SecAggError):
    """A message that is malformed, tampered with, replayed, out of step or from the wrong sender."""


class RoundAborted(SecAggError):
    """The round cannot complete without weakening the guarantee (e.g. below the threshold)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MessageRejected(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise MessageRejected(f"{what} is not valid base64: {exc}") from None


@dataclass(frozen=True)
class SecAggParams:
    """What every party of one secure-aggregation round agrees on before it starts.

    ``participants``: the round's selected participants (any order; kept sorted).
    ``threshold``: t, the fewest participants that may remain at any step; with the sparse
    graph, each secret needs ceil(t * |H(u)| / n) of its holders' shares.
    ``vector_length``: length of every input vector (quantised update plus weight).
    """

    task: str
    round_id: str
    participants: tuple[str, ...]
    threshold: int
    vector_length: int
    bits: int = 32
    sparse: bool = False
    degree: int | None = None
    graph: Graph = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(sorted(self.participants))
        if len(set(names)) != len(names):
            raise SecAggError("participant names must be distinct")
        if len(names) < 2:
            raise SecAggError("secure aggregation needs at least 2 participants")
        if not 1 <= self.threshold <= len(names):
            raise SecAggError(f"threshold must be between 1 and {len(names)} participants, got {self.threshold}")
        if self.vector_length < 1:
            raise SecAggError("vector_length must be >= 1")
        ring_dtype(self.bits)
        object.__setattr__(self, "participants", names)
        seed = hashlib.sha256(b"fedpact/secagg/v1/graph\x00" + self.round_id.encode()).digest()
        object.__setattr__(self, "graph", neighbour_graph(names, sparse=self.sparse, degree=self.degree, seed=seed))

    @property
    def n(self) -> int:
        return len(self.participants)

    def index(self, name: str) -> int:
        """The Shamir x-coordinate of ``name`` (1-based position in the sorted roster)."""
        return self.participants.index(name) + 1

    def neighbours(self, name: str) -> frozenset[str]:
        return self.graph[name]

    def holders(self, name: str) -> list[str]:
        return sorted(self.graph[name] | {name})

    def holder_threshold(self, name: str) -> int:
        return holder_threshold(self.threshold, self.n, len(self.holders(name)))

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "round_id": self.round_id, "participants": list(self.participants),
                "threshold": self.threshold, "vector_length": self.vector_length, "bits": self.bits,
                "sparse": self.sparse, "degree": self.degree}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SecAggParams:
        try:
            return cls(task=str(d["task"]), round_id=str(d["round_id"]), participants=tuple(d["participants"]),
                       threshold=int(d["threshold"]), vector_length=int(d["vector_length"]), bits=int(d["bits"]),
                       sparse=bool(d["sparse"]), degree=None if d.get("degree") is None else int(d["degree"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SecAggError(f"malformed secure-aggregation parameters: {exc}") from exc


def _envelope(params: SecAggParams, step: str, sender: str) -> dict[str, Any]:
    return {"protocol": PROTOCOL, "task": params.task, "round_id": params.round_id, "step": step, "sender": sender}


def check_envelope(params: SecAggParams, msg: Mapping[str, Any], step: str, sender: str) -> None:
    """Reject a message that does not belong to this task, round and step, or names another sender."""
    if not isinstance(msg, Mapping):
        raise MessageRejected("a secure-aggregation message must be a JSON object")
    if msg.get("protocol") != PROTOCOL:
        raise MessageRejected(f"not a {PROTOCOL} message (protocol {msg.get('protocol')!r})")
    if msg.get("task") != params.task:
        raise MessageRejected(f"message of task {msg.get('task')!r} replayed into task {params.task!r}")
    if msg.get("round_id") != params.round_id:
        raise MessageRejected(
            f"message from round {msg.get('round_id')!r} replayed into round {params.round_id!r}: rejected"
        )
    if msg.get("step") != step:
        raise MessageRejected(
            f"message for step {msg.get('step')!r} received during step {step!r} (replayed or out of order): rejected"
        )
    if msg.get("sender") != sender:
        raise MessageRejected(f"message claims to come from {msg.get('sender')!r} but was sent by {sender!r}")


def _names(value: Any, what: str, allowed: Sequence[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MessageRejected(f"{what} must be a list of participant names")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise MessageRejected(f"{what} names {', '.join(unknown)}, who are not in this round's roster")
    if len(set(value)) != len(value):
        raise MessageRejected(f"{what} repeats a name")
    return sorted(value)


def _sign(me: str, peer: str) -> int:
    """+1 if the pairwise mask of (me, peer) is added by me, -1 if subtracted (v > u adds)."""
    return 1 if peer > me else -1


# ------------------------------------------------------------------------------------------
class SecAggClient:
    """One participant's side of one round. Call the four steps in order."""

    def __init__(self, params: SecAggParams, name: str) -> None:
        if name not in params.participants:
            raise SecAggError(f"{name!r} is not a participant of this round")
        self.params = params
        self.name = name
        self.step = ADVERTISE
        self._c_sk: X25519PrivateKey | None = None
        self._s_sk: X25519PrivateKey | None = None
        self._b: bytes | None = None
        self.roster: dict[str, tuple[bytes, bytes]] = {}
        self.u2: list[str] = []
        #: shares this participant holds: owner -> (share of s_sk, share of b)
        self._held: dict[str, tuple[bytes, bytes]] = {}
        self.revealed: dict[str, str] = {}  # owner -> "b" | "sk": what was disclosed, once
        self._channel_keys: dict[str, bytes] = {}

    def _channel_key(self, peer: str) -> bytes:
        key = self._channel_keys.get(peer)
        if key is None:
            assert self._c_sk is not None
            p = self.params
            key = keys.channel_key(self._c_sk, self.roster[peer][0], task=p.task, round_id=p.round_id,
                                   me=self.name, peer=peer)
            self._channel_keys[peer] = key
        return key

    def _expect(self, step: str) -> None:
        if self.step != step:
            raise SecAggError(f"{self.name}: step {step!r} requested while at step {self.step!r}")

    def _need(self, count: int, what: str) -> None:
        if count < self.params.threshold:
            raise RoundAborted(
                f"{what}: {count} participant(s) left, fewer than the threshold of {self.params.threshold}; "
                "this participant stops here so that its input cannot be unmasked"
            )

    # step 0
    def advertise_keys(self) -> dict[str, Any]:
        self._expect(ADVERTISE)
        self._c_sk, self._s_sk = keys.generate_private_key(), keys.generate_private_key()
        msg = _envelope(self.params, ADVERTISE, self.name)
        msg.update(c_pk=_b64(keys.public_bytes(self._c_sk)), s_pk=_b64(keys.public_bytes(self._s_sk)))
        self.step = SHARE
        return msg

    # step 1
    def share_keys(self, roster_msg: Mapping[str, Any]) -> dict[str, Any]:
        self._expect(SHARE)
        p = self.params
        check_envelope(p, roster_msg, SHARE, SERVER)
        raw = roster_msg.get("keys")
        if not isinstance(raw, Mapping):
            raise MessageRejected("the roster must map participant names to their public keys")
        names = _names(list(raw), "the roster", p.participants)
        roster: dict[str, tuple[bytes, bytes]] = {}
        for v in names:
            entry = raw[v]
            if not isinstance(entry, Mapping):
                raise MessageRejected(f"roster entry of {v!r} is not an object")
            c_pk, s_pk = _unb64(entry.get("c_pk"), f"{v}'s c_pk"), _unb64(entry.get("s_pk"), f"{v}'s s_pk")
            if len(c_pk) != keys.PUBLIC_KEY_BYTES or len(s_pk) != keys.PUBLIC_KEY_BYTES:
                raise MessageRejected(f"public keys of {v!r} are not 32-byte X25519 keys")
            roster[v] = (c_pk, s_pk)
        assert self._c_sk is not None and self._s_sk is not None
        mine = (keys.public_bytes(self._c_sk), keys.public_bytes(self._s_sk))
        if roster.get(self.name) != mine:
            raise MessageRejected("the roster does not carry this participant's own public keys unchanged")
        all_keys = [k for pair in roster.values() for k in pair]
        if len(set(all_keys)) != len(all_keys):
            raise MessageRejected("the roster repeats a public key: refusing to share secrets")
        self._need(len(roster), "after AdvertiseKeys")
        holders = [v for v in p.holders(self.name) if v in roster]
        t_me = p.holder_threshold(self.name)
        if len(holders) < t_me:
            raise RoundAborted(
                f"only {len(holders)} of {self.name}'s neighbourhood advertised keys, {t_me} needed to hold its shares"
            )
        self.roster = roster
        self._b = os.urandom(shamir.SECRET_BYTES)
        xs = [p.index(v) for v in holders]
        sk_shares = shamir.split(keys.private_bytes(self._s_sk), t_me, xs)
        b_shares = shamir.split(self._b, t_me, xs)
        out: dict[str, str] = {}
        for v, sk_sh, b_sh in zip(holders, sk_shares, b_shares):
            if v == self.name:
                self._held[v] = (sk_sh.to_bytes(), b_sh.to_bytes())
                continue
            ct = channel.encrypt(self._channel_key(v), sk_sh.to_bytes() + b_sh.to_bytes(), task=p.task, round_id=p.round_id,
                                 step=SHARE, sender=self.name, recipient=v)
            out[v] = _b64(ct)
        msg = _envelope(p, SHARE, self.name)
        msg["ciphertexts"] = out
        self.step = MASKED
        return msg

    # step 2
    def masked_input(self, forward_msg: Mapping[str, Any], x: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        self._expect(MASKED)
        p = self.params
        check_envelope(p, forward_msg, MASKED, SERVER)
        u2 = _names(forward_msg.get("survivors"), "the ShareKeys survivors", list(self.roster))
        if self.name not in u2:
            raise MessageRejected("the ShareKeys survivors leave out this participant, who did send its shares")
        self._need(len(u2), "after ShareKeys")
        cts = forward_msg.get("ciphertexts")
        if not isinstance(cts, Mapping):
            raise MessageRejected("the forwarded shares must map senders to ciphertexts")
        expected = {v for v in u2 if v != self.name and self.name in p.holders(v)}
        if set(cts) != expected:
            missing, extra = sorted(expected - set(cts)), sorted(set(cts) - expected)
            raise MessageRejected(f"forwarded shares do not match the survivors (missing {missing}, unexpected {extra})")
        assert self._c_sk is not None and self._s_sk is not None and self._b is not None
        for v in sorted(expected):
            plain = channel.decrypt(self._channel_key(v), _unb64(cts[v], f"ciphertext from {v}"), task=p.task, round_id=p.round_id,
                                    step=SHARE, sender=v, recipient=self.name)
            if len(plain) != _SHARE_PAIR_BYTES:
                raise MessageRejected(f"the decrypted shares from {v!r} have the wrong size")
            self._held[v] = (plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES :])
        x = np.asarray(x)
        dtype = ring_dtype(p.bits)
        if x.dtype != dtype or x.shape != (p.vector_length,):
            raise SecAggError(f"the input must be a {dtype} vector of length {p.vector_length}, got {x.dtype}{x.shape}")
        y = x.copy()
        scratch = np.empty_like(y)
        add_mask(y, self._b, 1, scratch=scratch)
        for v in sorted(self.params.neighbours(self.name) & set(u2)):
            seed = keys.mask_seed(self._s_sk, self.roster[v][1], task=p.task, round_id=p.round_id, me=self.name, peer=v)
            add_mask(y, seed, _sign(self.name, v), scratch=scratch)
        self.u2 = u2
        self.step = UNMASK
        return _envelope(p, MASKED, self.name), y

    # step 3
    def unmask(self, request: Mapping[str, Any]) -> dict[str, Any]:
        if self.step == DONE:
            raise MessageRejected(
                f"{self.name} already answered this round's unmasking request; a second one could make it reveal "
                "both secrets of a participant, so it is refused"
            )
        self._expect(UNMASK)
        p = self.params
        check_envelope(p, request, UNMASK, SERVER)
        u3 = _names(request.get("survivors"), "the masked-input survivors", self.u2)
        if self.name not in u3:
            raise MessageRejected("the masked-input survivors leave out this participant, who did send its input")
        self._need(len(u3), "after MaskedInputCollection")
        b_out: dict[str, str] = {}
        sk_out: dict[str, str] = {}
        for owner, (sk_sh, b_sh) in sorted(self._held.items()):
            if owner not in self.u2:
                continue  # never masked with: nothing of it needs removing
            kind = "b" if owner in u3 else "sk"
            if self.revealed.get(owner, kind) != kind:  # cannot happen with one request; kept as a hard rule
                raise SecAggError(f"refusing to reveal both secrets of {owner!r}")
            self.revealed[owner] = kind
            (b_out if kind == "b" else sk_out)[owner] = _b64(b_sh if kind == "b" else sk_sh)
        self.step = DONE
        msg = _envelope(p, UNMASK, self.name)
        msg.update(b_shares=b_out, sk_shares=sk_out)
        return msg


# ------------------------------------------------------------------------------------------
class SecAggServer:
    """The aggregator's side of one round: relays keys and shares, sums masked inputs, unmasks the sum.

    ``receive`` raises :class:`MessageRejected` for a message it ignores; the step methods
    (``roster``, ``forward_shares``, ``unmask_request``, ``finish``) close a step and raise
    :class:`RoundAborted` when too few participants are left.
    """

    def __init__(self, params: SecAggParams) -> None:
        self.params = params
        self.step = ADVERTISE
        self.keys: dict[str, tuple[bytes, bytes]] = {}
        self.ciphertexts: dict[str, dict[str, str]] = {}
        self.u1: list[str] = []
        self.u2: list[str] = []
        self.u3: list[str] = []
        self.responders: list[str] = []
        self._sum = np.zeros(params.vector_length, dtype=ring_dtype(params.bits))
        self._masked_from: set[str] = set()
        self._unmask: dict[str, tuple[dict[str, bytes], dict[str, bytes]]] = {}

    def _abort(self, count: int, what: str) -> None:
        if count < self.params.threshold:
            self.step = "aborted"
            raise RoundAborted(
                f"secure aggregation stopped {what}: only {count} of {self.params.n} participants remain, below the "
                f"threshold of {self.params.threshold}; the masked inputs received cannot be unmasked, so nothing "
                "about any participant's update was revealed"
            )

    @property
    def received(self) -> set[str]:
        """Who has sent its message for the current step."""
        by_step: dict[str, Iterable[str]] = {ADVERTISE: self.keys, SHARE: self.ciphertexts, MASKED: self._masked_from,
                                             UNMASK: self._unmask}
        return set(by_step.get(self.step, ()))

    @property
    def expected(self) -> set[str]:
        """Who may still send a message for the current step (the survivors of the previous one)."""
        return set({ADVERTISE: self.params.participants, SHARE: self.u1, MASKED: self.u2,
                    UNMASK: self.u3}.get(self.step, ()))

    def receive(self, sender: str, msg: Mapping[str, Any], vector: np.ndarray | None = None) -> bool:
        """Take one participant message; True if it was new, False for a duplicate (at-least-once delivery)."""
        p = self.params
        if sender not in p.participants:
            raise MessageRejected(f"{sender!r} is not a participant of this round")
        if self.step not in STEPS:
            raise MessageRejected(f"the round is {self.step}; no more messages are taken")
        check_envelope(p, msg, self.step, sender)
        if self.step == ADVERTISE:
            if sender in self.keys:
                return False
            c_pk, s_pk = _unb64(msg.get("c_pk"), "c_pk"), _unb64(msg.get("s_pk"), "s_pk")
            if len(c_pk) != keys.PUBLIC_KEY_BYTES or len(s_pk) != keys.PUBLIC_KEY_BYTES:
                raise MessageRejected(f"public keys of {sender!r} are not 32-byte X25519 keys")
            self.keys[sender] = (c_pk, s_pk)
        elif self.step == SHARE:
            if sender not in self.u1:
                raise MessageRejected(f"{sender!r} did not advertise keys in this round")
            if sender in self.ciphertexts:
                return False
            cts = msg.get("ciphertexts")
            expected = {v for v in p.holders(sender) if v in self.u1 and v != sender}
            if not isinstance(cts, Mapping) or set(cts) != expected:
                raise MessageRejected(f"{sender!r} must send exactly one share ciphertext to each of {sorted(expected)}")
            for v, ct in cts.items():
                _unb64(ct, f"ciphertext from {sender} to {v}")
            self.ciphertexts[sender] = dict(cts)
        elif self.step == MASKED:
            if sender not in self.u2:
                raise MessageRejected(f"{sender!r} did not send shares in this round")
            if sender in self._masked_from:
                return False
            y = np.asarray(vector) if vector is not None else None
            dtype = ring_dtype(p.bits)
            if y is None or y.dtype != dtype or y.shape != (p.vector_length,):
                got = "nothing" if y is None else f"{y.dtype}{y.shape}"
                raise MessageRejected(f"the masked input of {sender!r} must be a {dtype} vector of length "
                                      f"{p.vector_length}, got {got}")
            np.add(self._sum, y, out=self._sum)
            self._masked_from.add(sender)
        elif self.step == UNMASK:
            if sender not in self.u3:
                raise MessageRejected(f"{sender!r} did not send a masked input in this round")
            if sender in self._unmask:
                return False
            b_raw, sk_raw = msg.get("b_shares"), msg.get("sk_shares")
            if not isinstance(b_raw, Mapping) or not isinstance(sk_raw, Mapping):
                raise MessageRejected("an unmasking reply must carry b_shares and sk_shares objects")
            if set(b_raw) & set(sk_raw):
                raise MessageRejected(f"{sender!r} revealed both secrets of {sorted(set(b_raw) & set(sk_raw))}")
            if not set(b_raw) <= set(self.u3) or not set(sk_raw) <= set(self.u2) - set(self.u3):
                raise MessageRejected(f"{sender!r} revealed shares of the wrong participants")
            b = {o: _unb64(v, f"share of {o}") for o, v in b_raw.items()}
            sk = {o: _unb64(v, f"share of {o}") for o, v in sk_raw.items()}
            self._unmask[sender] = (b, sk)
        else:
            raise MessageRejected(f"the round is {self.step}; no more messages are taken")
        return True

    def roster(self) -> dict[str, Any]:
        """Close AdvertiseKeys; the message to broadcast to U1."""
        if self.step != ADVERTISE:
            raise SecAggError(f"roster() called at step {self.step!r}")
        self.u1 = sorted(self.keys)
        self._abort(len(self.u1), "after AdvertiseKeys")
        msg = _envelope(self.params, SHARE, SERVER)
        msg["keys"] = {v: {"c_pk": _b64(c), "s_pk": _b64(s)} for v, (c, s) in sorted(self.keys.items())}
        self.step = SHARE
        return msg

    def forward_shares(self) -> dict[str, dict[str, Any]]:
        """Close ShareKeys; one message per participant in U2 with the ciphertexts addressed to it."""
        if self.step != SHARE:
            raise SecAggError(f"forward_shares() called at step {self.step!r}")
        self.u2 = sorted(self.ciphertexts)
        self._abort(len(self.u2), "after ShareKeys")
        out = {}
        for v in self.u2:
            msg = _envelope(self.params, MASKED, SERVER)
            msg["survivors"] = list(self.u2)
            msg["ciphertexts"] = {u: self.ciphertexts[u][v] for u in self.u2 if v in self.ciphertexts[u]}
            out[v] = msg
        self.step = MASKED
        return out

    def unmask_request(self) -> dict[str, Any]:
        """Close MaskedInputCollection; the message to broadcast to U3."""
        if self.step != MASKED:
            raise SecAggError(f"unmask_request() called at step {self.step!r}")
        self.u3 = sorted(self._masked_from)
        self._abort(len(self.u3), "after MaskedInputCollection")
        msg = _envelope(self.params, UNMASK, SERVER)
        msg["survivors"] = list(self.u3)
        self.step = UNMASK
        return msg

    def finish(self) -> np.ndarray:
        """Close Unmasking: reconstruct the masks' secrets and return ``sum_{u in U3} x_u`` (mod 2^bits)."""
        if self.step != UNMASK:
            raise SecAggError(f"finish() called at step {self.step!r}")
        p = self.params
        self.responders = sorted(self._unmask)
        self._abort(len(self.responders), "during Unmasking")
        dropped = [v for v in self.u2 if v not in self.u3]
        problems = []
        b_secrets: dict[str, bytes] = {}
        sk_secrets: dict[str, X25519PrivateKey] = {}
        for owner, kind in [(u, "b") for u in self.u3] + [(v, "sk") for v in dropped]:
            if kind == "sk" and not (p.neighbours(owner) & set(self.u3)):
                continue  # no survivor masked with it
            shares = []
            for holder in p.holders(owner):
                reply = self._unmask.get(holder)
                if reply is None:
                    continue
                data = (reply[0] if kind == "b" else reply[1]).get(owner)
                if data is None:
                    continue
                try:
                    shares.append(shamir.Share.from_bytes(p.index(holder), data))
                except shamir.ShamirError as exc:
                    problems.append(f"the share of {owner}'s {'self-mask seed' if kind == 'b' else 'mask key'} "
                                    f"from {holder} is malformed: {exc}")
            need = p.holder_threshold(owner)
            what = "self-mask seed" if kind == "b" else "mask key"
            if len(shares) < need:
                problems.append(f"{owner}'s {what} has {len(shares)} share(s) from its neighbourhood, {need} needed")
                continue
            try:
                # threshold shares rebuild the secret; one more, where there is one, checks them
                # (shares beyond that are not used, so they cannot corrupt the result)
                secret = shamir.combine(shares[: need + 1], need)
            except shamir.ShamirError as exc:
                problems.append(f"{owner}'s {what} could not be reconstructed: {exc}")
                continue
            if kind == "b":
                b_secrets[owner] = secret
            else:
                sk = keys.load_private(secret)
                if keys.public_bytes(sk) != self.keys[owner][1]:
                    problems.append(f"the reconstructed mask key of {owner} does not match its public key: "
                                    "a share was corrupted")
                    continue
                sk_secrets[owner] = sk
        if problems:
            self.step = "aborted"
            raise RoundAborted("secure aggregation could not unmask the sum: " + "; ".join(problems))
        total = self._sum.copy()
        scratch = np.empty_like(total)
        for u in self.u3:
            add_mask(total, b_secrets[u], -1, scratch=scratch)
        for v, sk in sk_secrets.items():
            for w in sorted(p.neighbours(v) & set(self.u3)):
                seed = keys.mask_seed(sk, self.keys[w][1], task=p.task, round_id=p.round_id, me=v, peer=w)
                # w added _sign(w, v) * PRG(s_wv); take it out
                add_mask(total, seed, -_sign(w, v), scratch=scratch)
        self.step = DONE
        return total
