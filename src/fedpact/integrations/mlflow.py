"""A federated task as an MLflow run: parameters, per-round metrics, final model and card.

Hooked onto the aggregator from outside, through its public ``on_round`` callback and
the :class:`~fedpact.runtime.aggregator.AggregatorResult` it returns, so the runtime knows
nothing of MLflow. It talks to the tracking server with ``MlflowClient`` (no process-wide
active run), so several aggregators in one process never mix their runs. A resumed task
continues the run it started: the run is found again by its ``fedpact.task_id`` tag.

Tracking is a side channel: once training runs, an MLflow outage is reported once and
never stops the federation; before it runs, an unreachable server is an error, so a typo
in ``--mlflow-uri`` is caught before anyone trains.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedpact.client.hub import HubClient
from fedpact.common.errors import FedpactError
from fedpact.common.extras import require

RoundCallback = Callable[[int, dict[str, Any]], None]
#: MLflow's limit on a parameter value's length.
_PARAM_MAX = 500


def flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    """Nested definition -> dotted MLflow parameters (``model.params.hidden`` = ``[64]``)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif value is not None:
        text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
        out[prefix] = text[:_PARAM_MAX]
    return out


class MlflowTracker:
    """One task's MLflow run: start (or find again), log rounds, attach the model, end."""

    def __init__(self, uri: str, hub: HubClient, task: str | int, *, experiment: str | None = None) -> None:
        require("mlflow", "MLflow tracking (--mlflow-uri)")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.hub = hub
        info = hub.get_task(task)
        self.task_id, self.task_name = int(info["id"]), str(info["name"])
        self.definition: dict[str, Any] = info["definition"]
        self.experiment = experiment or f"fedpact/{self.task_name}"
        self.client = MlflowClient(tracking_uri=uri)
        self._warned = False
        try:
            self.run_id = self._start()
        except Exception as exc:  # any client failure means the server is not usable
            raise FedpactError(f"cannot use the MLflow tracking server at {uri}: {exc}") from exc

    def _start(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        exp_id = found.experiment_id if found is not None else self.client.create_experiment(self.experiment)
        previous = self.client.search_runs(
            [exp_id], filter_string=f"tags.`fedpact.task_id` = '{self.task_id}'", max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if previous:
            run_id = str(previous[0].info.run_id)
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(exp_id, run_name=self.task_name, tags={
            "fedpact.task_id": str(self.task_id), "fedpact.task": self.task_name, "fedpact.hub": self.hub.url,
        })
        from mlflow.entities import Param

        params = flatten("", self.definition, {})
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in sorted(params.items())])
        return str(run.info.run_id)

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            print(f"MLflow at {self.uri} failed ({exc}); training goes on without tracking", file=sys.stderr, flush=True)

    def on_round(self, number: int, metrics: Mapping[str, Any]) -> None:
        """Log one round's numeric metrics at step ``number``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, number) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        try:
            self.client.log_batch(self.run_id, metrics=batch)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._warn(exc)

    def chain(self, other: RoundCallback | None) -> RoundCallback:
        """An ``on_round`` that logs to MLflow, then calls the caller's own callback."""

        def both(number: int, metrics: dict[str, Any]) -> None:
            self.on_round(number, metrics)
            if other is not None:
                other(number, metrics)

        return both

    def finish(self, status: str, model_id: int | None, final_metrics: Mapping[str, Any]) -> None:
        """Attach the final model file and its card, log final metrics, close the run."""
        from mlflow.entities import Metric

        try:
            now = int(time.time() * 1000)
            finals = [Metric(f"final_{k}", float(v), now, 0) for k, v in final_metrics.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if finals:
                self.client.log_batch(self.run_id, metrics=finals)
            if model_id is not None:
                with tempfile.TemporaryDirectory(prefix="fedpact-mlflow-") as d:
                    path = self.hub.download_model(model_id, Path(d) / f"{self.task_name}-model-{model_id}.safetensors")
                    self.client.log_artifact(self.run_id, str(path), "model")
                    card = Path(d) / "model_card.json"
                    card.write_text(json.dumps(self.hub.model_card(model_id), indent=2, default=str))
                    self.client.log_artifact(self.run_id, str(card), "model")
                self.client.set_tag(self.run_id, "fedpact.model_id", str(model_id))
            self.client.set_terminated(self.run_id, status="FINISHED" if status == "COMPLETE" else "FAILED")
        except Exception as exc:  # noqa: BLE001 - the model is safe on the hub whatever MLflow says
            self._warn(exc)


def run_tracked(client: HubClient, task: str | int, mlflow_uri: str, *, experiment: str | None = None,
                **options: Any) -> Any:
    """``run_aggregator`` with the task tracked as an MLflow run at ``mlflow_uri``."""
    from fedpact.runtime.aggregator import run_aggregator

    tracker = MlflowTracker(mlflow_uri, client, task, experiment=experiment)
    options["on_round"] = tracker.chain(options.get("on_round"))
    try:
        result = run_aggregator(client, task, **options)
    except BaseException:
        tracker.finish("FAILED", None, {})
        raise
    tracker.finish(result.status, result.model_id, result.metrics)
    return result
