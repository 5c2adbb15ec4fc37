"""Reading blobs straight from the hub's directory, for a client on the hub's machine.

A hub with a local blob store offers its directory to loopback clients
(``GET /blobstore/local``); a client that can read the directory's token file shares the
filesystem and opens ``<dir>/<sha[:2]>/<sha>`` itself instead of asking the hub to send
the bytes. The hub's process then spends nothing on those bytes, the way an object
store's presigned URLs keep them off the hub.

The files are complete and immutable while they exist (the hub renames a verified file
into place and deletes it whole), and the reader still checks the sha256. A file that is
not there (reclaimed, or a store the client cannot see) makes the client ask the hub as
usual, which also answers what a missing file means.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from fedpact.common.digests import SHA256_RE
from fedpact.common.errors import FedpactError
from fedpact.common.net import is_loopback


def on_this_machine(url: str) -> bool:
    """Whether ``url`` names a loopback address: the only hubs worth asking for their directory."""
    return is_loopback(urlsplit(url).hostname)


class LocalBlobs:
    """The hub's blob directory, once this process has shown it can read it."""

    def __init__(self, blobs_dir: Path) -> None:
        self.blobs_dir = blobs_dir

    @classmethod
    def verify(cls, answer: Mapping[str, Any]) -> LocalBlobs | None:
        """The directory the hub described, if its token file holds the token the hub sent.

        A client on another machine (behind a port forward, say) sees another directory or
        none, so it keeps downloading through the hub.
        """
        try:
            blobs_dir = Path(str(answer["blobs_dir"]))
            name = str(answer["token_file"])
            token = str(answer["token"])
        except (KeyError, TypeError):
            return None
        if "/" in name or not token:
            return None
        try:
            if (blobs_dir / name).read_text().strip() != token:
                return None
        except OSError:
            return None
        return cls(blobs_dir)

    def open(self, sha256: str) -> BinaryIO | None:
        """The blob's file, open for reading, or None when this directory does not hold it."""
        if not SHA256_RE.fullmatch(sha256):
            raise FedpactError(f"not a sha256: {sha256!r}")
        try:
            return open(self.blobs_dir / sha256[:2] / sha256, "rb")
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None
