"""The aggregator and participants against a real hub over HTTP (threads, one process)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from federation_helpers import Runner, digits_definition, start_aggregator, start_participant

from fedpact.client.hub import HubError
from fedpact.common.errors import DataSchemaError, UnknownComponent
from fedpact.common.tensors import Weights
from fedpact.data.builtin import digits_federation
from fedpact.data.dataset import Dataset
from fedpact.inference import load_model
from fedpact.runtime import AggregationFailed, DataParticipant, Participant, Progress, TrainConfig


@pytest.fixture(scope="module")
def shards() -> tuple[list[Dataset], Dataset]:
    return digits_federation(3, test_fraction=0.25, seed=0)


def test_three_participants_train_a_model_that_is_stored_and_shared(make_user, shards, tmp_path: Path) -> None:
    parts, test = shards
    alice = make_user("alice")
    users = [make_user(n) for n in ("bob", "carol", "dave")]
    alice.create_task("digits", digits_definition(rounds=4))
    run = Runner()
    for name, user, data in zip(("bob", "carol", "dave"), users, parts):
        start_participant(run, user, "digits", DataParticipant(data), name, model_dir=tmp_path / name)
    start_aggregator(run, alice, "digits", eval_data=test)
    run.join()
    assert not run.errors, run.errors
    result = run.results["aggregator"]
    assert result.status == "COMPLETE" and result.rounds_completed == 4
    assert result.metrics["eval_accuracy"] >= 0.9
    assert "val_accuracy" in result.metrics  # the participants' evaluation of the final model

    task = alice.get_task("digits")
    assert task["status"] == "COMPLETE"
    assert [e["status"] for e in task["events"]] == ["CREATED", "RUNNING", "COMPLETE"]
    rounds = alice.list_rounds("digits")
    assert [r["number"] for r in rounds] == [1, 2, 3, 4]
    assert all(r["status"] == "complete" and sorted(r["participants"]) == ["bob", "carol", "dave"] for r in rounds)
    # accuracy of the global model of round 1 as measured by participants is attached to round 1
    assert "val_accuracy" in rounds[0]["metrics"]

    for name in ("bob", "carol", "dave"):
        res = run.results[name]
        assert res.status == "COMPLETE" and res.rounds_trained == [1, 2, 3, 4]
        trained = load_model(res.model_path)
        assert trained.evaluate(test.x, test.y)["accuracy"] == pytest.approx(result.metrics["eval_accuracy"], abs=1e-6)
    model = alice.list_models("digits")[0]
    assert sorted(model["contributors"]) == ["bob", "carol", "dave"]
    cm = np.array(model["metadata"]["confusion_matrix"])  # rows: true class, columns: predicted
    assert cm.shape == (10, 10) and cm.sum() == len(test)
    assert np.trace(cm) / cm.sum() == pytest.approx(result.metrics["eval_accuracy"], abs=1e-6)

    outsider = make_user("eve")
    with pytest.raises(HubError) as exc:
        outsider.download_model(model["id"], tmp_path / "stolen.safetensors")
    assert exc.value.status == 403
    assert not (tmp_path / "stolen.safetensors").exists()


class Malicious(DataParticipant):
    """Sends a corrupted update: wrong shape, wrong dtype, NaN or a missing tensor."""

    def __init__(self, data: Dataset, how: str) -> None:
        super().__init__(data)
        self.how = how

    def fit(self, weights: Weights, config: TrainConfig, progress: Progress) -> tuple[Weights, int, dict[str, float]]:
        w, n, metrics = super().fit(weights, config, progress)
        name = sorted(w)[0]
        if self.how == "shape":
            w[name] = np.zeros((3, 3), dtype=np.float32)
        elif self.how == "dtype":
            w[name] = w[name].astype(np.float64)
        elif self.how == "nan":
            w[name] = w[name].copy()
            w[name].flat[0] = np.nan
        elif self.how == "missing":
            del w[name]
        return w, n, metrics


@pytest.mark.parametrize("how,expected", [("shape", "shape"), ("dtype", "dtype"), ("nan", "NaN"), ("missing", "missing")])
def test_corrupt_updates_are_rejected_and_do_not_reach_the_model(make_user, shards, how: str, expected: str) -> None:
    parts, test = shards
    alice = make_user("alice")
    bob, carol, mallory = make_user("bob"), make_user("carol"), make_user("mallory")
    alice.create_task("digits", digits_definition(rounds=2))
    run = Runner()
    start_participant(run, bob, "digits", DataParticipant(parts[0]), "bob")
    start_participant(run, carol, "digits", DataParticipant(parts[1]), "carol")
    bad_events = start_participant(run, mallory, "digits", Malicious(parts[2], how), "mallory")
    agg_events = start_aggregator(run, alice, "digits", eval_data=test)
    run.join()
    assert not run.errors, run.errors
    rounds = alice.list_rounds("digits")
    assert all(sorted(r["participants"]) == ["bob", "carol"] for r in rounds)
    assert all(expected.lower() in (r.get("reason") or "").lower() for r in rounds), rounds
    assert "mallory" not in alice.list_models("digits")[0]["contributors"]
    warnings = [e["text"] for e in agg_events.events if e["event"] == "warning"]
    assert any("mallory" in w and expected.lower() in w.lower() for w in warnings), warnings
    assert any("rejected" in e["text"] for e in bad_events.events if e["event"] == "warning")


class Silent(DataParticipant):
    """Announces itself, then never answers a round."""

    def fit(self, weights, config, progress):  # type: ignore[no-untyped-def]
        time.sleep(30)
        raise AssertionError("unreachable")


def test_round_fails_cleanly_below_min_participants(make_user, shards) -> None:
    parts, _ = shards
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    alice.create_task("digits", digits_definition(quorum=2, min_participants=2, round_timeout_s=2))
    run = Runner()
    start_participant(run, bob, "digits", DataParticipant(parts[0]), "bob")
    start_participant(run, carol, "digits", Silent(parts[1]), "carol")
    start_aggregator(run, alice, "digits")
    run.threads["aggregator"].join(60)
    err = run.errors.get("aggregator")
    assert isinstance(err, AggregationFailed)
    assert "round 1: only 1 of 2 selected participants" in str(err) and "min_participants is 2" in str(err)
    task = alice.get_task("digits")
    assert task["status"] == "FAILED"
    assert "min_participants is 2" in task["events"][-1]["reason"]
    (r1,) = alice.list_rounds("digits")
    assert r1["status"] == "failed" and "carol" in r1["reason"]
    assert alice.list_models("digits") == []
    run.threads["bob"].join(30)
    assert "bob" in run.errors and "failed" in str(run.errors["bob"]).lower()


def test_convergence_target_stops_before_the_round_limit(make_user, shards) -> None:
    parts, test = shards
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    definition = digits_definition(quorum=2, rounds=20, convergence={"metric": "accuracy", "target": 0.85})
    alice.create_task("digits", definition)
    run = Runner()
    start_participant(run, bob, "digits", DataParticipant(parts[0]), "bob")
    start_participant(run, carol, "digits", DataParticipant(parts[1]), "carol")
    start_aggregator(run, alice, "digits", eval_data=test)
    run.join()
    assert not run.errors, run.errors
    result = run.results["aggregator"]
    assert result.rounds_completed < 20
    assert result.metrics["eval_accuracy"] >= 0.85
    assert alice.get_task("digits")["events"][-1]["reason"] == "converged"


def test_data_that_does_not_fit_is_refused_before_joining(make_user) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    alice.create_task("digits", digits_definition())
    wrong = Dataset(np.random.default_rng(0).normal(size=(50, 13)).astype(np.float32), np.arange(50) % 12)
    from fedpact.runtime import run_participant

    with pytest.raises(DataSchemaError) as exc:
        run_participant(bob, "digits", DataParticipant(wrong), progress=Progress(quiet=True))
    text = str(exc.value)
    assert "64" in text and "13" in text and "10" in text and "11" in text
    assert alice.get_task("digits")["participants"] == []


def test_unknown_model_is_refused_and_nothing_is_imported(make_user, shards) -> None:
    import sys

    alice, bob = make_user("alice"), make_user("bob")
    definition = digits_definition(model={"name": "evilpkg.backdoor"})
    alice.create_task("plugin-task", definition)
    from fedpact.runtime import run_participant

    with pytest.raises(UnknownComponent) as exc:
        run_participant(bob, "plugin-task", DataParticipant(shards[0][0]), progress=Progress(quiet=True))
    assert "evilpkg.backdoor" in str(exc.value)
    assert "evilpkg" not in sys.modules
    assert alice.get_task("plugin-task")["participants"] == []


class OwnLoop(Participant):
    """A participant that brings its own training loop: NumPy least squares on one-hot labels."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def num_samples(self) -> int:
        return len(self.y)

    def fit(self, weights: Weights, config: TrainConfig, progress: Progress) -> tuple[Weights, int, dict[str, float]]:
        onehot = np.eye(10, dtype=np.float32)[self.y]
        w = np.linalg.lstsq(self.x, onehot, rcond=None)[0].astype(np.float32)
        names = sorted(weights, key=lambda k: weights[k].ndim, reverse=True)
        out = {names[0]: w.T if weights[names[0]].shape == w.T.shape else w, names[1]: np.zeros_like(weights[names[1]])}
        return out, len(self.y), {"loss": 0.0}


