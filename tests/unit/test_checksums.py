"""common/checksums.py: the check a reader makes of a blob's bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import xxhash

from fedpact.common import checksums

DATA = bytes(range(256)) * 1000
SHA = hashlib.sha256(DATA).hexdigest()
SUM = f"xxh128:{xxhash.xxh3_128_hexdigest(DATA)}"


def xxh(data: bytes) -> str:
    return f"xxh128:{xxhash.xxh3_128_hexdigest(data)}"


def flipped(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def test_the_digests_of_pieces_are_those_of_the_bytes_laid_end_to_end() -> None:
    d = checksums.Digests((DATA[:1000], DATA[1000:1001], DATA[1001:]))
    assert d.checksum() == SUM and d.sha256() == SHA
    s = checksums.Digests()
    for i in range(0, len(DATA), 4096):
        s.update(memoryview(DATA)[i : i + 4096])
    assert s.checksum() == SUM and s.sha256() == SHA
    empty = checksums.Digests()
    assert empty.checksum() == xxh(b"") and empty.sha256() == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("text", [SUM, SUM.encode(), f"  {SUM}\n"])
def test_a_checksum_is_read_from_a_header_or_an_attribute(text: str | bytes) -> None:
    assert checksums.parse(text) == SUM


@pytest.mark.parametrize("text", [None, "", "xxh128:", SUM.upper(), SUM[:-1], SUM + "0", "crc32c:0a1b2c3d",
                                  SUM.replace("xxh128", "xxh64"), b"\xff\xfe", "xxh128:" + "g" * 32])
def test_anything_else_is_no_checksum(text: str | bytes | None) -> None:
    assert checksums.parse(text) is None


@pytest.mark.parametrize("expected", [None, SUM])
def test_a_body_is_checked_by_the_checksum_given_else_by_its_sha256(expected: str | None) -> None:
    good = checksums.BodyCheck(SHA)
    good.expect(expected)
    for i in range(0, len(DATA), 1000):
        good.update(DATA[i : i + 1000])
    assert good.matches() and good.by_checksum == (expected is not None)
    for at in (0, len(DATA) // 2, len(DATA) - 1):
        bad = checksums.BodyCheck(SHA)
        bad.expect(expected)
        bad.update(flipped(DATA, at))
        assert not bad.matches(), at
    short = checksums.BodyCheck(SHA)
    short.expect(expected)
    short.update(DATA[:-1])
    assert not short.matches()


def test_a_wrong_checksum_fails_good_bytes() -> None:
    check = checksums.BodyCheck(SHA)
    check.expect(xxh(b"other bytes"))
    check.update(DATA)
    assert not check.matches(), "the checksum decides once given: the sha256 does not rescue it"


def test_the_choice_is_made_before_the_first_byte() -> None:
    check = checksums.BodyCheck(SHA)
    check.update(DATA[:10])
    check.expect(SUM)  # too late: a resumed download keeps the check it began with
    check.update(DATA[10:])
    assert not check.by_checksum and check.matches()


def test_an_empty_body_matches_the_empty_blob_either_way() -> None:
    empty_sha = hashlib.sha256(b"").hexdigest()
    assert checksums.BodyCheck(empty_sha).matches()
    check = checksums.BodyCheck(empty_sha)
    check.expect(xxh(b""))
    assert check.matches() and check.by_checksum
    assert not checksums.BodyCheck(SHA).matches()


def test_views_of_arrays_being_filled_are_checked_as_their_bytes() -> None:
    arrays = [np.arange(1000, dtype=np.float32), np.ones((3, 7), dtype=np.float64)]
    raw = b"".join(a.tobytes() for a in arrays)
    check = checksums.BodyCheck(hashlib.sha256(raw).hexdigest())
    check.expect(xxh(raw))
    for a in arrays:
        check.update(memoryview(a).cast("B"))
    assert check.matches()


def test_the_attribute_round_trips_and_a_file_without_one_has_none(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(DATA)
    with open(path, "rb") as f:
        assert checksums.read_xattr(f.fileno()) is None
    checksums.write_xattr(path, SUM)
    with open(path, "rb") as f:
        assert checksums.read_xattr(f.fileno()) == SUM
    checksums.write_xattr(tmp_path / "missing", SUM)  # nothing to attach it to: no error, nothing made
    assert not (tmp_path / "missing").exists()
