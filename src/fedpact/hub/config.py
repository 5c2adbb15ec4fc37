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
    #: RabbitMQ URL carrying wake-ups between replicas; None: in-process wake-ups only.
    broker_url: str | None = None
    #: Seconds between attempts to reach the broker after it went away.
    broker_reconnect_s: float = 1.0
    #: Times a hosted aggregator that dies is restarted (with backoff) before its task fails.
    hosted_max_restarts: int = 3
    #: First restart delay; each further one doubles it.
    hosted_restart_backoff_s: float = 1.0
    #: How long a replica's claim on a hosted aggregator lasts without renewal: the bound on
    #: how soon another replica adopts it after the owner dies.
    hosted_lease_s: float = 15.0
    #: Log one JSON object per line (for log shippers) instead of plain text.
    json_logs: bool = False
    max_blob_bytes: int = 2 * GIB
    max_inline_bytes: int = 1 * MIB
    token_ttl_s: float = 7 * 24 * 3600.0
    max_wait_s: float = 60.0
    #: How often a waiting poll re-checks the database while wake-ups cannot be trusted
    #: (the broker is down): then the database check is how messages are found.
    recheck_interval_s: float = 1.0
    #: How often it re-checks while they can: only a safety net, so rare (see hub.notify).
    safety_recheck_s: float = 15.0
    password_time_cost: int = 3
    password_memory_kib: int = 65536
    password_parallelism: int = 4

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
