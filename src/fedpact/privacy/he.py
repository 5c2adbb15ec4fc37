"""Homomorphic encryption of model updates (CKKS, through TenSEAL / Microsoft SEAL).

In the ``encrypted`` mode the participants share one CKKS key; the aggregator holds only
the public part, so it can add ciphertexts but never read an update or the model. CKKS
works on vectors of real numbers with a small, bounded approximation error, which suits
model weights; an update is flattened into one vector, cut into chunks of the slot count
(``poly_modulus_degree / 2``) and every chunk travels as a serialised SEAL ciphertext.

Cost: a chunk of 4096 slots is about 330 KB with the default parameters, roughly 80 bytes
on the wire per float32 weight (20x the plaintext), and encrypting is the slow step.
Ciphertexts and contexts are parsed by SEAL's bounded deserialiser, never unpickled, but
SEAL cannot tell whether a well-formed ciphertext was made under this task's key: one made
under another key decrypts to noise, so updates must still come from authenticated members.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedpact.common.extras import MissingExtra

try:
    import tenseal as ts
except ImportError as exc:  # the base install has no TenSEAL: say which extra brings it
    raise MissingExtra("he", "privacy mode 'encrypted'") from exc

Layout = list[dict[str, Any]]

_DEGREES = (4096, 8192, 16384, 32768)


class HEError(ValueError):
    """A malformed ciphertext or context, mismatched vectors, or unusable parameters."""


class HEKeyError(HEError):
    """An operation needs the secret key and this context only holds the public one."""


class HEContext:
    """A CKKS context: parameters, public key and, for participants, the secret key.

    Only relinearisation-free operations (additions, multiplication by a plain scalar) are
    used, so no Galois or relinearisation keys are generated or shipped; that keeps the
    public context under 0.5 MB at the default parameters.
    """

    def __init__(self, context: ts.Context) -> None:
        self._ctx = context

    @classmethod
    def create(
        cls,
        poly_modulus_degree: int = 8192,
        scale_bits: int = 40,
        coeff_mod_bit_sizes: Sequence[int] | None = None,
    ) -> HEContext:
        """A fresh key. The defaults give 128-bit security (SEAL enforces the bound) and
        about 1e-8 absolute error per value for values of magnitude ~1.

        ``coeff_mod_bit_sizes`` defaults to ``[60, scale_bits, scale_bits, 60]``: the outer
        primes keep precision at decryption, each inner prime allows one
        :func:`scale_encrypted`.
        """
        if poly_modulus_degree not in _DEGREES:
            raise HEError(f"poly_modulus_degree must be one of {_DEGREES}, got {poly_modulus_degree!r}")
        if not 20 <= scale_bits <= 60:
            raise HEError(f"scale_bits must be between 20 and 60, got {scale_bits!r}")
        sizes = list(coeff_mod_bit_sizes) if coeff_mod_bit_sizes is not None else [60, scale_bits, scale_bits, 60]
        try:
            ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree, coeff_mod_bit_sizes=sizes)
        except ValueError as exc:
            raise HEError(
                f"SEAL refused poly_modulus_degree={poly_modulus_degree}, coeff_mod_bit_sizes={sizes}: {exc} "
                "(the total bit count must stay within SEAL's 128-bit security bound for the degree)"
            ) from exc
        ctx.global_scale = 2.0**scale_bits
        return cls(ctx)

    @classmethod
    def from_bytes(cls, data: bytes) -> HEContext:
        """Parse a context made by :meth:`serialize`."""
        try:
            return cls(ts.context_from(bytes(data)))
        except (ValueError, TypeError) as exc:
            raise HEError(f"not a serialised CKKS context: {exc}") from exc

    def serialize(self, secret: bool) -> bytes:
        """The context as bytes, with the secret key only if ``secret`` is true.

        Bytes with the secret key must only ever travel sealed to a participant
        (:mod:`fedpact.privacy.sealing`).
        """
        if secret and not self.has_secret_key:
            raise HEKeyError("this context holds no secret key to serialise; only the key's creator or a participant has it")
        return bytes(
            self._ctx.serialize(
                save_public_key=True, save_secret_key=bool(secret), save_galois_keys=False, save_relin_keys=False
            )
        )

    def public(self) -> HEContext:
        """A copy without the secret key, which is what the aggregator gets."""
        return HEContext.from_bytes(self.serialize(secret=False))

    @property
    def has_secret_key(self) -> bool:
        return bool(self._ctx.is_private())

    @property
    def slot_count(self) -> int:
        """Values per ciphertext (half the polynomial degree in CKKS)."""
        return int(self._ctx.seal_context().data.key_context_data().parms().poly_modulus_degree()) // 2


def flatten_weights(weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Layout]:
    """Concatenate named float arrays into one float64 vector, in sorted name order.

    The order is by name rather than by the mapping's order so that participants that
    built their dictionaries differently still line up slot by slot. The layout is
    JSON-serialisable (name, shape, dtype per tensor) so it can travel in message metadata.
    """
    layout: Layout = []
    parts: list[np.ndarray] = []
    for name in sorted(weights):
        arr = np.asarray(weights[name])
        if arr.dtype.kind != "f":
            raise HEError(f"tensor {name!r} has dtype {arr.dtype}; only floating-point tensors can be encrypted with CKKS")
        layout.append({"name": name, "shape": list(arr.shape), "dtype": arr.dtype.name})
        parts.append(arr.reshape(-1).astype(np.float64, copy=False))
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    return flat, layout


def unflatten_weights(flat: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Inverse of :func:`flatten_weights`, casting each tensor back to its recorded dtype."""
    vec = np.asarray(flat).reshape(-1)
    expected = sum(math.prod(int(d) for d in entry["shape"]) for entry in layout)
    if vec.size != expected:
        raise HEError(f"vector has {vec.size} values but the layout describes {expected}")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for entry in layout:
        shape = tuple(int(d) for d in entry["shape"])
        dtype = np.dtype(entry["dtype"])
        if dtype.kind != "f":
            raise HEError(f"layout entry {entry['name']!r} has non-float dtype {dtype}")
        n = math.prod(shape)
        out[str(entry["name"])] = vec[offset : offset + n].astype(dtype).reshape(shape)
        offset += n
    return out


