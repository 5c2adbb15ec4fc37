"""Simulated federations: the real round objects, strategies, privacy modes and training code
driven through memory by ``fedpact.simulate``; no hub, no accounts."""

from __future__ import annotations

import numpy as np
import pytest
from federation_helpers import digits_definition

import fedpact
from fedpact.common.errors import FedpactError
from fedpact.data.builtin import load_digits_dataset
from fedpact.data.loaders import save_csv
from fedpact.simulation import compare, simulate
from fedpact.simulation.data import TEST_FRACTION

QUIET = {"progress": False}


def test_a_non_iid_simulation_learns_and_saves_a_model_load_model_reads(tmp_path) -> None:
    res = fedpact.simulate(digits_definition(rounds=4), 30, partition="dirichlet:0.3", backend="inline", seed=2, **QUIET)
    h = res.history
    assert res.status == "COMPLETE" and list(h["round"]) == [1, 2, 3, 4]
    assert {"participants", "epsilon", "train_loss", "eval_accuracy", "eval_loss", "val_accuracy"} <= set(h.columns)
    assert (h["participants"] == 30).all() and h["epsilon"].isna().all()
    assert h["eval_accuracy"].iloc[-1] > 0.8 > h["eval_accuracy"].iloc[0] - 0.5
    model = fedpact.load_model(res.save_model(tmp_path / "model.safetensors"))
    assert model.metadata["standardized"] and model.metadata["privacy"] == "open"
    _, test = load_digits_dataset().split(TEST_FRACTION, 2)
    # The saved model is the simulation's final model: it scores on the test set what the last round recorded.
    assert model.evaluate(test.x, test.y)["accuracy"] == pytest.approx(h["eval_accuracy"].iloc[-1])


def test_same_seed_same_history_on_the_process_backend_another_seed_another() -> None:
    kw = dict(partition="dirichlet:0.5", backend="process", workers=2, fraction=0.3, dropout=0.2, rounds=3, **QUIET)
    a, b, c = (simulate(digits_definition(), 40, seed=s, **kw) for s in (7, 7, 8))
    drop = ["seconds", "sim_clock", "sim_seconds"]
    ha, hb = a.history.drop(columns=drop), b.history.drop(columns=drop)
    assert ha.equals(hb)
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert not ha.equals(c.history.drop(columns=drop))


def test_secure_mode_recovers_from_dropouts_and_matches_the_open_mean() -> None:
    kw = dict(partition="iid", backend="inline", seed=4, dropout=0.25, rounds=2, **QUIET)
    secure = simulate(digits_definition(min_participants=3, quorum=3, privacy={"mode": "secure"}), 12, **kw)
    open_ = simulate(digits_definition(min_participants=3, quorum=3), 12, **kw)
    h = secure.history
    assert secure.status == "COMPLETE"
    assert (h["dropped"] > 0).any() and (h["participants"] == h["selected"] - h["dropped"]).all()
    # The same participants dropped out in both runs; secure aggregation's recovery unmasked the same
    # sum the open mode computed in the clear (up to its quantisation).
    assert (open_.history["participants"] == h["participants"]).all()
    for k in open_.weights:
        assert np.allclose(secure.weights[k], open_.weights[k], atol=1e-3)
    assert not all(np.array_equal(secure.weights[k], open_.weights[k]) for k in open_.weights)


def test_secure_mode_with_too_many_dropouts_fails_the_round_and_keeps_the_model() -> None:
    d = digits_definition(min_participants=3, quorum=3, privacy={"mode": "secure"})
    res = simulate(d, 12, partition="iid", backend="inline", seed=4, dropout=0.8, rounds=2, **QUIET)
    assert res.status == "FAILED" and res.records == []
    assert "round 1: secure aggregation stopped" in res.reason and "below the threshold" in res.reason
    initial = simulate(d, 12, partition="iid", backend="inline", seed=4, rounds=1, **QUIET)
    assert initial.status == "COMPLETE"
    from fedpact.common.definition import parse_definition
    from fedpact.models import build_model

    start = build_model(parse_definition(d).model, parse_definition(d).data, seed=0).get_weights()
    assert all(np.array_equal(res.weights[k], start[k]) for k in start), "a failed round changed the model"


def test_dp_simulation_reports_a_growing_epsilon_in_the_history_and_the_model() -> None:
    d = digits_definition(privacy={"mode": "dp", "clip_norm": 1.0, "noise_multiplier": 1.0})
    res = simulate(d, 20, backend="inline", seed=1, rounds=3, **QUIET)
    eps = res.history["epsilon"].tolist()
    assert all(e > 0 for e in eps) and eps == sorted(eps) and eps[0] < eps[-1]
    assert res.metadata()["epsilon"] == pytest.approx(eps[-1])


def test_fraction_stragglers_and_compute_speed_shape_rounds_and_the_simulated_clock() -> None:
    d = digits_definition(round_timeout_s=5, min_participants=2)
    res = simulate(d, 40, fraction=0.25, stragglers=0.4, slowdown=1000.0, speed=100.0, speed_spread=0.5,
                   backend="inline", seed=5, rounds=4, **QUIET)
    h = res.history
    assert (h["selected"] == 10).all()
    assert h["late"].sum() > 0
    assert (h["participants"] == h["selected"] - h["late"]).all()
    # A round someone was late for lasts until the deadline on the simulated clock; the others as long
    # as their slowest participant.
    assert (h.loc[h["late"] > 0, "sim_seconds"] == 5.0).all()
    assert (h.loc[h["late"] == 0, "sim_seconds"] < 5.0).all()
    assert h["sim_clock"].iloc[-1] == pytest.approx(h["sim_seconds"].sum(), abs=1e-3)


