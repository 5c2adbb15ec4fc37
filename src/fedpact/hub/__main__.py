"""``python -m fedpact.hub``: run a hub in the foreground with one command."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fedpact.hub.config import HubConfig
from fedpact.hub.server import DEFAULT_HOST, DEFAULT_PORT, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = HubConfig.__dataclass_fields__
    p = argparse.ArgumentParser(prog="python -m fedpact.hub", description="Run a fedpact hub.")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("FEDPACT_HUB_DIR", "~/.fedpact/hub")).expanduser(),
        help="where the database (by default) and the blobs live [$FEDPACT_HUB_DIR or ~/.fedpact/hub]",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on [{DEFAULT_HOST}]")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on [{DEFAULT_PORT}]")
    p.add_argument(
        "--database-url",
        default=os.environ.get("FEDPACT_DATABASE_URL"),
        help="SQLAlchemy URL [$FEDPACT_DATABASE_URL or sqlite:///<data-dir>/hub.db]",
    )
    p.add_argument(
        "--broker-url",
        default=os.environ.get("FEDPACT_BROKER_URL"),
        help="RabbitMQ URL for wake-ups between replicas [$FEDPACT_BROKER_URL or none]",
    )
    p.add_argument("--json-logs", action="store_true", help="log one JSON object per line")
    p.add_argument("--hosted-lease-s", type=float, default=defaults["hosted_lease_s"].default)
    p.add_argument("--safety-recheck-s", type=float, default=defaults["safety_recheck_s"].default)
    p.add_argument("--password-time-cost", type=int, default=defaults["password_time_cost"].default)
    p.add_argument("--password-memory-kib", type=int, default=defaults["password_memory_kib"].default)
    p.add_argument("--max-blob-bytes", type=int, default=defaults["max_blob_bytes"].default)
    p.add_argument("--max-inline-bytes", type=int, default=defaults["max_inline_bytes"].default)
    p.add_argument("--token-ttl-s", type=float, default=defaults["token_ttl_s"].default)
    p.add_argument("--max-wait-s", type=float, default=defaults["max_wait_s"].default)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    config = HubConfig(
        data_dir=a.data_dir,
        database_url=a.database_url,
        broker_url=a.broker_url,
        json_logs=a.json_logs,
        safety_recheck_s=a.safety_recheck_s,
        hosted_lease_s=a.hosted_lease_s,
        password_time_cost=a.password_time_cost,
        password_memory_kib=a.password_memory_kib,
        max_blob_bytes=a.max_blob_bytes,
        max_inline_bytes=a.max_inline_bytes,
        token_ttl_s=a.token_ttl_s,
        max_wait_s=a.max_wait_s,
    )
    print(f"fedpact hub on http://{a.host}:{a.port} (data in {config.data_dir})", flush=True)
    serve(config, host=a.host, port=a.port)


if __name__ == "__main__":
    main()
