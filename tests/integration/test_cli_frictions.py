"""Each friction a new user met in the terminal (issue 10), fixed and held by a test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from federation_helpers import (
    Runner,
    digits_definition,
    start_aggregator,
    start_participant,
)
from typer.testing import CliRunner

from fedpact.cli.hints import did_you_mean, for_terminal
from fedpact.cli.main import app
from fedpact.client.hub import (
    HubClient,
    HubUnreachable,
    normalise_hub_url,
    outage_tolerance_s,
)
from fedpact.data.builtin import digits_federation
from fedpact.hub.server import EmbeddedHub, free_port
from fedpact.runtime import DataParticipant

PW = "correct-horse-9"


@pytest.fixture
def cli(hub: EmbeddedHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run the CLI as ``user``; no FEDPACT_HUB unless ``hub_env`` is set, so --hub handling shows."""
    monkeypatch.delenv("FEDPACT_TOKEN", raising=False)
    monkeypatch.delenv("FEDPACT_HUB", raising=False)
    runner = CliRunner()

    def run(user: str, *args: str, code: int = 0, input: str | None = None, columns: int = 200,
            hub_env: bool = True) -> str:
        monkeypatch.setenv("FEDPACT_HOME", str(tmp_path / "home" / user))
        if hub_env:
            monkeypatch.setenv("FEDPACT_HUB", hub.url)
        else:
            monkeypatch.delenv("FEDPACT_HUB", raising=False)
        result = runner.invoke(app, list(args), input=input, env={"COLUMNS": str(columns)})
        assert result.exit_code == code, f"exit {result.exit_code} for {args}:\n{result.output}"
        return result.output

    return run


def signup(cli: Any, name: str) -> None:
    cli(name, "register", name, "--organisation", f"{name} org", "--password", PW)
    cli(name, "login", name, "--password", PW)


def definition_file(tmp_path: Path, text: str | None = None, **overrides: Any) -> Path:
    p = tmp_path / "task.yaml"
    p.write_text(text if text is not None else yaml.safe_dump(digits_definition(**overrides)))
    return p


# -- reaching the hub ---------------------------------------------------------------------
def test_urls_without_scheme_or_with_the_api_suffix_are_normalised() -> None:
    assert normalise_hub_url("127.0.0.1:8470") == "http://127.0.0.1:8470"
    assert normalise_hub_url("http://hub.example:8470/api/v1/") == "http://hub.example:8470"
    assert normalise_hub_url(" https://hub.example/fed/api/v1 ") == "https://hub.example/fed"
    assert HubClient("localhost:1/api/v1").url == "http://localhost:1"


def test_a_typed_url_reaches_the_hub_and_register_names_it_in_the_next_step(cli, hub: EmbeddedHub) -> None:
    typed = hub.url.removeprefix("http://") + "/api/v1"
    out = cli("alice", "register", "alice", "-o", "Acme", "--password", PW, "--hub", typed, hub_env=False)
    # Without FEDPACT_HUB the next command would go to 127.0.0.1:8470, so the hint carries --hub.
    assert f"now run 'fedpact login alice --hub {hub.url}'" in out
    assert "logged in" in cli("alice", "login", "alice", "--password", PW, "--hub", typed, hub_env=False)
    # the login made this hub the default: later commands need no --hub
    assert "alice (Acme)" in cli("alice", "whoami", hub_env=False)


