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
    p.add_argument("--database-url", default=None, help="SQLAlchemy URL [sqlite:///<data-dir>/hub.db]")
    p.add_argument(
        "--blob-store",
        default=os.environ.get("FEDPACT_BLOB_STORE") or None,
        help="where blobs live: file:///PATH or s3://BUCKET?endpoint=... [$FEDPACT_BLOB_STORE or <data-dir>/blobs]",
    )
    p.add_argument("--gc-interval-s", type=float, default=defaults["gc_interval_s"].default)
    p.add_argument("--gc-grace-s", type=float, default=defaults["gc_grace_s"].default)
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
        max_blob_bytes=a.max_blob_bytes,
        max_inline_bytes=a.max_inline_bytes,
        token_ttl_s=a.token_ttl_s,
        max_wait_s=a.max_wait_s,
        blob_store=a.blob_store,
        gc_interval_s=a.gc_interval_s,
        gc_grace_s=a.gc_grace_s,
    )
    print(f"fedpact hub on http://{a.host}:{a.port} (data in {config.data_dir})", flush=True)
    serve(config, host=a.host, port=a.port)


if __name__ == "__main__":
    main()
