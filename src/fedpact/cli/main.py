"""``fedpact``: every workflow step from a terminal.

Each command resolves the hub (``--hub``, ``$FEDPACT_HUB``, then the last hub logged
into) and the saved token for it, does one thing, and turns any failure into one line
that says what went wrong and what to do, with exit status 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from fedpact.cli.simulate import simulate_cmd
from fedpact.client import credentials
from fedpact.client.hub import HubClient, HubError
from fedpact.common.errors import FedpactError

app = typer.Typer(help="fedpact: federated learning across organisations through a hub.", no_args_is_help=True)
task_app = typer.Typer(help="Create, find, inspect, cancel and delete tasks.", no_args_is_help=True)
model_app = typer.Typer(help="Models stored on the hub.", no_args_is_help=True)
app.add_typer(task_app, name="task")
app.add_typer(model_app, name="model")

out = Console()
err = Console(stderr=True)

HubOpt = Annotated[str | None, typer.Option("--hub", help="Hub URL (default: $FEDPACT_HUB or the last hub you logged into).")]
STATUS_STYLE = {"CREATED": "cyan", "RUNNING": "yellow", "COMPLETE": "green", "FAILED": "red", "CANCELLED": "dim"}


@contextmanager
def errors() -> Iterator[None]:
    try:
        yield
    except HubError as exc:
        hint = {401: " (log in again with 'fedpact login NAME')"}.get(exc.status, "")
        err.print(f"[red]error:[/] {exc}{hint}", highlight=False)
        raise typer.Exit(1) from None
    except FedpactError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


def _client(hub: str | None, *, login: bool = True) -> HubClient:
    url = credentials.resolve_hub(hub)
    user, token = credentials.token_for(url)
    if login and not token:
        err.print(f"[red]error:[/] not logged in to {url}; run 'fedpact login NAME' first (or pass --hub)")
        raise typer.Exit(1)
    return HubClient(url, token)


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


# -- hub ----------------------------------------------------------------------------------
@app.command()
def hub(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8470,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the database and blobs live.")] = Path("fedpact-hub"),
    max_blob_mb: Annotated[int | None, typer.Option(help="Largest blob accepted, in MiB.")] = None,
) -> None:
    """Run a hub (SQLite and files under --data-dir) until interrupted."""
    from fedpact.hub.config import HubConfig
    from fedpact.hub.server import serve

    extra: dict[str, Any] = {}
    if max_blob_mb is not None:
        extra["max_blob_bytes"] = max_blob_mb * 1024 * 1024
    data_dir.mkdir(parents=True, exist_ok=True)
    err.print(f"fedpact hub on http://{host}:{port} (data in {data_dir.resolve()}); API docs at /api/v1/docs")
    serve(HubConfig(data_dir=data_dir, **extra), host=host, port=port)


# -- users --------------------------------------------------------------------------------
@app.command()
def register(
    name: str,
    organisation: Annotated[str, typer.Option("--organisation", "-o", prompt=True, help="Your organisation.")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, envvar="FEDPACT_PASSWORD")
    ],
    hub: HubOpt = None,
) -> None:
    """Create an account on the hub."""
    with errors():
        c = _client(hub, login=False)
        user = c.register(name, password, organisation)
        out.print(f"registered {user['name']} ({user['organisation']}) on {c.url}; now run 'fedpact login {name}'")


@app.command()
def login(
    name: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, envvar="FEDPACT_PASSWORD")],
    hub: HubOpt = None,
) -> None:
    """Log in and remember the token for this hub."""
    with errors():
        c = _client(hub, login=False)
        token = c.login(name, password)
        credentials.remember(c.url, name, token)
        out.print(f"logged in to {c.url} as {name}")


@app.command()
def logout(hub: HubOpt = None) -> None:
    """End the session on this hub and forget its token."""
    with errors():
        c = _client(hub)
        try:
            c.logout()
        finally:
            credentials.forget(c.url)
        out.print(f"logged out of {c.url}")


@app.command()
def whoami(hub: HubOpt = None) -> None:
    """Show the user you are logged in as."""
    with errors():
        c = _client(hub)
        me = c.me()
        out.print(f"{me['name']} ({me['organisation']}) on {c.url}")


# -- tasks --------------------------------------------------------------------------------
def _task_table(tasks: list[dict[str, Any]]) -> Table:
    t = Table(show_lines=False)
    for col in ("id", "name", "status", "privacy", "model", "creator", "participants", "created"):
        t.add_column(col)
    for task in tasks:
        d = task["definition"]
        style = STATUS_STYLE.get(task["status"], "")
        t.add_row(
            str(task["id"]),
            task["name"],
            f"[{style}]{task['status']}[/]",
            d.get("privacy", {}).get("mode", "open"),
            d.get("model", {}).get("name", "?"),
            task["creator"],
            str(len(task.get("participants", []))),
            task["created_at"][:19].replace("T", " "),
        )
    return t


@task_app.command("create")
def task_create(
    name: str,
    definition: Annotated[Path, typer.Option("--definition", "-d", help="Task definition, YAML or JSON.")],
    description: Annotated[str, typer.Option(help="Free text shown to data owners.")] = "",
    hub: HubOpt = None,
) -> None:
    """Publish a task from a definition file (strategies for 'algorithm': see 'fedpact algorithms')."""
    from fedpact.sdk import load_definition

    with errors():
        c = _client(hub)
        task = c.create_task(name, load_definition(definition), description)
        out.print(f"created task {task['name']} (id {task['id']}); participants join with 'fedpact join {task['name']}'")


@app.command("algorithms")
def algorithms_cmd() -> None:
    """List the aggregation strategies a definition can name, with their parameters and privacy modes."""
    from importlib.metadata import entry_points

    from fedpact.common.algorithms import CATALOG

    table = Table("algorithm", "parameters (default, bounds)", "privacy modes", "what it does")
    for a in CATALOG.values():
        params = "\n".join(
            f"{p.name}: {p.type} = {'auto' if p.default is None else p.default} ({p.bounds()}) {p.help}"
            for p in a.params) or "-"
        table.add_row(a.name, params, ", ".join(a.privacy_modes), a.summary)
    out.print(table)
    plugins = sorted({ep.name for ep in entry_points(group="fedpact.algorithms")} - set(CATALOG))
    if plugins:
        out.print(f"installed plugins (open mode only): {', '.join(plugins)}")


@task_app.command("list")
def task_list(
    status: Annotated[str | None, typer.Option(help="CREATED, RUNNING, COMPLETE, FAILED or CANCELLED.")] = None,
    creator: Annotated[str | None, typer.Option(help="Only tasks created by this user.")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only tasks you created.")] = False,
    joined: Annotated[bool, typer.Option("--joined", help="Only tasks you joined.")] = False,
    search: Annotated[str | None, typer.Option("--search", "-q", help="Text in the name or description.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    hub: HubOpt = None,
) -> None:
    """List tasks on the hub."""
    with errors():
        tasks = _client(hub).list_tasks(
            status=status.upper() if status else None, creator=creator, mine=mine, joined=joined, q=search
        )
        if as_json:
            _print_json(tasks)
        elif not tasks:
            out.print("no tasks match")
        else:
            out.print(_task_table(tasks))


@task_app.command("show")
def task_show(task: str, as_json: Annotated[bool, typer.Option("--json")] = False, hub: HubOpt = None) -> None:
    """Show a task: definition, participants, status history and rounds."""
    with errors():
        c = _client(hub)
        info = c.get_task(task)
        rounds = c.list_rounds(info["id"])
        if as_json:
            _print_json({**info, "rounds": rounds})
            return
        out.print(f"[bold]{info['name']}[/] (id {info['id']}) by {info['creator']}: "
                  f"[{STATUS_STYLE.get(info['status'], '')}]{info['status']}[/]")
        if info.get("description"):
            out.print(info["description"])
        out.print(f"participants: {', '.join(info.get('participants', [])) or 'none yet'}")
        out.print("definition:")
        _print_json(info["definition"])
        out.print("history:")
        for ev in info.get("events", []):
            out.print(f"  {ev['at'][:19].replace('T', ' ')}  {ev['status']:<9} {ev.get('reason') or ''}")
        if rounds:
            t = Table(title="rounds")
            keys = sorted({k for r in rounds for k, v in (r.get("metrics") or {}).items() if isinstance(v, (int, float))})
            for col in ["round", "status", "participants", *keys]:
                t.add_column(col)
            for r in rounds:
                mt = r.get("metrics") or {}
                t.add_row(str(r["number"]), r["status"], ", ".join(r.get("participants", [])),
                          *[f"{mt[k]:.4f}" if isinstance(mt.get(k), float) else str(mt.get(k, "")) for k in keys])
            out.print(t)


@task_app.command("cancel")
def task_cancel(task: str, hub: HubOpt = None) -> None:
    """Cancel a task you created."""
    with errors():
        info = _client(hub).cancel_task(task)
        out.print(f"task {info['name']} is {info['status']}")


@task_app.command("delete")
def task_delete(
    task: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    hub: HubOpt = None,
) -> None:
    """Delete a task you created (stored models are kept)."""
    with errors():
        if not yes and not typer.confirm(f"delete task {task} with its messages and rounds?"):
            raise typer.Exit(1)
        _client(hub).delete_task(task)
        out.print(f"deleted task {task}")


# -- membership ---------------------------------------------------------------------------
@app.command()
def join(task: str, hub: HubOpt = None) -> None:
    """Join a task as a data owner."""
    with errors():
        _client(hub).join(task)
        out.print(f"joined {task}; run 'fedpact participate {task} --data FILE' to train on your data")


@app.command()
def leave(task: str, hub: HubOpt = None) -> None:
    """Leave a task you joined."""
    with errors():
        _client(hub).leave(task)
        out.print(f"left {task}")


@app.command()
def assignments(as_json: Annotated[bool, typer.Option("--json")] = False, hub: HubOpt = None) -> None:
    """Tasks you joined that still need you."""
    with errors():
        tasks = _client(hub).assignments()
        if as_json:
            _print_json(tasks)
        elif not tasks:
            out.print("no open assignments")
        else:
            out.print(_task_table(tasks))


# -- running ------------------------------------------------------------------------------
def _load(path: Path, label: str, labels: Path | None, missing: str) -> Any:
    from fedpact.data.loaders import load_data

    return load_data(path, label=label, labels_path=labels, missing=missing)  # type: ignore[arg-type]


@app.command()
def aggregate(
    task: str,
    resume: Annotated[bool, typer.Option("--resume", help="Continue after the last completed round.")] = False,
    eval_data: Annotated[Path | None, typer.Option(help="Data to evaluate the global model on each round.")] = None,
    label: Annotated[str, typer.Option(help="Label column of a CSV file.")] = "label",
    labels: Annotated[Path | None, typer.Option(help="IDX labels file that goes with IDX images.")] = None,
    missing: Annotated[str, typer.Option(help="'error' or 'drop' rows with missing values.")] = "error",
    quorum_timeout: Annotated[float | None, typer.Option(help="Give up if the quorum is not reached in this many seconds.")] = None,
    hub: HubOpt = None,
) -> None:
    """Run the aggregator of a task you created, until it completes."""
    from fedpact.cli.progress import RichProgress
    from fedpact.runtime.aggregator import run_aggregator

    with errors():
        c = _client(hub)
        data = _load(eval_data, label, labels, missing) if eval_data else None
        progress = RichProgress()
        try:
            result = run_aggregator(c, task, eval_data=data, resume=resume, progress=progress,
                                    quorum_timeout_s=quorum_timeout)
        finally:
            progress.close()
        out.print(f"task {result.task_name} {result.status} after {result.rounds_completed} rounds; "
                  f"model {result.model_id} stored on the hub")


@app.command()
def participate(
    task: str,
    data: Annotated[Path, typer.Option(help="Your local data: CSV, NPZ or IDX images.")],
    label: Annotated[str, typer.Option(help="Label column of a CSV file.")] = "label",
    labels: Annotated[Path | None, typer.Option(help="IDX labels file that goes with IDX images.")] = None,
    missing: Annotated[str, typer.Option(help="'error' or 'drop' rows with missing values.")] = "error",
    model_dir: Annotated[Path, typer.Option(help="Where to save the final model.")] = Path("fedpact-models"),
    threads: Annotated[int | None, typer.Option(help="CPU threads for local training.")] = None,
    hub: HubOpt = None,
) -> None:
    """Train on your local data whenever the task's aggregator asks, until the task completes."""
    from fedpact.cli.progress import RichProgress
    from fedpact.runtime.participant import DataParticipant, run_participant

    with errors():
        c = _client(hub)
        dataset = _load(data, label, labels, missing)
        progress = RichProgress()
        try:
            result = run_participant(c, task, DataParticipant(dataset, threads=threads), progress=progress,
                                     model_dir=model_dir)
        finally:
            progress.close()
        out.print(f"task {result.task_name} {result.status}; trained in rounds {result.rounds_trained}; "
                  f"model saved to {result.model_path}")


