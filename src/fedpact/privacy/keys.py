"""X25519 key agreement and HKDF key derivation for secure aggregation.

Each participant makes two fresh X25519 key pairs per round (Bonawitz et al. 2017, round 0):
one whose agreements seed the pairwise *masks* (``s`` keys) and one whose agreements key the
*channel* that carries Shamir shares end to end through the aggregator (``c`` keys). Keys
are never reused across rounds, so a key leaked in one round says nothing about another.

Every derived key goes through HKDF-SHA256 with an ``info`` string that binds its purpose,
the task, the round id and the two participants in canonical (sorted) order, so the two
ends of a pair derive the same key, and no key can be confused with one of another
purpose, task, round or pair.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32
_MASK_PURPOSE = b"fedpact/secagg/v1/pairwise-mask-seed"
_CHANNEL_PURPOSE = b"fedpact/secagg/v1/share-channel-key"


class KeyAgreementError(ValueError):
    """A public or private key that is not a valid X25519 key."""


def generate_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def load_public(data: bytes) -> X25519PublicKey:
    if len(data) != PUBLIC_KEY_BYTES:
        raise KeyAgreementError(f"an X25519 public key is {PUBLIC_KEY_BYTES} bytes, got {len(data)}")
    return X25519PublicKey.from_public_bytes(data)


def load_private(data: bytes) -> X25519PrivateKey:
    if len(data) != PRIVATE_KEY_BYTES:
        raise KeyAgreementError(f"an X25519 private key is {PRIVATE_KEY_BYTES} bytes, got {len(data)}")
    return X25519PrivateKey.from_private_bytes(data)


def _field(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return len(raw).to_bytes(4, "big") + raw


def context(purpose: bytes, task: str, round_id: str, a: str, b: str) -> bytes:
    """Length-prefixed (unambiguous) HKDF info: purpose, task, round, the pair in sorted order."""
    lo, hi = sorted((a, b))
    return b"".join(_field(x) for x in (purpose, task, round_id, lo, hi))


def _agree(own: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        shared = own.exchange(load_public(peer_public))
    except ValueError as exc:  # low-order point: the all-zero shared secret is refused
        raise KeyAgreementError(f"key agreement failed: {exc}") from exc
    return shared


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def mask_seed(own: X25519PrivateKey, peer_public: bytes, *, task: str, round_id: str, me: str, peer: str) -> bytes:
    """The 32-byte seed of the pairwise mask between ``me`` and ``peer`` (same on both ends)."""
    return _hkdf(_agree(own, peer_public), context(_MASK_PURPOSE, task, round_id, me, peer))


def channel_key(own: X25519PrivateKey, peer_public: bytes, *, task: str, round_id: str, me: str, peer: str) -> bytes:
    """The 32-byte AES-GCM key of the share channel between ``me`` and ``peer``."""
    return _hkdf(_agree(own, peer_public), context(_CHANNEL_PURPOSE, task, round_id, me, peer))
