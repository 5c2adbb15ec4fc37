"""Shamir secret sharing over GF(2^521 - 1): t-of-n, secrecy below t, corrupt shares detected."""

from __future__ import annotations

import itertools
import os

import pytest

from fedpact.privacy import shamir
from fedpact.privacy.shamir import PRIME, ShamirError, Share, ShareMismatch


def test_any_t_of_n_shares_reconstruct() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, [1, 2, 3, 4, 5])
    for subset in itertools.combinations(shares, 3):
        assert shamir.combine(subset, 3) == secret
    assert shamir.combine(shares, 3) == secret  # all five, extras checked
    assert shamir.combine(list(reversed(shares)), 3) == secret


def test_fewer_than_t_shares_are_refused_and_consistent_with_any_secret() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, [1, 2, 3, 4])
    with pytest.raises(ShamirError, match="2 share"):
        shamir.combine(shares[:2], 3)
    # Every candidate secret is equally consistent with what t-1 holders know: through their
    # two points and (0, candidate) runs exactly one degree-2 polynomial, whose value at a third
    # holder's x is a share that, with theirs, reconstructs the candidate.
    for candidate in (bytes(32), b"\xff" * 32, secret):
        through = shamir._Interpolator([Share(0, int.from_bytes(candidate, "big")), shares[0], shares[1]])
        third = Share(3, through(3))
        assert shamir.combine([shares[0], shares[1], third], 3) == candidate


def test_shares_below_threshold_look_uniform() -> None:
    # With t=2 a single share is secret + r*x for uniform r: its distribution must not depend
    # on the secret. Compare the low 4 bits of share 1 for two very different secrets.
    def histogram(secret: bytes) -> list[int]:
        counts = [0] * 16
        for _ in range(3000):
            counts[shamir.split(secret, 2, [1, 2])[0].y & 15] += 1
        return counts

    for secret in (bytes(32), b"\x01" * 32):
        counts = histogram(secret)
        expected = 3000 / 16
        chi2 = sum((c - expected) ** 2 / expected for c in counts)
        assert chi2 < 55, (secret, counts)  # 15 dof: p ~ 1e-6 for a fair histogram


def test_corrupt_share_is_detected_with_an_extra_share() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, [1, 2, 3, 4])
    bad = Share(shares[1].x, (shares[1].y + 1) % PRIME)
    with pytest.raises(ShareMismatch, match="corrupt"):
        shamir.combine([shares[0], bad, shares[2], shares[3]], 3)
    with pytest.raises(ShareMismatch):
        shamir.combine([shares[0], shares[1], shares[2], Share(4, 12345)], 3)


def test_serialisation_and_parameter_errors() -> None:
    (share,) = shamir.split(os.urandom(32), 1, [7])
    assert Share.from_bytes(7, share.to_bytes()) == share
    with pytest.raises(ShamirError, match="66 bytes"):
        Share.from_bytes(1, b"\x00" * 10)
    with pytest.raises(ShamirError, match="distinct"):
        shamir.split(os.urandom(32), 2, [1, 1, 2])
    with pytest.raises(ShamirError, match="exceeds"):
        shamir.split(os.urandom(32), 4, [1, 2, 3])
    with pytest.raises(ShamirError, match="32 bytes"):
        shamir.split(b"short", 2, [1, 2])
    with pytest.raises(ShamirError, match="x-coordinate"):
        shamir.split(os.urandom(32), 2, [0, 1])
