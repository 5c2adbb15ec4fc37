"""The Python API: one object per user and hub, one method per workflow step.

``Client.embedded()`` starts a hub inside the current process (SQLite and files on local
disk), ``Client(url)`` connects to a running hub; everything else is identical, so a
notebook experiment and a multi-organisation deployment run the same code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fedpact.client.hub import HubClient
from fedpact.common.definition import TaskDefinition
from fedpact.common.errors import FedpactError
from fedpact.runtime.aggregator import AggregatorResult, run_aggregator
from fedpact.runtime.kind_participant import TaskParticipant
from fedpact.runtime.participant import Participant, ParticipantResult, run_participant
from fedpact.runtime.progress import Progress


def load_definition(source: str | Path | Mapping[str, Any] | TaskDefinition) -> dict[str, Any]:
    """A definition as a plain dict, from a mapping, a model, or a YAML/JSON file."""
    if isinstance(source, TaskDefinition):
        return source.model_dump(mode="json")
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FedpactError(f"cannot read the definition file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise FedpactError(f"{path} is not valid {kind}: {_one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise FedpactError(f"{path} must hold a mapping (the task definition), not {type(data).__name__}")
    return data


def _one_line(exc: Exception) -> str:
    """A parser error as one line with its position (PyYAML's own text spans several)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return f"{where}{exc.problem or exc.context or 'syntax error'}"
    return " ".join(str(exc).split())


class Client:
    """A user's handle on a hub."""

    def __init__(
        self, url: str, token: str | None = None, *, retry_for_s: float | None = None, ca_file: str | Path | None = None
    ) -> None:
        """``retry_for_s``: how long to ride out a hub outage once connected (default
        ``$FEDPACT_OUTAGE_TOLERANCE_S`` or 10 minutes); a first contact gives up after ~3 s.
        ``ca_file``: the CA that signed an HTTPS hub's certificate (default: $FEDPACT_CA, else the system's)."""
        self.hub = HubClient(url, token, retry_for_s=retry_for_s, ca_file=ca_file)
        self._embedded: Any = None

    @classmethod
    def embedded(cls, data_dir: str | Path | None = None, **config: Any) -> Client:
        """Start a hub in this process (stopped by :meth:`close`) and connect to it."""
        import tempfile

        from fedpact.hub.config import HubConfig
        from fedpact.hub.server import EmbeddedHub

        data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="fedpact-hub-"))
        hub = EmbeddedHub(data_dir, HubConfig(data_dir=data_dir, **config))
        hub.start()
        client = cls(hub.url)
        client._embedded = hub
        return client

    @property
    def url(self) -> str:
        return self.hub.url

    @property
    def token(self) -> str | None:
        return self.hub.token

    def close(self) -> None:
        self.hub.close()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- users ------------------------------------------------------------------------
    def register(self, name: str, password: str, organisation: str) -> dict[str, Any]:
        return self.hub.register(name, password, organisation)

    def login(self, name: str, password: str) -> str:
        return self.hub.login(name, password)

    def logout(self) -> None:
        self.hub.logout()

    # -- tasks ------------------------------------------------------------------------
    def create_task(
        self, name: str, definition: str | Path | Mapping[str, Any] | TaskDefinition, description: str = ""
    ) -> dict[str, Any]:
        return self.hub.create_task(name, load_definition(definition), description)

    def list_tasks(self, **filters: Any) -> list[dict[str, Any]]:
        return self.hub.list_tasks(**filters)

    def get_task(self, task: str | int) -> dict[str, Any]:
        return self.hub.get_task(task)

    def rounds(self, task: str | int) -> list[dict[str, Any]]:
        return self.hub.list_rounds(task)

    def join(self, task: str | int) -> dict[str, Any]:
        """Join ``task``, first refusing one this installation lacks an extra for (naming the pip command)."""
        self.check_can_run(task)
        return self.hub.join(task)

    def check_can_run(self, task: str | int, *, model: bool = True) -> None:
        """Raise :class:`~fedpact.common.extras.MissingExtra` if the task's model or privacy mode
        needs an optional dependency that is not installed here."""
        from fedpact.common.extras import check_task

        info = self.hub.get_task(task)
        check_task(info["definition"], info["name"], model=model)

    def requests(self, task: str | int) -> list[dict[str, Any]]:
        """Who is waiting for your approval to join a task you created."""
        return self.hub.join_requests(task)

    def members(self, task: str | int) -> list[dict[str, Any]]:
        """Everyone who asked to join a task you created, with their status."""
        return self.hub.members(task)

    def approve(self, task: str | int, user: str) -> dict[str, Any]:
        return self.hub.approve(task, user)

    def decline(self, task: str | int, user: str) -> dict[str, Any]:
        return self.hub.decline(task, user)

    def remove(self, task: str | int, user: str) -> dict[str, Any]:
        """Take an admitted member out of your task; it goes on without them from the next round."""
        return self.hub.remove_member(task, user)

    def leave(self, task: str | int) -> None:
        self.hub.leave(task)

    def assignments(self) -> list[dict[str, Any]]:
        return self.hub.assignments()

    def cancel_task(self, task: str | int) -> dict[str, Any]:
        return self.hub.cancel_task(task)

    def delete_task(self, task: str | int) -> None:
        self.hub.delete_task(task)

    # -- running ----------------------------------------------------------------------
    def run_aggregator(
        self,
        task: str | int,
        *,
        eval_data: Any = None,
        resume: bool = False,
        progress: Progress | None = None,
        mlflow_uri: str | None = None,
        **options: Any,
    ) -> AggregatorResult:
        """Run the task's rounds here until it completes (creator only).

        With ``mlflow_uri`` the task is also an MLflow run there (needs ``fedpact[mlflow]``):
        its parameters, each round's metrics, and the final model and card as artifacts.
        """
        if mlflow_uri:
            from fedpact.integrations.mlflow import run_tracked

            result: AggregatorResult = run_tracked(self.hub, task, mlflow_uri, eval_data=eval_data, resume=resume,
                                                   progress=progress, **options)
            return result
        return run_aggregator(self.hub, task, eval_data=eval_data, resume=resume, progress=progress, **options)

    def load_data(self, task: str | int, path: str | Path, *, label: str | None = None,
                  missing: str | None = None, labels_path: str | Path | None = None) -> Any:
        """Read a local file as the task's definition says (label, header, columns, missing, categories).

        ``label`` and ``missing`` override the definition for this site's file.
        """
        from fedpact.common.definition import parse_definition
        from fedpact.data.prepare import load_for_task

        schema = parse_definition(self.hub.get_task(task)["definition"]).data
        return load_for_task(path, schema, label=label, missing=missing, labels_path=labels_path)

    def run_participant(
        self,
        task: str | int,
        data: Any,
        *,
        model_dir: str | Path | None = None,
        progress: Progress | None = None,
        **options: Any,
    ) -> ParticipantResult:
        """Train on ``data`` (a Dataset, a file path read as the task says, or a Participant) whenever the task asks."""
        if isinstance(data, (str, Path)):
            data = self.load_data(task, data)
        custom = isinstance(data, Participant)
        participant = data if custom else TaskParticipant(data)
        # A custom Participant brings its own model code; the privacy mode still needs its extra.
        self.check_can_run(task, model=not custom)
        return run_participant(self.hub, task, participant, model_dir=model_dir, progress=progress, **options)

    # -- models -----------------------------------------------------------------------
    def models(self, task: str | int | None = None) -> list[dict[str, Any]]:
        return self.hub.list_models(task)

    def analytics_report(self, task: str | int) -> dict[str, dict[str, Any]]:
        """The per-column report of an analytics task, as its aggregator stored it on the hub.

        Count, missing, mean, variance, std, min, max, the histogram and the quantiles of each
        column (figures of an empty column are None). Under ``secure`` min and max are the
        bounds of the outermost non-empty bins (None beyond the declared edges) and
        ``range_from`` is ``"histogram"`` instead of ``"data"``.
        """
        for model in reversed(self.hub.list_models(task)):
            report = (model.get("metadata") or {}).get("analytics")
            if isinstance(report, dict):
                return report
        raise FedpactError(f"task {task!r} has no analytics report (yet): is it an analytics task, and complete?")

    def download_model(self, task: str | int | None = None, dest: str | Path = ".", *, model_id: int | None = None) -> Path:
        """Save a task's final model (or the model ``model_id``) as a safetensors file."""
        if model_id is None:
            if task is None:
                raise FedpactError("name a task or a model_id to download")
            found = self.hub.list_models(task)
            if not found:
                raise FedpactError(f"task {task!r} has no stored model you may download (yet)")
            model_id = int(found[-1]["id"])
        return self.hub.download_model(model_id, dest)

    # -- hosted aggregator ------------------------------------------------------------
    def host_aggregator(
        self,
        task: str | int,
        *,
        resume: bool = False,
        eval_data: str | Path | None = None,
        label: str | None = None,
        mlflow_uri: str | None = None,
    ) -> dict[str, Any]:
        """Ask the hub to run the task's aggregator itself (creator only); returns its status.

        The aggregator keeps running when this process exits. ``eval_data`` is a CSV or
        NPZ file; it is uploaded to the task and the hosted aggregator evaluates on it.
        """
        spec = None
        if eval_data is not None:
            path = Path(eval_data)
            fmt = "npz" if path.suffix.lower() == ".npz" else "csv"
            spec = {"blob": self.hub.upload_blob(task, path, private=True), "format": fmt}
            if label is not None and fmt == "csv":
                spec["label"] = label
        return self.hub.start_hosted_aggregator(task, resume=resume, eval_data=spec, mlflow_uri=mlflow_uri)

    def hosted_aggregator(self, task: str | int) -> dict[str, Any]:
        """The status of the task's hosted aggregator (``state``: none, running, finished, failed, stopped)."""
        return self.hub.hosted_aggregator_status(task)

    def hosted_aggregator_log(self, task: str | int) -> str:
        """The tail of the hosted aggregator's log."""
        return str(self.hub.hosted_aggregator_log(task)["text"])

    def stop_hosted_aggregator(self, task: str | int) -> dict[str, Any]:
        return self.hub.stop_hosted_aggregator(task)


def connect(url: str, token: str | None = None) -> Client:
    return Client(url, token)
