"""How a reader checks a blob's bytes: by their sha256, or by the checksum of a verified copy.

A blob is named by the sha256 of its bytes, and the hub checks that name when the bytes
arrive. Hashing costs about half a millisecond per MB, and a round reads every blob many
times (each participant reads the broadcast, the aggregator reads each update): hashing
each read again was a tenth of a loaded round's CPU. So the hub, while it hashes an
arriving body, also takes its XXH3-128 checksum (what rsync checks transfers with, some
thirty times cheaper than sha256), and hands it on with every copy it has verified:

* a download the hub serves from memory carries it in the ``X-Fedpact-Checksum`` header;
* a blob file the hub wrote carries it in the extended attribute ``user.fedpact.checksum``,
  for a client on the hub's machine that reads the file itself (``client.localblobs``).

Both read ``xxh128:<32 hex digits>``. The reader checks the checksum when it is given one
and the sha256 otherwise (a file restored without its attributes, an object store's
presigned download, an older hub). What either check catches is accidental: a corrupt
disk or memory, a truncated file, a wrong file served. Neither was ever a defence against
the hub itself, which relays the message that names the sha256 (docs/security.md).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from typing import Any

import xxhash

#: The response header of a download served from a verified copy.
HEADER = "X-Fedpact-Checksum"
#: The extended attribute of a blob file the hub wrote (same value).
XATTR = "user.fedpact.checksum"
_VALUE = re.compile(r"xxh128:([0-9a-f]{32})")
#: What the checks take: bytes, or a view of an array being filled.
Buffer = bytes | bytearray | memoryview


class Digests:
    """What the hub takes of a body in one pass as it arrives: its sha256 (its name) and its checksum."""

    def __init__(self, pieces: Iterable[Buffer] = ()) -> None:
        self._sha = hashlib.sha256()
        self._sum = xxhash.xxh3_128()
        for piece in pieces:
            self.update(piece)

    def update(self, piece: Buffer) -> None:
        self._sha.update(piece)
        self._sum.update(piece)

    def sha256(self) -> str:
        return self._sha.hexdigest()

    def checksum(self) -> str:
        """As a header or attribute carries it."""
        return _format(self._sum)


def _format(h: Any) -> str:
    return f"xxh128:{h.hexdigest()}"


def parse(text: str | bytes | None) -> str | None:
    """The checksum a header or attribute holds, or None when it holds none this code knows."""
    if text is None:
        return None
    value = (text.decode("ascii", "replace") if isinstance(text, bytes) else text).strip()
    return value if _VALUE.fullmatch(value) else None


def write_xattr(path: str | os.PathLike[str], value: str) -> None:
    """Attach the checksum to a file the hub verified; a filesystem without user attributes gets none."""
    try:
        os.setxattr(path, XATTR, value.encode("ascii"))
    except (OSError, AttributeError):  # no user attributes on this filesystem (or not Linux)
        pass


def read_xattr(fd: int) -> str | None:
    """The checksum the hub attached to an open blob file, if any."""
    try:
        return parse(os.getxattr(fd, XATTR))
    except (OSError, AttributeError):
        return None


class BodyCheck:
    """Checks a blob's bytes as they arrive: by the checksum :meth:`expect` gave, else by the sha256.

    The choice is made before the first byte (a resumed download keeps it), so every byte
    goes through exactly one of the two.
    """

    def __init__(self, sha256: str) -> None:
        self.sha256 = sha256
        self._expected: str | None = None
        self._h: Any = None

    def expect(self, value: str | None) -> None:
        """Check by this checksum instead of the sha256 (ignored once bytes came, or when None)."""
        if self._h is None and value is not None:
            self._expected = value

    @property
    def by_checksum(self) -> bool:
        return self._expected is not None

    def update(self, data: Buffer) -> None:
        if self._h is None:
            self._h = hashlib.sha256() if self._expected is None else xxhash.xxh3_128()
        self._h.update(data)

    def matches(self) -> bool:
        """Whether the bytes seen are the blob's (no bytes at all: those of the empty blob)."""
        if self._h is None:
            self.update(b"")
        if self._expected is None:
            return bool(self._h.hexdigest() == self.sha256)
        return _format(self._h) == self._expected