def _load(ctx: HEContext, chunk: bytes, where: str) -> ts.CKKSVector:
    try:
        return ts.ckks_vector_from(ctx._ctx, bytes(chunk))
    except (ValueError, TypeError) as exc:
        raise HEError(f"{where} is not a CKKS ciphertext for these parameters: {exc}") from exc


def encrypt_vector(ctx: HEContext, flat: np.ndarray) -> list[bytes]:
    """Encrypt a 1-D vector as serialised ciphertexts of at most ``ctx.slot_count`` values.

    Works with a public context: encrypting never needs the secret key.
    """
    vec = np.asarray(flat, dtype=np.float64)
    if vec.ndim != 1:
        raise HEError(f"encrypt_vector takes a 1-D vector, got shape {vec.shape}; use flatten_weights first")
    if not np.isfinite(vec).all():
        raise HEError("vector contains NaN or infinite values, which CKKS cannot encrypt")
    slots = ctx.slot_count
    return [ts.ckks_vector(ctx._ctx, vec[i : i + slots]).serialize() for i in range(0, vec.size, slots)]


def sum_encrypted(ctx: HEContext, vectors: Sequence[Sequence[bytes]]) -> list[bytes]:
    """Elementwise sum of several encrypted vectors, chunk by chunk; needs only the public key.

    Summing all inputs at once parses and serialises each chunk of the result once,
    instead of once per pairwise addition.
    """
    if not vectors:
        raise HEError("nothing to add: no encrypted vectors")
    n_chunks = len(vectors[0])
    for i, v in enumerate(vectors):
        if len(v) != n_chunks:
            raise HEError(f"encrypted vector {i} has {len(v)} chunks, vector 0 has {n_chunks}; they encrypt different lengths")
    out: list[bytes] = []
    for c in range(n_chunks):
        total = _load(ctx, vectors[0][c], f"chunk {c} of vector 0")
        for i in range(1, len(vectors)):
            term = _load(ctx, vectors[i][c], f"chunk {c} of vector {i}")
            if term.size() != total.size():
                raise HEError(f"chunk {c} holds {term.size()} values in vector {i} but {total.size()} in vector 0")
            total += term
        out.append(total.serialize())
    return out


def add_encrypted(ctx: HEContext, a: Sequence[bytes], b: Sequence[bytes]) -> list[bytes]:
    """Elementwise sum of two encrypted vectors."""
    return sum_encrypted(ctx, [a, b])


def scale_encrypted(ctx: HEContext, a: Sequence[bytes], factor: float) -> list[bytes]:
    """Multiply an encrypted vector by a plain scalar, e.g. ``1 / n`` to turn a sum into a mean.

    Each scaling consumes one level of the modulus chain (one inner prime of
    ``coeff_mod_bit_sizes``); the default parameters allow two. The scalar is encoded at
    the context's scale, so the absolute error grows from about 1e-8 to about 1e-6 after two
    scalings; prefer scaling after decryption where the plaintext is at hand.
    """
    f = float(factor)
    if not math.isfinite(f):
        raise HEError(f"scale factor must be finite, got {factor!r}")
    out = []
    for c, chunk in enumerate(a):
        vec = _load(ctx, chunk, f"chunk {c}")
        try:
            out.append((vec * f).serialize())
        except ValueError as exc:
            raise HEError(
                f"cannot scale chunk {c} again: the ciphertext has no level left ({exc}); "
                "use more inner primes in coeff_mod_bit_sizes or scale after decryption"
            ) from exc
    return out


def decrypt_vector(ctx: HEContext, chunks: Sequence[bytes], length: int) -> np.ndarray:
    """Decrypt the chunks of one vector of ``length`` values (float64); needs the secret key."""
    if not ctx.has_secret_key:
        raise HEKeyError(
            "this context holds only the public key and cannot decrypt; "
            "only participants that received the task's secret context can"
        )
    parts = [np.asarray(_load(ctx, chunk, f"chunk {c}").decrypt(), dtype=np.float64) for c, chunk in enumerate(chunks)]
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    if flat.size != length:
        raise HEError(f"the ciphertexts hold {flat.size} values but {length} were expected")
    return flat
