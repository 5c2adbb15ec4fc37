"""Settings of one hub, gathered in one place so tests, the CLI and deployments agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3
MIB = 1024**2


@dataclass
class HubConfig:
    """How a hub stores data and which limits it enforces.

    ``database_url`` defaults to a SQLite file inside ``data_dir`` so an embedded hub needs
    nothing but a folder; a deployment points it at PostgreSQL instead. The password-hash
    costs default to argon2-cffi's recommended values; tests lower them to stay fast.
    """

    data_dir: Path
    database_url: str | None = None
    max_blob_bytes: int = 2 * GIB
    max_inline_bytes: int = 1 * MIB
    token_ttl_s: float = 7 * 24 * 3600.0
    max_wait_s: float = 60.0
    recheck_interval_s: float = 1.0
    password_time_cost: int = 3
    password_memory_kib: int = 65536
    password_parallelism: int = 4
    #: Where finished blobs live: None for ``data_dir/blobs``, else a URL (hub.blobstore).
    blob_store: str | None = None
    #: How often the hub reclaims unreferenced blobs and expires abandoned uploads.
    gc_interval_s: float = 600.0
    #: Blobs younger than this are never reclaimed: an upload precedes the row that uses it.
    gc_grace_s: float = 3600.0
    #: Uploads untouched this long are abandoned and dropped.
    upload_ttl_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'hub.db'}"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def max_json_bytes(self) -> int:
        """Largest JSON request accepted: an inline payload in base64 plus room for the rest."""
        return self.max_inline_bytes * 4 // 3 + 256 * 1024
