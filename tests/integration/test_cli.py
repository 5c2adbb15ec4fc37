"""The ``fedpact`` command line against a real hub: each step, and each mistake a user makes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from fedpact.cli.main import app

PW = "correct-horse-9"


@pytest.fixture
def cli(hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FEDPACT_HUB", hub.url)
    monkeypatch.delenv("FEDPACT_TOKEN", raising=False)
    runner = CliRunner()

    def run(user: str, *args: str, code: int = 0, input: str | None = None) -> str:
        monkeypatch.setenv("FEDPACT_HOME", str(tmp_path / "home" / user))
        result = runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})
        out = result.output
        assert result.exit_code == code, f"exit {result.exit_code} for {args}:\n{out}"
        return out

    return run


def definition_file(tmp_path: Path, **overrides) -> Path:
    d = {
        "model": {"name": "softmax_regression"},
        "rounds": 2,
        "quorum": 1,
        "data": {"kind": "tabular", "features": 64, "classes": list(range(10))},
    }
    d.update(overrides)
    p = tmp_path / "task.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def signup(cli, name: str) -> None:
    assert "registered" in cli(name, "register", name, "--organisation", f"{name} org", "--password", PW)
    assert "logged in" in cli(name, "login", name, "--password", PW)


def test_the_task_workflow_from_a_terminal(cli, tmp_path: Path) -> None:
    signup(cli, "alice")
    signup(cli, "bob")
    assert "alice" in cli("alice", "whoami")
    out = cli("alice", "task", "create", "heart-study", "--definition", str(definition_file(tmp_path)),
              "--description", "cardiology across hospitals")
    assert "created task heart-study" in out
    listing = cli("bob", "task", "list", "--search", "cardio")
    assert "heart-study" in listing and "CREATED" in listing
    assert "no tasks match" in cli("bob", "task", "list", "--status", "running")
    assert "no tasks match" in cli("bob", "task", "list", "--joined")
    assert "asked to join heart-study" in cli("bob", "join", "heart-study")
    assert "your request to join: PENDING" in cli("bob", "task", "show", "heart-study")
    assert "no tasks match" in cli("bob", "task", "list", "--joined")
    assert "403" in cli("bob", "task", "approve", "heart-study", "bob", code=1)
    pending = cli("alice", "task", "requests", "heart-study")
    assert "bob" in pending and "bob org" in pending
    assert "admitted bob" in cli("alice", "task", "approve", "heart-study", "bob")
    assert "no pending requests" in cli("alice", "task", "requests", "heart-study")
    assert "heart-study" in cli("bob", "task", "list", "--joined")
    assert "heart-study" in cli("bob", "assignments")
    shown = json.loads(cli("bob", "task", "show", "heart-study", "--json"))
    assert shown["participants"] == ["bob"] and shown["definition"]["rounds"] == 2 and shown["rounds"] == []
    assert "participants: bob" in cli("bob", "task", "show", "heart-study")
    # only the creator may cancel or delete
    assert "403" in cli("bob", "task", "cancel", "heart-study", code=1)
    assert "403" in cli("bob", "task", "delete", "heart-study", "--yes", code=1)
    assert "CANCELLED" in cli("alice", "task", "cancel", "heart-study")
    assert "no open assignments" in cli("bob", "assignments")
    assert "deleted" in cli("alice", "task", "delete", "heart-study", "--yes")
    assert "no tasks match" in cli("bob", "task", "list")
    assert "logged out" in cli("bob", "logout")
    assert "not logged in" in cli("bob", "whoami", code=1)


def test_creator_declines_and_removes_from_a_terminal(cli, tmp_path: Path) -> None:
    for name in ("alice", "bob", "carol"):
        signup(cli, name)
    cli("alice", "task", "create", "gated", "--definition", str(definition_file(tmp_path)))
    cli("bob", "join", "gated")
    cli("carol", "join", "gated")
    assert "declined carol" in cli("alice", "task", "decline", "gated", "carol")
    assert "declined your request" in cli("carol", "join", "gated", code=1)
    assert "admitted bob" in cli("alice", "task", "approve", "gated", "bob")
    refused = cli("alice", "task", "decline", "gated", "bob", code=1)
    assert "409" in refused and "already admitted" in refused
    assert "participants: bob" in cli("alice", "task", "show", "gated")  # the refusal changed nothing
    assert "removed bob" in cli("alice", "task", "remove", "gated", "bob")
    assert "your request to join: REMOVED" in cli("bob", "task", "show", "gated")
    assert "removed you" in cli("bob", "join", "gated", code=1)
    assert "no tasks match" in cli("bob", "task", "list", "--joined")
    assert "404" in cli("alice", "task", "remove", "gated", "nobody-here", code=1)


def test_mistakes_get_one_clear_line_and_change_nothing(cli, tmp_path: Path) -> None:
    signup(cli, "alice")
    assert "is taken" in cli("carol", "register", "alice", "--organisation", "x", "--password", PW, code=1)
    assert "wrong user name or password" in cli("carol", "login", "alice", "--password", "not-the-password", code=1)
    assert "not logged in" in cli("carol", "task", "list", code=1)

    bad = definition_file(tmp_path, rounds=0)
    out = cli("alice", "task", "create", "task-one", "--definition", str(bad), code=1)
    assert "rounds" in out and "422" in out
    typo = definition_file(tmp_path, local_epoch=3)
    assert "local_epoch" in cli("alice", "task", "create", "task-one", "--definition", str(typo), code=1)
    unknown = definition_file(tmp_path, model={"name": "resnet"})
    assert "unknown model 'resnet'" in cli("alice", "task", "create", "task-one", "--definition", str(unknown), code=1)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed")
    assert "not valid YAML" in cli("alice", "task", "create", "task-one", "--definition", str(broken), code=1)
    assert "cannot read" in cli("alice", "task", "create", "task-one", "--definition", str(tmp_path / "nope.yaml"), code=1)
    assert "no tasks match" in cli("alice", "task", "list")

    assert "404" in cli("alice", "join", "no-such-task", code=1)
    cli("alice", "task", "create", "task-one", "--definition", str(definition_file(tmp_path)))
    assert "409" in cli("alice", "task", "create", "task-one", "--definition", str(definition_file(tmp_path)), code=1)
    assert "no stored model" in cli("alice", "model", "download", "task-one", code=1)
    missing = cli("alice", "participate", "task-one", "--data", str(tmp_path / "absent.csv"), code=1)
    assert "absent.csv" in missing


def test_hub_command_serves_until_interrupted(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedpact", "hub", "--port", str(port), "--data-dir", str(tmp_path / "hub")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "hub did not start"
                time.sleep(0.2)
        assert r.json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=60).status_code == 200
        assert (tmp_path / "hub" / "hub.db").exists()
    finally:
        proc.terminate()
        proc.wait(15)


def test_participate_reads_the_data_as_the_definition_says(cli, tmp_path: Path) -> None:
    """No --label: the definition's data.label, header: false and columns apply; the data check runs before joining."""
    signup(cli, "alice")
    signup(cli, "bob")
    cols = ["a", "b", "num"]
    d = definition_file(tmp_path, data={"kind": "tabular", "features": ["a", "b"], "label": "num", "classes": [0, 1],
                                        "header": False, "columns": cols})
    cli("alice", "task", "create", "headerless", "--definition", str(d))
    data = tmp_path / "site.data"
    data.write_text("1.0,2.0,0\n3.0,4.0,7\n")
    out = cli("bob", "participate", "headerless", "--data", str(data), code=1)
    # the label column came from the definition: its value 7 is checked against the classes
    assert "label values not among the task's classes [0, 1]: 7 (1 samples)" in out
    assert json.loads(cli("alice", "task", "show", "headerless", "--json"))["participants"] == []
    out = cli("bob", "participate", "headerless", "--data", str(data), "--label", "b", code=1)
    assert "the label column 'b' cannot also be a feature" in out