# -- models -------------------------------------------------------------------------------
@model_app.command("list")
def model_list(task: Annotated[str | None, typer.Option(help="Only this task's models.")] = None, hub: HubOpt = None) -> None:
    """Models you may download (as creator or contributor)."""
    with errors():
        models = _client(hub).list_models(task)
        if not models:
            out.print("no models")
            return
        t = Table()
        for col in ("id", "task", "rounds", "contributors", "sha256", "created"):
            t.add_column(col)
        for mdl in models:
            t.add_row(str(mdl["id"]), mdl["task_name"], str(mdl["rounds"]), ", ".join(mdl["contributors"]),
                      mdl["sha256"][:16], mdl["created_at"][:19].replace("T", " "))
        out.print(t)


@model_app.command("download")
def model_download(
    task: Annotated[str | None, typer.Argument(help="Task whose final model to download.")] = None,
    model_id: Annotated[int | None, typer.Option("--id", help="Download this model id instead.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="File or directory to write.")] = Path("."),
    hub: HubOpt = None,
) -> None:
    """Download a stored model as a safetensors file."""
    with errors():
        c = _client(hub)
        if model_id is None:
            if task is None:
                raise FedpactError("name a task or pass --id")
            found = c.list_models(task)
            if not found:
                raise FedpactError(f"task {task} has no stored model you may download (yet)")
            model_id = int(found[-1]["id"])
        with Progress(TextColumn("downloading model"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=err, transient=True) as bar:
            job = bar.add_task("download", total=None)
            path = c.download_model(model_id, output, progress=lambda done, total: bar.update(job, completed=done,
                                                                                               total=total or None))
        out.print(f"model {model_id} saved to {path}")


@app.command()
def demo(
    participants: Annotated[int, typer.Option(help="Number of participant processes.")] = 3,
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 10,
    data_dir: Annotated[Path | None, typer.Option(help="Keep the hub's data here (default: a temporary folder).")] = None,
) -> None:
    """Run a whole federation on this machine: a hub, an aggregator and participants on digits."""
    from fedpact.cli.demo import run_demo

    with errors():
        ok = run_demo(participants=participants, rounds=rounds, data_dir=data_dir, console=out)
    if not ok:
        raise typer.Exit(1)


# -- hosted aggregator --------------------------------------------------------------------
hosted_app = typer.Typer(help="Aggregators the hub runs for you (task creators).", no_args_is_help=True)
app.add_typer(hosted_app, name="hosted")


def _show_hosted(st: dict[str, Any]) -> None:
    line = f"hosted aggregator of task {st['task_id']}: {st['state']}"
    if st.get("running"):
        line += f" (pid {st['pid']}, since {str(st['started_at'])[:19].replace('T', ' ')})"
    elif st.get("reason"):
        line += f" ({st['reason']})"
    out.print(line, highlight=False)


@hosted_app.command("start")
def hosted_start(
    task: str,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a RUNNING task after its last completed round.")] = False,
    eval_data: Annotated[Path | None, typer.Option(help="CSV or NPZ file the aggregator evaluates on (uploaded to the task).")] = None,
    label: Annotated[str | None, typer.Option(help="Label column of the evaluation CSV.")] = None,
    hub: HubOpt = None,
) -> None:
    """Ask the hub to run the aggregator of a task you created; it keeps running after you log off."""
    with errors():
        c = _client(hub)
        spec = None
        if eval_data is not None:
            if not eval_data.is_file():
                raise FedpactError(f"no file {eval_data}")
            fmt = "npz" if eval_data.suffix.lower() == ".npz" else "csv"
            spec = {"blob": c.upload_blob(task, eval_data), "format": fmt}
            if label and fmt == "csv":
                spec["label"] = label
        st = c.start_hosted_aggregator(task, resume=resume, eval_data=spec)
        _show_hosted(st)
        out.print(f"follow it with 'fedpact hosted log {task} --follow' or on the task's web page")


@hosted_app.command("status")
def hosted_status(task: str, as_json: Annotated[bool, typer.Option("--json")] = False, hub: HubOpt = None) -> None:
    """Show whether the hub runs the task's aggregator, and how it ended."""
    with errors():
        st = _client(hub).hosted_aggregator_status(task)
        _print_json(st) if as_json else _show_hosted(st)


@hosted_app.command("log")
def hosted_log(
    task: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the aggregator stops.")] = False,
    hub: HubOpt = None,
) -> None:
    """Print the hosted aggregator's log (members of the task)."""
    import time

    with errors():
        c = _client(hub)
        chunk = c.hosted_aggregator_log(task)
        sys.stdout.write(chunk["text"])
        sys.stdout.flush()
        offset = chunk["next_offset"]
        while follow:
            time.sleep(1.0)
            chunk = c.hosted_aggregator_log(task, offset=offset)
            sys.stdout.write(chunk["text"])
            sys.stdout.flush()
            offset = chunk["next_offset"]
            if not chunk["text"] and not c.hosted_aggregator_status(task)["running"]:
                break


# -- simulation (no hub) --------------------------------------------------------------------
app.command("simulate")(simulate_cmd)


@hosted_app.command("stop")
def hosted_stop(task: str, hub: HubOpt = None) -> None:
    """Stop the aggregator the hub runs for a task you created (the task stays resumable)."""
    with errors():
        _show_hosted(_client(hub).stop_hosted_aggregator(task))


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="fedpact")


if __name__ == "__main__":  # pragma: no cover
    main()
