"""Sealed boxes: encrypt a secret to a participant's public key so the hub can carry it unread.

Used to hand a task's homomorphic-encryption key (and other secrets) from one participant
to another through the hub, which stores every byte it relays. The construction is ECIES
with vetted primitives from ``cryptography`` only: a fresh X25519 key pair per message,
ECDH with the recipient's static key, HKDF-SHA256 over the shared secret and both public
keys, AES-256-GCM. A fresh ephemeral key makes every message key unique, so the nonce can
be derived rather than sent; the sender stays anonymous to the cryptography, and callers
that need sender authenticity must bind the sender into ``context`` and authenticate the
public keys out of band (the hub's membership records).

``context`` is authenticated but not encrypted. Binding the task, round, sender and
recipient there means a sealed box copied into another task, round or mailbox fails to
open instead of being accepted as fresh (replay and misdirection).

Wire format: ``version (1) || ephemeral public key (32) || AES-GCM ciphertext and tag``.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

VERSION = 1
KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEADER_BYTES = 1 + KEY_BYTES
#: Smallest well-formed sealed box: header and the tag of an empty plaintext.
MIN_SEALED_BYTES = _HEADER_BYTES + _TAG_BYTES
_INFO = b"fedpact sealed box v1"


class SealError(ValueError):
    """A sealed box that cannot be opened: tampered, truncated, wrong key or wrong context.

    The causes are deliberately not told apart, so that an attacker probing with modified
    boxes learns nothing beyond "rejected".
    """


def generate_keypair() -> tuple[bytes, bytes]:
    """A new X25519 key pair as raw bytes: ``(private 32 bytes, public 32 bytes)``."""
    private = X25519PrivateKey.generate()
    return (
        private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
        private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    )


def public_key_of(private: bytes) -> bytes:
    """The raw public key belonging to a raw private key."""
    return _load_private(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def make_context(*parts: str | int | bytes) -> bytes:
    """An unambiguous context string from parts such as task id, round, sender, recipient.

    Each part is length-prefixed, so ``("ab", "c")`` and ``("a", "bc")`` differ; plain
    concatenation would let one context masquerade as another.
    """
    out = bytearray()
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, (str, int, bytes)):
            raise TypeError(f"context parts must be str, int or bytes, got {type(part).__name__}")
        raw = part if isinstance(part, bytes) else str(part).encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def _load_private(private: bytes) -> X25519PrivateKey:
    if not isinstance(private, (bytes, bytearray)) or len(private) != KEY_BYTES:
        raise SealError(f"a private key is {KEY_BYTES} raw bytes, got {_describe(private)}")
    return X25519PrivateKey.from_private_bytes(bytes(private))


def _load_public(public: bytes) -> X25519PublicKey:
    if not isinstance(public, (bytes, bytearray)) or len(public) != KEY_BYTES:
        raise SealError(f"a public key is {KEY_BYTES} raw bytes, got {_describe(public)}")
    return X25519PublicKey.from_public_bytes(bytes(public))


def _describe(value: object) -> str:
    return f"{len(value)} bytes" if isinstance(value, (bytes, bytearray)) else type(value).__name__


def _derive(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> tuple[bytes, bytes]:
    """AES key and nonce for one message; both public keys enter so a key is tied to its pair."""
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES + _NONCE_BYTES,
        salt=None,
        info=_INFO + ephemeral_public + recipient_public,
    ).derive(shared)
    return okm[:KEY_BYTES], okm[KEY_BYTES:]


def _exchange(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    try:
        return private.exchange(public)
    except ValueError as exc:  # a low-order public key yields an all-zero secret, which cryptography refuses
        raise SealError("the public key is not a valid X25519 key (low-order point)") from exc


def _check_bytes(name: str, value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def seal(recipient_public: bytes, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt ``plaintext`` so that only the holder of the matching private key can read it.

    ``context`` must be given again, byte for byte, to open the box.
    """
    data = _check_bytes("plaintext", plaintext)
    ctx = _check_bytes("context", context)
    recipient = _load_public(recipient_public)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key, nonce = _derive(_exchange(ephemeral, recipient), ephemeral_public, bytes(recipient_public))
    header = bytes([VERSION]) + ephemeral_public
    return header + AESGCM(key).encrypt(nonce, data, header + ctx)


def open_sealed(recipient_private: bytes, sealed: bytes, context: bytes) -> bytes:
    """Decrypt a sealed box; raises :class:`SealError` if it is not authentic for this key and context."""
    box = _check_bytes("sealed", sealed)
    ctx = _check_bytes("context", context)
    private = _load_private(recipient_private)
    if len(box) < MIN_SEALED_BYTES:
        raise SealError(f"sealed box too short: {len(box)} bytes, at least {MIN_SEALED_BYTES} expected")
    if box[0] != VERSION:
        raise SealError(f"unknown sealed-box version {box[0]} (this build reads version {VERSION})")
    header, ciphertext = box[:_HEADER_BYTES], box[_HEADER_BYTES:]
    ephemeral_public = header[1:]
    recipient_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key, nonce = _derive(_exchange(private, _load_public(ephemeral_public)), ephemeral_public, recipient_public)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, header + ctx)
    except InvalidTag:
        raise SealError(
            "sealed box rejected: it was modified, is meant for another key, or was sealed for a different context"
        ) from None
