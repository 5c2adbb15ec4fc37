"""``fedpact.simulate``: a task definition run with N virtual participants on one machine or a Ray cluster."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedpact.common.definition import TaskDefinition, parse_definition
from fedpact.common.errors import FedpactError
from fedpact.common.tensors import Weights, encode_weights
from fedpact.runtime.rounds import RoundFailed
from fedpact.simulation.backends import make_backend
from fedpact.simulation.data import SimulationData, load_simulation_data
from fedpact.simulation.federation import Realism, SimFederation
from fedpact.simulation.progress import RoundBar
from fedpact.simulation.worker import WorkerContext


@dataclass
class SimulationResult:
    """What a simulation produced: one record per round, the final model, and why it stopped."""

    definition: TaskDefinition
    records: list[dict[str, Any]]
    weights: Weights
    status: str
    reason: str
    epsilon: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    standardization: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def history(self) -> Any:
        """A pandas DataFrame: one row per round (round, participants, epsilon and every metric)."""
        try:
            import pandas as pd
        except ImportError:
            raise FedpactError("the history as a DataFrame needs pandas: pip install 'fedpact[sim]'") from None
        return pd.DataFrame.from_records(self.records)

    def metadata(self) -> dict[str, Any]:
        d = self.definition
        meta: dict[str, Any] = {
            "task": "simulation", "model": d.model.model_dump() if d.model else None, "data": d.data.model_dump(),
            "rounds": len(self.records), "converged": False, "standardized": self.standardization is not None, "privacy": d.privacy.mode,
            "simulation": self.settings,
        }
        if self.epsilon is not None:
            meta["epsilon"] = self.epsilon
            meta["delta"] = d.privacy.effective_delta
        return meta

    def save_model(self, path: str | Path) -> Path:
        """Write the final model in the file format of a federated one (``fedpact.load_model`` reads it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = dict(self.weights)
        if self.standardization is not None:
            tensors["standardization.mean"], tensors["standardization.std"] = self.standardization
        path.write_bytes(encode_weights(tensors, {"fedpact": json.dumps(self.metadata())}))
        return path


def _definition(definition: Any, overrides: Mapping[str, Any]) -> TaskDefinition:
    from fedpact.sdk import load_definition

    raw = load_definition(definition)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return parse_definition(raw)
    except ValueError as exc:
        raise FedpactError(f"the task definition is invalid: {exc}") from exc


def simulate(
    definition: str | Path | Mapping[str, Any] | TaskDefinition,
    participants: int | None = None,
    *,
    partition: str = "iid",
    data: str | SimulationData = "builtin:digits",
    label: str = "label",
    rounds: int | None = None,
    seed: int | None = None,
    fraction: float | None = None,
    backend: str = "process",
    workers: int | None = None,
    ray_address: str | None = None,
    dropout: float = 0.0,
    stragglers: float = 0.0,
    slowdown: float = 10.0,
    speed: float = 1000.0,
    speed_spread: float = 0.0,
    progress: bool = True,
    privacy: Mapping[str, Any] | None = None,
    algorithm: Mapping[str, Any] | None = None,
) -> SimulationResult:
    """Run ``definition`` with ``participants`` virtual participants; no hub, no accounts, no HTTP.

    ``rounds``, ``seed``, ``fraction``, ``privacy`` and ``algorithm`` override the
    definition's. The same seed gives the same history on the same backend.
    """
    d = _definition(definition, {"rounds": rounds, "seed": seed, "fraction": fraction, "privacy": privacy,
                                 "algorithm": algorithm})
    sim_data = data if isinstance(data, SimulationData) else load_simulation_data(
        data, partition, participants, d.seed, label)
    realism = Realism(dropout=dropout, stragglers=stragglers, slowdown=slowdown, speed=speed, speed_spread=speed_spread)
    settings = {"participants": sim_data.participants, "partition": partition, "data": sim_data.source,
                "backend": backend, "fraction": d.fraction, "seed": d.seed, "dropout": dropout,
                "stragglers": stragglers}
    test = _test_set(d, sim_data)
    bar = RoundBar(d.rounds, enabled=progress)
    engine = make_backend(backend, WorkerContext(d.model_dump(mode="json"), sim_data), workers=workers,
                          ray_address=ray_address)
    fed: SimFederation | None = None
    try:
        fed = SimFederation(d, sim_data, engine, realism, on_trained=bar.advance)
        return _run(fed, d, test, bar, settings)
    finally:
        bar.close()
        if fed is not None:
            fed.close()
        engine.close()


def _test_set(d: TaskDefinition, data: SimulationData) -> tuple[np.ndarray, np.ndarray] | None:
    if data.test is None or len(data.test) == 0:
        return None
    from fedpact.data.schema import conform, encode_labels, ensure_fits

    ensure_fits(data.test, d.data)
    t = conform(data.test, d.data)
    return t.x, encode_labels(t.y, d.data.classes)


def _run(fed: SimFederation, d: TaskDefinition, test: tuple[np.ndarray, np.ndarray] | None, bar: RoundBar,
         settings: dict[str, Any]) -> SimulationResult:
    records: list[dict[str, Any]] = []
    status, reason = "COMPLETE", f"{d.rounds} rounds done"
    sim_clock = 0.0
    for r in range(1, d.rounds + 1):
        if not fed.rounds.budget_allows(r):
            reason = fed.rounds.stop_reason or f"round {r} is not allowed"
            break
        t0 = time.monotonic()
        try:
            bar.start(r, 0)
            selected, outcome, fates = fed.run_round(r)
        except RoundFailed as exc:
            status, reason = "FAILED", "; ".join([exc.reason, *exc.notes])
            bar.failed(r, exc.reason)
            break
        sim_clock += fates.sim_seconds
        rec: dict[str, Any] = {"round": r, "participants": len(outcome.contributors), "selected": len(selected),
                               "dropped": len(fates.dropped), "late": len(fates.late),
                               "num_samples": outcome.num_samples, **outcome.train}
        if test is not None and fed.rounds.plaintext_model:
            rec.update({f"eval_{k}": v for k, v in fed.evaluate(*test).items() if k != "num_samples"})
        rec.update({k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float))})
        privacy = fed.rounds.round_metrics()
        rec["epsilon"] = privacy.get("epsilon")
        rec["seconds"] = round(time.monotonic() - t0, 4)
        rec["sim_seconds"] = round(fates.sim_seconds, 4)
        rec["sim_clock"] = round(sim_clock, 4)
        # Participants evaluate the model they receive before training: last round's result.
        if outcome.val and records:
            records[-1].update(outcome.val)
        records.append(rec)
        bar.finished(r, rec)
    return SimulationResult(d, records, dict(fed.global_weights), status, reason, fed.rounds.epsilon(), settings,
                            fed.std)
