"""Hub settings from a TOML file, flags and --set, with flags winning and typos refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpact.hub.__main__ import config_from_args, parse_args
from fedpact.hub.config import (
    SETTINGS,
    HubConfig,
    build_config,
    parse_setting,
    read_config_file,
)


def test_defaults_are_on_and_documented() -> None:
    c = HubConfig(data_dir=Path("x"))
    assert c.max_tasks_per_user > 0 and c.max_pending_messages > 0 and c.max_poll_bytes > 0
    assert c.max_hosted_per_user > 0 and c.max_hosted_per_hub >= c.max_hosted_per_user
    assert c.hash_slots >= 1 and c.min_free_bytes > 0 and c.scheme == "http"
    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    for name in SETTINGS:
        if name.startswith(("max_", "login_", "registrations_", "hash_", "min_free", "throttle_")):
            assert f"`{name}`" in doc, f"{name} is not documented in docs/security.md"


def test_toml_file_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "hub.toml"
    f.write_text(f'data_dir = "{tmp_path / "d"}"\nmax_tasks_per_user = 7\nmax_pending_messages = 9\n')
    a = parse_args(["--config", str(f), "--max-pending-messages", "3"])
    c = config_from_args(a)
    assert (c.data_dir, c.max_tasks_per_user, c.max_pending_messages) == ((tmp_path / "d").resolve(), 7, 3)
    g = tmp_path / "hub2.toml"
    g.write_text("[hub]\nmax_hosted_per_hub = 1\n")
    assert build_config(tmp_path / "e", g, {}).max_hosted_per_hub == 1


def test_unknown_settings_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "hub.toml"
    f.write_text("max_task_per_user = 7\n")
    with pytest.raises(ValueError, match="unknown setting.*max_task_per_user"):
        read_config_file(f)
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_setting("max_task_per_user=7")
    assert parse_setting("max-tasks-per-user=7") == ("max_tasks_per_user", 7)
    assert parse_setting("hash_wait_s=2.5") == ("hash_wait_s", 2.5)


def test_tls_needs_both_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        HubConfig(data_dir=tmp_path, tls_cert=tmp_path / "c.pem")
    c = HubConfig(data_dir=tmp_path, tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem")
    assert c.scheme == "https"
