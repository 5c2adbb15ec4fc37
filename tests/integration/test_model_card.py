"""The model card: assembled by the hub from what it recorded, plus the creator's terms."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from federation_helpers import (
    Runner,
    digits_definition,
    start_aggregator,
    start_participant,
)
from typer.testing import CliRunner

from fedpact.cli.main import app
from fedpact.client.hub import HubClient, HubError
from fedpact.data.builtin import digits_federation
from fedpact.hub.server import EmbeddedHub
from fedpact.runtime import DataParticipant

PW = "correct-horse-9"


def user(hub: EmbeddedHub, name: str) -> HubClient:
    c = HubClient(hub.url)
    c.register(name, PW, f"{name} org")
    c.login(name, PW)
    return c


def test_card_has_definition_schema_rounds_hashes_contributors_and_terms(hub: EmbeddedHub, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob, carol, mallory = (user(hub, n) for n in ("alice", "bob", "carol", "mallory"))
    alice.create_task("digits", digits_definition(quorum=2, min_participants=2, rounds=3), "Digits across two labs")
    runner = Runner()
    for name, c, shard in zip(("bob", "carol"), (bob, carol), digits_federation(2, seed=2)[0]):
        start_participant(runner, c, "digits", DataParticipant(shard), name, model_dir=tmp_path / name)
    start_aggregator(runner, alice, "digits")
    runner.join(180)
    assert not runner.errors, runner.errors
    model = alice.list_models("digits")[-1]

    card = alice.model_card(model["id"])
    assert card["task_name"] == "digits" and card["description"] == "Digits across two labs"
    assert card["licence"] is None
    assert card["definition"]["rounds"] == 3 and card["data_schema"]["features"] == 64
    assert sorted(card["contributors"]) == ["bob", "carol"] and card["sha256"] == model["sha256"]
    assert [r["number"] for r in card["rounds"]] == [1, 2, 3]
    assert all(r["metrics"]["train_loss"] > 0 and sorted(r["participants"]) == ["bob", "carol"] for r in card["rounds"])
    hashes = [r["global_model_sha256"] for r in card["rounds"]]
    assert all(h and len(h) == 64 for h in hashes) and len(set(hashes)) == 3  # one global model per round
    downloaded = bob.download_model(model["id"], tmp_path / "m.safetensors")
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == card["sha256"]

    updated = alice.set_model_card(model["id"], description="Handwritten digits, 2 labs", licence="CC-BY-4.0")
    assert updated["description"] == "Handwritten digits, 2 labs" and updated["licence"] == "CC-BY-4.0"
    assert bob.model_card(model["id"])["licence"] == "CC-BY-4.0"

    # refusals change nothing
    with pytest.raises(HubError) as refused:
        bob.set_model_card(model["id"], licence="proprietary")
    assert refused.value.status == 403 and "only the creator" in str(refused.value)
    with pytest.raises(HubError) as refused:
        mallory.model_card(model["id"])
    assert refused.value.status == 403
    with pytest.raises(HubError) as refused:
        alice.set_model_card(model["id"], licence="x" * 201)
    assert refused.value.status == 422
    assert alice.model_card(model["id"])["licence"] == "CC-BY-4.0"
    assert alice._call("GET", f"/tasks/digits/models/{model['id']}/card")["model_id"] == model["id"]
    with pytest.raises(HubError) as refused:
        alice._call("GET", f"/tasks/other-task/models/{model['id']}/card")
    assert refused.value.status == 404

    monkeypatch.setenv("FEDPACT_HUB", hub.url)
    monkeypatch.setenv("FEDPACT_TOKEN", alice.token or "")
    result = CliRunner().invoke(app, ["model", "card", str(model["id"])], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["licence"] == "CC-BY-4.0"
