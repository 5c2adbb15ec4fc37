"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

Why our own: the vetted option on PyPI, PyCryptodome's ``Crypto.Protocol.SecretSharing``,
shares 16-byte secrets over GF(2^128) in pure-Python bit arithmetic (each field
multiplication a 128-step loop), would pull a second crypto library in for one function
and is too slow for hundreds of participants sharing two secrets each. Shamir's scheme
itself is a few lines of modular arithmetic, so this module implements it directly over
the Mersenne prime p = 2^521 - 1, which is large enough that a whole 32-byte secret is one
field element (no splitting into limbs).

- :func:`split` draws the t-1 random coefficients from :mod:`secrets` (the OS CSPRNG) and
  evaluates the polynomial at the shareholders' x-coordinates (distinct, in [1, p-1]).
- :func:`combine` interpolates at 0 from any ``threshold`` shares. Given *more* than
  ``threshold`` shares it checks that every extra share lies on the same polynomial and
  raises :class:`ShareMismatch` otherwise, so a corrupted share is detected whenever
  ``threshold + 1`` shares are available (with exactly ``threshold`` shares a wrong share
  cannot be detected by the field arithmetic alone; secure aggregation checks the result
  against a public key or the masks instead).
- Fewer than ``threshold`` shares reveal nothing: for every candidate secret there is
  exactly one polynomial of degree t-1 through those shares and that secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: The field modulus: the Mersenne prime 2^521 - 1.
PRIME = 2**521 - 1
#: Bytes of one serialised share value (521 bits).
SHARE_BYTES = 66
SECRET_BYTES = 32


class ShamirError(ValueError):
    """Bad parameters or shares."""


class ShareMismatch(ShamirError):
    """The shares given do not lie on one polynomial: at least one is corrupt."""


@dataclass(frozen=True)
class Share:
    """One shareholder's point (x, y) on the sharing polynomial."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        return self.y.to_bytes(SHARE_BYTES, "big")

    @classmethod
    def from_bytes(cls, x: int, data: bytes) -> Share:
        if len(data) != SHARE_BYTES:
            raise ShamirError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
        y = int.from_bytes(data, "big")
        if y >= PRIME:
            raise ShamirError("share value is not a field element")
        return cls(x, y)


def _check_xs(xs: Sequence[int]) -> None:
    if len(set(xs)) != len(xs):
        raise ShamirError(f"shareholder x-coordinates must be distinct, got {list(xs)}")
    for x in xs:
        if isinstance(x, bool) or not isinstance(x, int) or not 0 < x < PRIME:
            raise ShamirError(f"shareholder x-coordinate must be an integer in [1, p-1], got {x!r}")


def split_int(secret: int, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Shares of the field element ``secret`` for shareholders at ``xs``; any ``threshold`` recover it."""
    if not 0 <= secret < PRIME:
        raise ShamirError("secret is not a field element")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ShamirError(f"threshold must be an integer >= 1, got {threshold!r}")
    if threshold > len(xs):
        raise ShamirError(f"threshold {threshold} exceeds the number of shareholders ({len(xs)})")
    _check_xs(xs)
    coeffs = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    out = []
    for x in xs:
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % PRIME
        out.append(Share(x, y))
    return out


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Shares of a 32-byte secret for shareholders at ``xs``."""
    if len(secret) != SECRET_BYTES:
        raise ShamirError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    return split_int(int.from_bytes(secret, "big"), threshold, xs)


def _batch_inverse(values: Sequence[int]) -> list[int]:
    """Modular inverses of non-zero field elements with one exponentiation (Montgomery's trick)."""
    prefix = [1] * (len(values) + 1)
    for i, v in enumerate(values):
        prefix[i + 1] = prefix[i] * v % PRIME
    inv = pow(prefix[-1], -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = prefix[i] * inv % PRIME
        inv = inv * values[i] % PRIME
    return out


class _Interpolator:
    """The polynomial through ``points`` (distinct x), evaluable anywhere off those x in O(t)."""

    def __init__(self, points: Sequence[Share]) -> None:
        self.xs = [p.x for p in points]
        self.ys = [p.y for p in points]
        denominators = []
        for i, xi in enumerate(self.xs):
            d = 1
            for j, xj in enumerate(self.xs):
                if i != j:
                    d = d * (xi - xj) % PRIME
            denominators.append(d)
        self.denominators = denominators

    def __call__(self, at: int) -> int:
        diffs = [(at - x) % PRIME for x in self.xs]
        if 0 in diffs:
            return self.ys[diffs.index(0)]
        full = 1
        for d in diffs:
            full = full * d % PRIME
        inverses = _batch_inverse([d * den % PRIME for d, den in zip(diffs, self.denominators)])
        total = 0
        for y, inv in zip(self.ys, inverses):
            total += y * inv
        return total % PRIME * full % PRIME


def combine_int(shares: Iterable[Share], threshold: int) -> int:
    """The shared field element; checks any shares beyond ``threshold`` for consistency."""
    pts = list(shares)
    _check_xs([s.x for s in pts])
    if len(pts) < threshold:
        raise ShamirError(f"{len(pts)} share(s) given, {threshold} needed to reconstruct")
    poly = _Interpolator(pts[:threshold])
    for extra in pts[threshold:]:
        if poly(extra.x) != extra.y:
            raise ShareMismatch(
                f"the share held at x={extra.x} does not lie on the polynomial of the other shares: "
                "at least one share is corrupt"
            )
    return poly(0)


def combine(shares: Iterable[Share], threshold: int) -> bytes:
    """The 32-byte secret from ``threshold`` (or more, then checked) shares."""
    value = combine_int(shares, threshold)
    if value >= 2 ** (8 * SECRET_BYTES):
        raise ShareMismatch("the reconstructed value is not a 32-byte secret: at least one share is corrupt")
    return value.to_bytes(SECRET_BYTES, "big")
