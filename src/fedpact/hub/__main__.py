"""``python -m fedpact.hub``: run a hub in the foreground with one command.

Every ``HubConfig`` setting is a flag (``max_tasks_per_user`` is ``--max-tasks-per-user``)
and may also come from a TOML file given with ``--config``; a flag wins over the file.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from fedpact.hub.config import HubConfig, build_config
from fedpact.hub.server import DEFAULT_HOST, DEFAULT_PORT, serve

_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "Path | None": Path, "str | None": str}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fedpact.hub", description="Run a fedpact hub.")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the database (by default) and the blobs live [$FEDPACT_HUB_DIR or ~/.fedpact/hub]",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on [{DEFAULT_HOST}]")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on [{DEFAULT_PORT}]")
    p.add_argument("--config", type=Path, default=None, help="a TOML file of settings (see docs/security.md)")
    for f in fields(HubConfig):
        if f.name == "data_dir":
            continue
        env = "FEDPACT_" + f.name.upper()
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "bool":
            p.add_argument(flag, dest=f.name, action="store_true", default=None, help=f"[${env}]")
            continue
        kind = _TYPES.get(str(f.type), str)
        p.add_argument(flag, dest=f.name, type=kind, default=os.environ.get(env), help=f"[${env} or {f.default}]")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> HubConfig:
    flags = {f.name: getattr(a, f.name) for f in fields(HubConfig) if f.name != "data_dir"}
    fallback = Path(os.environ.get("FEDPACT_HUB_DIR", "~/.fedpact/hub")).expanduser()
    return build_config(a.data_dir, a.config, {k: v for k, v in flags.items() if v is not None}, fallback)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    try:
        config = config_from_args(a)
    except (OSError, ValueError, TypeError) as exc:
        raise SystemExit(f"fedpact hub: {exc}") from None
    print(f"fedpact hub on {config.scheme}://{a.host}:{a.port} (data in {config.data_dir})", flush=True)
    serve(config, host=a.host, port=a.port)


if __name__ == "__main__":
    main()
