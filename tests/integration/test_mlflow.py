"""A federated task tracked in a real MLflow tracking server (SQLite store, served artifacts)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from federation_helpers import Runner, digits_definition, start_participant
from typer.testing import CliRunner

from fedpact.cli.main import app
from fedpact.client.hub import HubClient
from fedpact.data.builtin import digits_federation
from fedpact.hub.server import EmbeddedHub, free_port
from fedpact.runtime import DataParticipant
from fedpact.sdk import Client
from support import wait_for

pytest.importorskip("mlflow", reason="the mlflow extra is part of fedpact[test]")
pytestmark = pytest.mark.slow
PW = "correct-horse-9"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server process writes it until the end
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )

    def healthy() -> bool:
        assert proc.poll() is None, (root / "server.log").read_text()
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, 120, "the MLflow server")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def user(hub: EmbeddedHub, name: str) -> Client:
    c = Client(hub.url)
    c.register(name, PW, f"{name} org")
    c.login(name, PW)
    return c


def test_a_task_is_an_mlflow_run_with_params_round_metrics_model_and_card(
    hub: EmbeddedHub, mlflow_server: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    alice, bob, carol = (user(hub, n) for n in ("alice", "bob", "carol"))
    alice.create_task("tracked", digits_definition(quorum=2, min_participants=2, rounds=3))
    runner = Runner()
    for name, c, shard in zip(("bob", "carol"), (bob, carol), digits_federation(2, seed=4)[0]):
        start_participant(runner, c.hub, "tracked", DataParticipant(shard), name, model_dir=tmp_path / name)
    runner.start("aggregator", lambda: alice.run_aggregator("tracked", mlflow_uri=mlflow_server, poll_wait=0.5))
    runner.join(240)
    assert not runner.errors, runner.errors
    result = runner.results["aggregator"]
    assert result.status == "COMPLETE"

    ml = MlflowClient(tracking_uri=mlflow_server)
    exp = ml.get_experiment_by_name("fedpact/tracked")
    runs = ml.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.tags["fedpact.task"] == "tracked" and run.data.tags["fedpact.model_id"] == str(result.model_id)
    assert run.data.params["model.name"] == "softmax_regression" and run.data.params["rounds"] == "3"
    assert run.data.params["data.classes"] == json.dumps(list(range(10)))
    history = ml.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3]
    rounds = alice.rounds("tracked")
    assert [m.value for m in history] == pytest.approx([r["metrics"]["train_loss"] for r in rounds])
    names = sorted(a.path for a in ml.list_artifacts(run.info.run_id, "model"))
    assert names == ["model/model_card.json", f"model/tracked-model-{result.model_id}.safetensors"]
    card_path = ml.download_artifacts(run.info.run_id, "model/model_card.json", str(tmp_path))
    card = json.loads(Path(card_path).read_text())
    assert card["model_id"] == result.model_id and [r["number"] for r in card["rounds"]] == [1, 2, 3]
    model_path = ml.download_artifacts(run.info.run_id, f"model/tracked-model-{result.model_id}.safetensors",
                                       str(tmp_path))
    assert card["sha256"] == alice.models("tracked")[-1]["sha256"]
    import hashlib

    assert hashlib.sha256(Path(model_path).read_bytes()).hexdigest() == card["sha256"]


def test_an_unreachable_tracking_server_stops_aggregate_before_training(
    hub: EmbeddedHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = HubClient(hub.url)
    alice.register("alice", PW, "Acme")
    token = alice.login("alice", PW)
    alice.create_task("untracked", digits_definition(quorum=1, min_participants=1))
    monkeypatch.setenv("FEDPACT_HUB", hub.url)
    monkeypatch.setenv("FEDPACT_TOKEN", token)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["aggregate", "untracked", "--mlflow-uri", dead], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert f"cannot use the MLflow tracking server at {dead}" in result.output
    assert alice.get_task("untracked")["status"] == "CREATED"  # nothing started
    assert alice.list_rounds("untracked") == []


def test_the_hosted_aggregator_tracks_the_task_too(hub: EmbeddedHub, mlflow_server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from fedpact.client.hub import HubError

    alice, bob = user(hub, "alice"), user(hub, "bob")
    alice.create_task("hosted-tracked", digits_definition(quorum=1, min_participants=1, rounds=2))
    with pytest.raises(HubError) as refused:
        alice.host_aggregator("hosted-tracked", mlflow_uri="ftp://127.0.0.1/x")
    assert refused.value.status == 422
    assert alice.hosted_aggregator("hosted-tracked")["state"] == "none"  # the refusal started nothing
    runner = Runner()
    start_participant(runner, bob.hub, "hosted-tracked", DataParticipant(digits_federation(1, seed=6)[0][0]), "bob",
                      model_dir=tmp_path / "bob")
    alice.host_aggregator("hosted-tracked", mlflow_uri=mlflow_server)
    runner.join(240)
    assert not runner.errors, runner.errors
    wait_for(lambda: not alice.hosted_aggregator("hosted-tracked")["running"], 60, "the hosted aggregator to exit")
    assert alice.get_task("hosted-tracked")["status"] == "COMPLETE", alice.hosted_aggregator_log("hosted-tracked")
    ml = MlflowClient(tracking_uri=mlflow_server)
    exp = ml.get_experiment_by_name("fedpact/hosted-tracked")
    assert exp is not None, alice.hosted_aggregator_log("hosted-tracked")
    (run,) = ml.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in ml.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
