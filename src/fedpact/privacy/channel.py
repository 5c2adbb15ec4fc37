"""The end-to-end channel that carries Shamir shares between participants via the aggregator.

AES-256-GCM (``cryptography``) under the pairwise channel key of :mod:`fedpact.privacy.keys`,
with a fresh 96-bit random nonce per message. The associated data binds the ciphertext to
the protocol, task, round id, protocol step, sender and recipient: the aggregator (or the
hub) can drop a ciphertext but cannot read it, change it, redirect it to another
participant, or replay it into another round or step — each of those fails authentication
and is rejected with :class:`ChannelError`.
"""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
PROTOCOL = "fedpact-secagg/1"


class ChannelError(ValueError):
    """A ciphertext failed authentication or is malformed."""


def associated_data(*, task: str, round_id: str, step: str, sender: str, recipient: str) -> bytes:
    return json.dumps(
        {"protocol": PROTOCOL, "task": task, "round_id": round_id, "step": step, "sender": sender,
         "recipient": recipient},
        sort_keys=True, separators=(",", ":"),
    ).encode("utf-8")


def encrypt(key: bytes, plaintext: bytes, *, task: str, round_id: str, step: str, sender: str, recipient: str) -> bytes:
    """``nonce || AES-GCM(key, nonce, plaintext, ad)``."""
    nonce = os.urandom(NONCE_BYTES)
    ad = associated_data(task=task, round_id=round_id, step=step, sender=sender, recipient=recipient)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, ad)


def decrypt(key: bytes, ciphertext: bytes, *, task: str, round_id: str, step: str, sender: str, recipient: str) -> bytes:
    if len(ciphertext) < NONCE_BYTES + 16:
        raise ChannelError(f"ciphertext from {sender!r} is too short ({len(ciphertext)} bytes) to be genuine")
    ad = associated_data(task=task, round_id=round_id, step=step, sender=sender, recipient=recipient)
    try:
        return AESGCM(key).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], ad)
    except InvalidTag:
        raise ChannelError(
            f"the share ciphertext from {sender!r} to {recipient!r} failed authentication (round {round_id}, "
            f"step {step!r}): it was tampered with, replayed from another round or step, or not made for "
            "this recipient; it is rejected"
        ) from None
