"""Where the CLI keeps who you are on which hub.

Tokens are stored per hub URL in ``$FEDPACT_HOME/credentials.json`` (default
``~/.config/fedpact``), readable by the owner only, so ``fedpact login`` once is enough
for every later command against that hub.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_HUB = "http://127.0.0.1:8470"


def config_dir() -> Path:
    return Path(os.environ.get("FEDPACT_HOME") or Path.home() / ".config" / "fedpact")


def _path() -> Path:
    return config_dir() / "credentials.json"


def load() -> dict[str, Any]:
    p = _path()
    if not p.exists():
        return {"hubs": {}, "default_hub": None}
    try:
        data = json.loads(p.read_text())
    except ValueError:
        return {"hubs": {}, "default_hub": None}
    data.setdefault("hubs", {})
    data.setdefault("default_hub", None)
    return data


def save(data: dict[str, Any]) -> None:
    p = _path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, p)


def resolve_hub(explicit: str | None) -> str:
    """The hub URL to use: --hub, then $FEDPACT_HUB, then the last one logged into."""
    from fedpact.client.hub import normalise_hub_url

    url = explicit or os.environ.get("FEDPACT_HUB") or load().get("default_hub") or DEFAULT_HUB
    return normalise_hub_url(url)


def remember(hub: str, user: str, token: str) -> None:
    data = load()
    data["hubs"][hub] = {"user": user, "token": token}
    data["default_hub"] = hub
    save(data)


def forget(hub: str) -> None:
    data = load()
    data["hubs"].pop(hub, None)
    save(data)


def token_for(hub: str) -> tuple[str | None, str | None]:
    """(user, token) saved for ``hub``; $FEDPACT_TOKEN overrides the saved token."""
    entry = load()["hubs"].get(hub, {})
    return entry.get("user"), os.environ.get("FEDPACT_TOKEN") or entry.get("token")
