"""Settings of one hub, gathered in one place so tests, the CLI and deployments agree.

An operator sets them with hub flags or a TOML file (``fedpact hub --config hub.toml``);
the defaults are meant to be safe on a small shared server, so a consortium that trusts
nobody needs to change nothing to be protected from one user exhausting the hub.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

GIB = 1024**3
MIB = 1024**2


def _cpu_count() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass
class HubConfig:
    """How a hub stores data and which limits it enforces.

    ``database_url`` defaults to a SQLite file inside ``data_dir`` so an embedded hub needs
    nothing but a folder; a deployment points it at PostgreSQL instead. The password-hash
    costs default to argon2-cffi's recommended values; tests lower them to stay fast.
    Every quota is per hub process's view of the shared database, so it holds across
    several hub processes too (the throttles are per process: see docs/security.md).
    """

    data_dir: Path
    database_url: str | None = None
    #: Database connections this process keeps open (and as many more under load): replicas
    #: times twice this must stay under PostgreSQL's ``max_connections`` (docs/deploy.md).
    database_pool_size: int = 20
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
    #: When set, ``/metrics`` answers only ``Authorization: Bearer <metrics_token>``.
    metrics_token: str | None = None
    max_blob_bytes: int = 2 * GIB
    max_inline_bytes: int = 1 * MIB
    token_ttl_s: float = 7 * 24 * 3600.0
    #: How long a hub process trusts a verified token without asking the database again: the
    #: longest a revoked token may still pass on a replica that missed the revocation.
    token_cache_s: float = 5.0
    max_wait_s: float = 60.0
    #: How often a waiting poll re-checks the database while wake-ups cannot be trusted
    #: (the broker is down): then the database check is how messages are found.
    recheck_interval_s: float = 1.0
    #: How often it re-checks while they can: only a safety net, so rare (see hub.notify).
    safety_recheck_s: float = 15.0
    password_time_cost: int = 3
    password_memory_kib: int = 65536
    password_parallelism: int = 4
    # -- quotas (0 turns one off) --------------------------------------------------------
    max_stored_bytes_per_user: int = 20 * GIB
    max_pending_messages: int = 10_000
    max_poll_bytes: int = 16 * MIB
    max_tasks_per_user: int = 100
    max_hosted_per_user: int = 2
    max_hosted_per_hub: int = 8
    # -- login and registration ----------------------------------------------------------
    hash_slots: int = 0
    hash_wait_s: float = 10.0
    login_failures_per_name: int = 5
    login_failures_per_address: int = 30
    registrations_per_address: int = 100
    throttle_window_s: float = 300.0
    # -- disk and transport -----------------------------------------------------------
    min_free_bytes: int = 256 * MIB
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Where finished blobs live: None for ``data_dir/blobs``, else a URL (hub.blobstore).
    blob_store: str | None = None
    #: How often the hub reclaims unreferenced blobs and expires abandoned uploads.
    gc_interval_s: float = 600.0
    #: Blobs younger than this are never reclaimed: an upload precedes the row that uses it.
    gc_grace_s: float = 3600.0
    #: A running task's finished rounds are reclaimed as soon as a new round opens, except
    #: what the task recorded within this many seconds (or since its previous new round).
    gc_round_grace_s: float = 1.0
    #: ... at most once every this many seconds per task; passes are also spaced so that
    #: they take at most 5% of the time (hub.blobgc.Collector), which is what paces them.
    gc_round_every_s: float = 0.0
    #: Uploads untouched this long are abandoned and dropped.
    upload_ttl_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'hub.db'}"
        if self.hash_slots <= 0:
            self.hash_slots = _cpu_count()
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key (the certificate chain and its private key), or neither")
        if self.tls_cert is not None:
            self.tls_cert = Path(self.tls_cert).expanduser().resolve()
        if self.tls_key is not None:
            self.tls_key = Path(self.tls_key).expanduser().resolve()

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

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"


#: Settings a config file or a flag may give (everything but the data directory).
SETTINGS = tuple(f.name for f in fields(HubConfig) if f.name != "data_dir")


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML file: top-level keys named like ``HubConfig`` fields.

    Unknown keys are an error rather than ignored, so a misspelt limit cannot silently
    leave the default in force.
    """
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    table = data.get("hub", data)
    if not isinstance(table, dict):
        raise TypeError(f"{path}: [hub] must be a table of settings")
    allowed = set(SETTINGS) | {"data_dir"}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    return dict(table)


def parse_setting(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line, converted to the type of that setting."""
    name, sep, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in SETTINGS:
        raise ValueError(f"{text!r}: give NAME=VALUE with NAME one of {', '.join(SETTINGS)}")
    default = HubConfig.__dataclass_fields__[name].default
    if isinstance(default, bool):
        return name, raw.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return name, int(raw)
    if isinstance(default, float):
        return name, float(raw)
    return name, raw


def build_config(
    data_dir: Path | None, config_file: Path | None, overrides: dict[str, Any], fallback_dir: Path | None = None
) -> HubConfig:
    """A config from a TOML file (if any) with ``overrides`` (flags) on top; flags win."""
    settings: dict[str, Any] = read_config_file(config_file) if config_file is not None else {}
    settings.update(overrides)
    if data_dir is not None:
        settings["data_dir"] = data_dir
    if "data_dir" not in settings and fallback_dir is not None:
        settings["data_dir"] = fallback_dir
    if "data_dir" not in settings:
        raise ValueError("give a data directory (--data-dir or data_dir in the config file)")
    return HubConfig(**settings)