def test_a_subclass_brings_its_own_training_loop(make_user, shards) -> None:
    parts, test = shards
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    alice.create_task("digits", digits_definition(quorum=2, rounds=1, data={
        "kind": "tabular", "features": 64, "label": "label", "classes": list(range(10))}))
    run = Runner()
    start_participant(run, bob, "digits", OwnLoop(parts[0].x, parts[0].y), "bob")
    start_participant(run, carol, "digits", OwnLoop(parts[1].x, parts[1].y), "carol")
    start_aggregator(run, alice, "digits", eval_data=test)
    run.join()
    assert not run.errors, run.errors
    assert run.results["aggregator"].metrics["eval_accuracy"] > 0.8


def test_each_round_samples_the_configured_fraction(make_user) -> None:
    parts, test = digits_federation(4, test_fraction=0.25, seed=2)
    alice = make_user("alice")
    names = ["bob", "carol", "dave", "erin"]
    users = [make_user(n) for n in names]
    alice.create_task("digits", digits_definition(quorum=4, min_participants=2, fraction=0.5, rounds=4))
    run = Runner()
    for name, user, data in zip(names, users, parts):
        start_participant(run, user, "digits", DataParticipant(data), name)
    start_aggregator(run, alice, "digits", eval_data=test)
    run.join()
    assert not run.errors, run.errors
    rounds = alice.list_rounds("digits")
    assert all(len(r["participants"]) == 2 and r["metrics"]["selected"] == 2 for r in rounds)
    assert len({tuple(r["participants"]) for r in rounds}) > 1, "sampling should vary between rounds"
    trained = {n: run.results[n].rounds_trained for n in names}
    for r in rounds:
        for n in names:
            assert (r["number"] in trained[n]) == (n in r["participants"])