def test_one_file_per_participant_and_unequal_sizes(tmp_path) -> None:
    ds = load_digits_dataset()
    (tmp_path / "parts").mkdir()
    for i, (lo, hi) in enumerate([(0, 100), (100, 400), (400, 1000)]):
        save_csv(tmp_path / "parts" / f"site{i}.csv", ds.subset(slice(lo, hi)))
    res = simulate(digits_definition(rounds=2), data=str(tmp_path / "parts"), backend="inline", seed=0, **QUIET)
    assert res.status == "COMPLETE" and (res.history["participants"] == 3).all()
    assert res.history["num_samples"].iloc[0] == 80 + 240 + 480  # each file's training part (holdout 0.2)
    res = simulate(digits_definition(rounds=1), data=str(tmp_path / "parts" / "site*.csv"), backend="inline", **QUIET)
    assert res.status == "COMPLETE"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"partition": "zipf:1"}, "unknown partition 'zipf:1'"),
    ({"backend": "threads"}, "unknown simulation backend 'threads'"),
    ({"dropout": 1.5}, r"dropout must be a probability in \[0, 1\)"),
    ({"data": "builtin:mnist"}, "unknown built-in data 'builtin:mnist'"),
    ({"data": "/nonexistent/x.csv"}, "neither builtin:digits, a data file"),
    ({"ray_address": "127.0.0.1:1"}, "--ray-address applies to the ray backend only"),
    ({"privacy": {"mode": "encrypted"}}, "privacy mode 'encrypted' cannot be simulated yet"),
    ({"rounds": 0}, "the task definition is invalid"),
])
def test_bad_simulation_inputs_are_refused_precisely_and_write_nothing(tmp_path, monkeypatch, kwargs, message) -> None:
    monkeypatch.chdir(tmp_path)
    args = {"backend": "inline", **kwargs}
    with pytest.raises(FedpactError, match=message):
        simulate(digits_definition(), 5, **args, **QUIET)
    assert list(tmp_path.iterdir()) == []


def test_too_few_participants_for_the_definition_is_refused() -> None:
    with pytest.raises(FedpactError, match="quorum of 3 and min_participants 2; the simulation has 2 participants"):
        simulate(digits_definition(), 2, backend="inline", **QUIET)


def test_compare_runs_strategies_on_the_same_partitions_one_table_one_png(tmp_path) -> None:
    result = fedpact.compare(digits_definition(rounds=2), "fedavg,fedadam,median", 12, partition="dirichlet:0.3", seed=1,
                     backend="inline", **QUIET)
    table = result.table
    assert list(table.index) == ["fedavg", "fedadam", "median"]
    assert (table["status"] == "COMPLETE").all() and table["eval_accuracy"].notna().all()
    assert len({tuple(np.round(r.weights["weight"].ravel()[:5], 6)) for r in result.results.values()}) == 3
    png = result.plot(tmp_path / "cmp.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FedpactError, match="distinct variant names"):
        compare(digits_definition(), "fedavg,fedavg", 12, backend="inline", **QUIET)


def test_compare_privacy_modes_keeps_dp_parameters_for_the_dp_modes_only() -> None:
    d = digits_definition(rounds=2, min_participants=3, quorum=3,
                          privacy={"mode": "dp", "clip_norm": 1.0, "noise_multiplier": 1.0})
    result = fedpact.compare(d, ["open", "secure", "dp", "secure+dp"], 12, seed=1, backend="inline", **QUIET)
    table = result.table
    assert (table["status"] == "COMPLETE").all()
    assert table.loc[["open", "secure"], "epsilon"].isna().all()
    assert (table.loc[["dp", "secure+dp"], "epsilon"] > 0).all()
    assert result.results["secure+dp"].definition.privacy.mode == "secure+dp"


def test_virtual_participants_hold_no_model_or_state_between_rounds() -> None:
    import gc

    from fedpact.common.definition import parse_definition
    from fedpact.runtime.participant import DataParticipant
    from fedpact.runtime.rounds.participant import ParticipantRound
    from fedpact.simulation.backends import InlineBackend
    from fedpact.simulation.data import load_simulation_data
    from fedpact.simulation.federation import SimFederation
    from fedpact.simulation.worker import WorkerContext

    d = parse_definition(digits_definition(min_participants=3, quorum=3, privacy={"mode": "secure"}))
    data = load_simulation_data("builtin:digits", "iid", 40, seed=0)
    fed = SimFederation(d, data, InlineBackend(WorkerContext(d.model_dump(mode="json"), data)))
    try:
        selected, outcome, _ = fed.run_round(1)
        assert len(outcome.contributors) == len(selected) == 40
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, (DataParticipant, ParticipantRound))]
        assert alive == [], f"{len(alive)} participant objects outlived the round"
    finally:
        fed.close()
