"""The Python API a notebook user calls: every workflow step on an embedded hub."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import fedpact
from fedpact.data.builtin import digits_federation
from support import wait_for


def test_the_whole_workflow_from_python(tmp_path: Path) -> None:
    parts, test = digits_federation(2, seed=3)
    with fedpact.Client.embedded(tmp_path / "hub") as alice:
        alice.register("alice", "alice-password", "Acme")
        alice.login("alice", "alice-password")
        definition = tmp_path / "task.yaml"
        definition.write_text(
            "model: {name: softmax_regression}\nrounds: 3\nquorum: 2\nmin_participants: 2\n"
            "learning_rate: 0.1\ndata: {kind: tabular, features: 64, classes: [0,1,2,3,4,5,6,7,8,9], standardize: true}\n"
        )
        task = alice.create_task("digits", definition, "bundled digits")
        assert task["status"] == "CREATED"
        others = {}
        for name in ("bob", "carol"):
            c = fedpact.Client(alice.url)
            c.register(name, f"{name}-password", f"{name} GmbH")
            c.login(name, f"{name}-password")
            others[name] = c
        assert [t["name"] for t in others["bob"].list_tasks(q="digits")] == ["digits"]
        assert others["bob"].get_task("digits")["definition"]["rounds"] == 3
        assert others["bob"].join("digits")["status"] == "PENDING"  # the default admission is approval
        assert others["bob"].assignments() == []
        assert [r["user"] for r in alice.requests("digits")] == ["bob"]
        assert alice.approve("digits", "bob")["status"] == "ADMITTED"
        assert [t["name"] for t in others["bob"].assignments()] == ["digits"]
        assert others["carol"].assignments() == []

        results = {}

        def participate(name: str, data: fedpact.Dataset) -> None:
            results[name] = others[name].run_participant(
                "digits", data, model_dir=tmp_path / name, progress=fedpact.Progress(quiet=True))

        threads = [threading.Thread(target=participate, args=(n, d)) for n, d in zip(others, parts)]
        for t in threads:
            t.start()
        # carol's participant asks to join and waits; alice admits her as a creator would
        wait_for(lambda: [r["user"] for r in alice.requests("digits")] == ["carol"], 30, "carol's request")
        alice.approve("digits", "carol")
        assert {m["user"]: m["status"] for m in alice.members("digits")} == {"bob": "ADMITTED", "carol": "ADMITTED"}
        outcome = alice.run_aggregator("digits", eval_data=test, progress=fedpact.Progress(quiet=True))
        for t in threads:
            t.join(60)
        assert outcome.status == "COMPLETE" and outcome.rounds_completed == 3
        assert results["bob"].status == results["carol"].status == "COMPLETE"
        assert [r["number"] for r in alice.rounds("digits")] == [1, 2, 3]

        path = others["carol"].download_model("digits", tmp_path)
        model = fedpact.load_model(path)
        predictions = model.predict(test.x)
        assert set(np.unique(predictions)) <= set(range(10))
        assert np.mean(predictions == test.y) == pytest.approx(outcome.metrics["eval_accuracy"], abs=1e-6)
        assert model.metadata["standardized"] is True
        for c in others.values():
            c.close()
    # the embedded hub has stopped with the client
    with pytest.raises(fedpact.FedpactError):
        fedpact.HubClient(alice.url, retry_for_s=0.5).health()


def test_importing_fedpact_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, fedpact, fedpact.hub; print('torch' in sys.modules, 'fedpact.runtime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_load_data_reads_a_file_as_the_task_says(tmp_path: Path) -> None:
    data = {"kind": "tabular", "features": ["age", "cp"], "label": "num", "classes": [0, 1], "header": False,
            "columns": ["age", "cp", "num"], "missing": "drop", "categorical": {"cp": [1, 2]}}
    site = tmp_path / "site.data"
    site.write_text("50,1,0\n?,2,1\n61,2,1\n")
    with fedpact.Client.embedded(tmp_path / "hub") as alice:
        alice.register("alice", "alice-password", "Acme")
        alice.login("alice", "alice-password")
        alice.create_task("prepared", {"model": {"name": "logistic_regression"}, "data": data}, "declared preparation")
        ds = alice.load_data("prepared", site)
        assert ds.feature_names == ["age", "cp"] and ds.y.tolist() == [0, 1]  # the row with a gap is dropped
        assert alice.load_data("prepared", site, missing="impute").x.shape == (3, 2)
        with pytest.raises(ValueError, match="missing must be 'error', 'drop' or 'impute'"):
            alice.load_data("prepared", site, missing="guess")
def test_admission_decisions_from_python(tmp_path: Path) -> None:
    definition = {"model": {"name": "softmax_regression"}, "data": {"features": 4, "classes": [0, 1]}}
    with fedpact.Client.embedded(tmp_path / "hub") as alice:
        alice.register("alice", "alice-password", "Acme")
        alice.login("alice", "alice-password")
        users = {}
        for name, org in (("bob", "Bob GmbH"), ("carol", "Carol AG"), ("dave", "Dave SA")):
            users[name] = fedpact.Client(alice.url)
            users[name].register(name, f"{name}-password", org)
            users[name].login(name, f"{name}-password")
        alice.create_task("by-invitation", {**definition, "admission": {"mode": "invite", "organisations": ["Bob GmbH"]}})
        assert users["bob"].join("by-invitation")["status"] == "ADMITTED"
        with pytest.raises(fedpact.HubError) as refused:
            users["carol"].join("by-invitation")
        assert refused.value.status == 403 and "ask its creator to invite you" in str(refused.value)

        alice.create_task("gated", definition)
        for name in users:
            users[name].join("gated")
        alice.approve("gated", "bob")
        alice.decline("gated", "carol")
        assert [r["user"] for r in alice.requests("gated")] == ["dave"]
        alice.remove("gated", "bob")
        with pytest.raises(fedpact.HubError) as conflict:
            alice.remove("gated", "dave")  # only admitted members can be removed
        assert conflict.value.status == 409
        assert {m["user"]: m["status"] for m in alice.members("gated")} == {
            "bob": "REMOVED", "carol": "DECLINED", "dave": "PENDING"
        }
        assert users["carol"].get_task("gated")["membership"] == "DECLINED"
        for c in users.values():
            c.close()