def test_connection_refused_on_first_contact_fails_fast_with_what_to_do(cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = HubClient(url)
    with pytest.raises(HubUnreachable) as caught:
        client.health()
    assert f"is the hub running at {url}? set --hub or FEDPACT_HUB" in str(caught.value)
    # The retry budget of a first contact is a few seconds, not the outage tolerance.
    assert caught.value.budget_s <= 5 and caught.value.waited_s <= caught.value.budget_s
    assert client.retry_for_s >= 600
    out = cli("alice", "register", "alice", "-o", "Acme", "--password", PW, "--hub", url.removeprefix("http://"),
              hub_env=False, code=1)
    assert f"is the hub running at {url}? set --hub or FEDPACT_HUB" in " ".join(out.split())


def test_the_outage_tolerance_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDPACT_OUTAGE_TOLERANCE_S", raising=False)
    assert outage_tolerance_s() == 600
    monkeypatch.setenv("FEDPACT_OUTAGE_TOLERANCE_S", "42")
    assert outage_tolerance_s() == 42 and HubClient("127.0.0.1:1").retry_for_s == 42


def test_after_first_contact_an_outage_is_announced_and_retried(tmp_path: Path) -> None:
    notices: list[str] = []
    hub = EmbeddedHub(tmp_path / "hub")
    hub.start()
    client = HubClient(hub.url, retry_for_s=1.5, on_notice=notices.append)
    assert client.health()["status"] == "ok"
    hub.stop()
    with pytest.raises(HubUnreachable) as caught:
        client.health()
    assert caught.value.budget_s == 1.5 and "unreachable for" in str(caught.value)
    assert notices and notices[0].startswith(f"hub unreachable at {hub.url}") and "retrying" in notices[0]


# -- tasks and models ---------------------------------------------------------------------
def test_mistyped_task_gets_cli_hints_and_did_you_mean(cli, tmp_path: Path) -> None:
    signup(cli, "alice")
    cli("alice", "task", "create", "heart-study", "--definition", str(definition_file(tmp_path)))
    out = " ".join(cli("alice", "join", "heart-stduy", code=1).split())
    assert "'fedpact task list'" in out and "/api/v1" not in out
    assert "did you mean 'heart-study'?" in out
    assert did_you_mean("zzz", ["heart-study"]) == ""


def test_data_hints_use_flags_not_python_keywords(cli, tmp_path: Path) -> None:
    signup(cli, "alice")
    cli("alice", "task", "create", "task-one", "--definition", str(definition_file(tmp_path)))
    csv = tmp_path / "gaps.csv"
    csv.write_text("a,b,label\n1,,0\n2,3,1\n")
    out = " ".join(cli("alice", "participate", "task-one", "--data", str(csv), code=1).split())
    assert "--missing drop" in out and "missing='drop'" not in out
    out = " ".join(cli("alice", "participate", "task-one", "--data", str(csv), "--label", "y", code=1).split())
    assert "--label COLUMN" in out and "label='" not in out
    assert for_terminal("join it first with POST /api/v1/tasks/x/join") == "join it first with 'fedpact join x'"


def test_password_is_prompted_not_marked_required(cli) -> None:
    for command in ("register", "login"):
        text = cli("alice", command, "--help", columns=120)
        password_lines = [line for line in text.splitlines() if "--password" in line]
        assert password_lines and all("required" not in line.lower() for line in password_lines), text
    out = cli("alice", "register", "alice", "-o", "Acme", input=f"{PW}\n{PW}\n")
    assert "registered alice" in out


def test_declining_delete_keeps_the_task_and_exits_0(cli, tmp_path: Path, hub: EmbeddedHub) -> None:
    signup(cli, "alice")
    cli("alice", "task", "create", "keep-me", "--definition", str(definition_file(tmp_path)))
    out = cli("alice", "task", "delete", "keep-me", input="n\n")
    assert "task keep-me kept (nothing deleted)" in out
    assert "keep-me" in cli("alice", "task", "list")


def test_hosted_status_names_the_task(cli, tmp_path: Path) -> None:
    signup(cli, "alice")
    cli("alice", "task", "create", "named-task", "--definition", str(definition_file(tmp_path)))
    assert "hosted aggregator of task named-task: none" in cli("alice", "hosted", "status", "named-task")


def test_a_yaml_error_is_one_line(cli, tmp_path: Path) -> None:
    signup(cli, "alice")
    bad = definition_file(tmp_path, text="rounds: 3\nmodel: [unclosed\n")
    out = cli("alice", "task", "create", "task-bad", "--definition", str(bad), columns=400, code=1)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "not valid YAML: line" in lines[0], out
    assert "no tasks match" in cli("alice", "task", "list")


def _finished_task(hub: EmbeddedHub, tmp_path: Path) -> HubClient:
    """A two-round softmax task with two participants, run to COMPLETE through the hub."""
    alice = HubClient(hub.url)
    alice.register("alice", PW, "Acme")
    alice.login("alice", PW)
    alice.create_task("digits", digits_definition(quorum=2, min_participants=2, rounds=2))
    runner = Runner()
    shards, _ = digits_federation(2, seed=5)
    for name, shard in zip(("bob", "carol"), shards):
        c = HubClient(hub.url)
        c.register(name, PW, f"{name} org")
        c.login(name, PW)
        start_participant(runner, c, "digits", DataParticipant(shard), name, model_dir=tmp_path / name)
    start_aggregator(runner, alice, "digits")
    runner.join(180)
    assert not runner.errors, runner.errors
    return alice


def test_a_finished_task_shows_in_80_columns_and_downloads_into_a_new_directory(
    cli, hub: EmbeddedHub, tmp_path: Path
) -> None:
    # One federation serves both checks: it is the expensive part.
    _finished_task(hub, tmp_path)
    cli("alice", "login", "alice", "--password", PW)
    out = cli("alice", "task", "show", "digits", columns=80)
    assert "…" not in out, out
    header = next(line for line in out.splitlines() if "round" in line and "status" in line)
    assert header.split().count("participants") == 1, out  # was two: the names and the metric's count
    assert "null" not in out and '"model"' not in out, out  # YAML without unset fields, not JSON
    rounds = json.loads(cli("alice", "task", "show", "digits", "--json"))["rounds"]
    samples = int(rounds[-1]["metrics"]["num_samples"])
    assert f" {samples} " in out and f"{samples}.0000" not in out, out
    assert "rounds: 2" in out and "name: softmax_regression" in out

    target = tmp_path / "newdir"
    out = cli("alice", "model", "download", "digits", "-o", f"{target}/")
    assert target.is_dir(), out
    files = list(target.glob("*.safetensors"))
    assert len(files) == 1 and files[0].name.startswith("digits-model-"), out


def test_task_list_never_elides_a_name_at_80_columns(cli, tmp_path: Path) -> None:
    signup(cli, "alice")
    name = "cardiology-across-four-hospitals-2026"
    cli("alice", "task", "create", name, "--definition", str(definition_file(tmp_path)))
    out = cli("alice", "task", "list", columns=80)
    assert "…" not in out
    assert any(name in line for line in out.splitlines()), out  # whole, on one line, ready to copy
