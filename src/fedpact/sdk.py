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
        raise FedpactError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise FedpactError(f"{path} must hold a mapping (the task definition), not {type(data).__name__}")
    return data


class Client:
    """A user's handle on a hub."""

    def __init__(self, url: str, token: str | None = None, *, retry_for_s: float = 30.0) -> None:
        self.hub = HubClient(url, token, retry_for_s=retry_for_s)
        self._embedded: Any = None

    @classmethod
    def embedded(cls, data_dir: str | Path | None = None, **config: Any) -> "Client":
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

    def __enter__(self) -> "Client":
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
        return self.hub.join(task)

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
        **options: Any,
    ) -> AggregatorResult:
        """Run the task's rounds here until it completes (creator only)."""
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
        participant = data if isinstance(data, Participant) else TaskParticipant(data)
        return run_participant(self.hub, task, participant, model_dir=model_dir, progress=progress, **options)

    # -- models -----------------------------------------------------------------------
    def models(self, task: str | int | None = None) -> list[dict[str, Any]]:
        return self.hub.list_models(task)

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
    ) -> dict[str, Any]:
        """Ask the hub to run the task's aggregator itself (creator only); returns its status.

        The aggregator keeps running when this process exits. ``eval_data`` is a CSV or
        NPZ file; it is uploaded to the task and the hosted aggregator evaluates on it.
        """
        spec = None
        if eval_data is not None:
            path = Path(eval_data)
            fmt = "npz" if path.suffix.lower() == ".npz" else "csv"
            spec = {"blob": self.hub.upload_blob(task, path), "format": fmt}
            if label is not None and fmt == "csv":
                spec["label"] = label
        return self.hub.start_hosted_aggregator(task, resume=resume, eval_data=spec)

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
