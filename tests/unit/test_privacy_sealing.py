import os

import pytest

from fedpact.privacy.sealing import (
    MIN_SEALED_BYTES,
    SealError,
    generate_keypair,
    make_context,
    open_sealed,
    public_key_of,
    seal,
)

CONTEXT = make_context("task-42", 3, "alice", "bob")


@pytest.fixture(scope="module")
def bob():
    return generate_keypair()


def test_keypair_is_raw_32_bytes_and_consistent(bob):
    private, public = bob
    assert len(private) == 32 and len(public) == 32
    assert public_key_of(private) == public
    assert generate_keypair() != generate_keypair()


@pytest.mark.parametrize("plaintext", [b"", b"k", os.urandom(1000)])
def test_round_trip(bob, plaintext):
    private, public = bob
    box = seal(public, plaintext, CONTEXT)
    if len(plaintext) > 16:
        assert plaintext not in box
    assert len(box) == MIN_SEALED_BYTES + len(plaintext)
    assert open_sealed(private, box, CONTEXT) == plaintext


def test_sealing_is_randomised(bob):
    _, public = bob
    assert seal(public, b"same", CONTEXT) != seal(public, b"same", CONTEXT)


def test_large_payload_round_trip(bob):
    private, public = bob
    payload = os.urandom(8 * 1024 * 1024)
    box = seal(public, payload, CONTEXT)
    assert open_sealed(private, box, CONTEXT) == payload
    tampered = bytearray(box)
    tampered[len(box) // 2] ^= 0x01
    with pytest.raises(SealError):
        open_sealed(private, bytes(tampered), CONTEXT)


def test_tampering_with_any_byte_is_rejected(bob):
    private, public = bob
    box = seal(public, b"the task's secret key", CONTEXT)
    for i in range(len(box)):
        for flip in (0x01, 0x80):
            tampered = bytearray(box)
            tampered[i] ^= flip
            with pytest.raises(SealError):
                open_sealed(private, bytes(tampered), CONTEXT)


def test_truncated_or_extended_box_is_rejected(bob):
    private, public = bob
    box = seal(public, b"payload", CONTEXT)
    for cut in (0, 1, 33, MIN_SEALED_BYTES - 1, len(box) - 1):
        with pytest.raises(SealError):
            open_sealed(private, box[:cut], CONTEXT)
    with pytest.raises(SealError):
        open_sealed(private, box + b"\x00", CONTEXT)


def test_wrong_context_is_rejected(bob):
    private, public = bob
    box = seal(public, b"payload", CONTEXT)
    for other in (make_context("task-42", 4, "alice", "bob"), make_context("task-42", 3, "mallory", "bob"), b"", CONTEXT + b"\x00"):
        with pytest.raises(SealError, match="sealed for a different context"):
            open_sealed(private, box, other)


def test_wrong_key_is_rejected(bob):
    _, public = bob
    other_private, _ = generate_keypair()
    box = seal(public, b"payload", CONTEXT)
    with pytest.raises(SealError, match="meant for another key"):
        open_sealed(other_private, box, CONTEXT)


def test_bad_keys_and_versions_give_clear_errors(bob):
    private, public = bob
    with pytest.raises(SealError, match="a public key is 32 raw bytes, got 31 bytes"):
        seal(public[:31], b"x", CONTEXT)
    with pytest.raises(SealError, match="a private key is 32 raw bytes, got 33 bytes"):
        open_sealed(private + b"\x00", seal(public, b"x", CONTEXT), CONTEXT)
    with pytest.raises(SealError, match="low-order point"):
        seal(bytes(32), b"x", CONTEXT)
    box = bytearray(seal(public, b"x", CONTEXT))
    box[0] = 2
    with pytest.raises(SealError, match="unknown sealed-box version 2"):
        open_sealed(private, bytes(box), CONTEXT)
    with pytest.raises(TypeError, match="plaintext must be bytes"):
        seal(public, "text", CONTEXT)


def test_seal_error_is_a_value_error():
    assert issubclass(SealError, ValueError)


def test_make_context_is_unambiguous():
    assert make_context("ab", "c") != make_context("a", "bc")
    assert make_context(1, "2") == make_context("1", b"2")
    assert make_context() == b""
    with pytest.raises(TypeError, match="context parts must be str, int or bytes"):
        make_context(1.5)
