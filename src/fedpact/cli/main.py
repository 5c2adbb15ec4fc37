"""``fedpact``: every workflow step from a terminal.

Each command resolves the hub (``--hub``, ``$FEDPACT_HUB``, then the last hub logged
into) and the saved token for it, does one thing, and turns any failure into one line
that says what went wrong and what to do, with exit status 1.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from fedpact.cli.hints import did_you_mean, for_terminal
from fedpact.cli.simulate import simulate_cmd
from fedpact.client import credentials
from fedpact.client.hub import CA_ENV, HubClient, HubError
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


#: The client of the running command, so an error can look up "did you mean" candidates.
_current: list[HubClient] = []
_NO_TASK = re.compile(r"no task '([^']+)'")


def _task_suggestion(exc: HubError) -> str:
    match = _NO_TASK.search(str(exc.detail))
    if exc.status != 404 or not match or not _current:
        return ""
    try:
        names = [t["name"] for t in _current[-1].list_tasks()]
    except FedpactError:
        return ""
    return did_you_mean(match.group(1), names)


@contextmanager
def errors() -> Iterator[None]:
    try:
        yield
    except HubError as exc:
        hint = {401: f" (log in again with 'fedpact login NAME{_hub_flag()}')"}.get(exc.status, "")
        text = escape(f"{for_terminal(str(exc))}{hint}{_task_suggestion(exc)}")
        err.print(f"[red]error:[/] {text}", highlight=False)
        raise typer.Exit(1) from None
    except FedpactError as exc:  # escaped: "pip install 'fedpact[torch]'" is not rich markup
        err.print(f"[red]error:[/] {escape(for_terminal(str(exc)))}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    finally:
        _current.clear()


def _hub_flag() -> str:
    """`` --hub URL`` when a follow-up command would otherwise go to a different hub."""
    if not _current:
        return ""
    url = _current[-1].url
    return "" if credentials.resolve_hub(None) == url else f" --hub {url}"


def _client(hub: str | None, *, login: bool = True) -> HubClient:
    url = credentials.resolve_hub(hub)
    _, token = credentials.token_for(url)
    if login and not token:
        err.print(f"[red]error:[/] not logged in to {url}; run 'fedpact login NAME --hub {url}' first")
        raise typer.Exit(1)
    client = HubClient(url, token)
    _current.append(client)
    return client


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


# -- hub ----------------------------------------------------------------------------------
@app.callback()
def main_options(
    ca_file: Annotated[
        Path | None,
        typer.Option("--ca-file", help="CA (PEM) that signed an HTTPS hub's certificate [$FEDPACT_CA, else the system's CAs]."),
    ] = None,
) -> None:
    """fedpact: federated learning across organisations through a hub."""
    # Each invocation gets consoles sized for the terminal it runs in now: rich fixes a
    # console's width from $COLUMNS when the console is made, so consoles made at import
    # would keep the importer's width for every later command in the process.
    global out, err
    out = Console()
    err = Console(stderr=True)
    if ca_file is not None:
        # Through the environment, so the runtime processes this command starts trust it too.
        os.environ[CA_ENV] = str(ca_file.expanduser().resolve())


@app.command()
def hub(
    host: Annotated[str, typer.Option(help="Interface to listen on.", envvar="FEDPACT_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", envvar="FEDPACT_PORT")] = 8470,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Where the database (by default) and blobs live (default: fedpact-hub).", envvar="FEDPACT_DATA_DIR"
        ),
    ] = None,
    max_blob_mb: Annotated[int | None, typer.Option(help="Largest blob accepted, in MiB.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML file of hub settings (docs/security.md).")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate chain (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="The private key (PEM) of --tls-cert.")] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL of the database, e.g. postgresql+psycopg://USER@HOST/DB (default: SQLite in --data-dir).",
            envvar="FEDPACT_DATABASE_URL",
        ),
    ] = None,
    broker_url: Annotated[
        str | None,
        typer.Option(
            help="RabbitMQ URL (amqp://USER:PASS@HOST/) that carries wake-ups between hub replicas (default: none).",
            envvar="FEDPACT_BROKER_URL",
        ),
    ] = None,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log one JSON object per line.", envvar="FEDPACT_JSON_LOGS")] = False,
    blob_store: Annotated[
        str | None,
        typer.Option(
            "--blob-store",
            envvar="FEDPACT_BLOB_STORE",
            help="Where blobs live: file:///PATH, or s3://BUCKET?endpoint=http://HOST:PORT (default: --data-dir/blobs).",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="Any hub setting as NAME=VALUE, e.g. --set max_tasks_per_user=20.")
    ] = None,
) -> None:
    """Run a hub until interrupted: embedded (SQLite and files under --data-dir) or one replica of a deployment."""
    from fedpact.hub.config import build_config, parse_setting
    from fedpact.hub.server import serve

    with errors():
        extra: dict[str, Any] = dict(parse_setting(s) for s in settings or [])
        if max_blob_mb is not None:
            extra["max_blob_bytes"] = max_blob_mb * 1024 * 1024
        for name, value in (("database_url", database_url), ("broker_url", broker_url)):
            if value is not None:
                extra[name] = value
        if blob_store:
            extra["blob_store"] = blob_store
        if json_logs:
            extra["json_logs"] = True
        if tls_cert is not None:
            extra["tls_cert"] = tls_cert
        if tls_key is not None:
            extra["tls_key"] = tls_key
        try:
            cfg = build_config(data_dir, config, extra, fallback_dir=Path("fedpact-hub"))
        except (OSError, TypeError, ValueError) as exc:
            raise FedpactError(f"hub settings: {exc}") from None
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    if cfg.blob_store:
        from fedpact.hub.blobstore import BlobStoreError, open_blob_store, redact

        try:
            open_blob_store(cfg.blob_store, cfg.data_dir)
        except (BlobStoreError, ImportError) as exc:
            err.print(f"[red]error:[/] --blob-store: {exc}")
            raise typer.Exit(2) from None
        except Exception as exc:  # noqa: BLE001 - an unreachable or refusing object store
            err.print(f"[red]error:[/] --blob-store {redact(cfg.blob_store)}: cannot open it: {exc}")
            raise typer.Exit(2) from None
    err.print(f"fedpact hub on {cfg.scheme}://{host}:{port} (data in {cfg.data_dir}); API docs at /api/v1/docs")
    serve(cfg, host=host, port=port)


# -- users --------------------------------------------------------------------------------
@app.command()
def register(
    name: str,
    organisation: Annotated[
        str, typer.Option("--organisation", "-o", prompt=True, show_default=False,
                          help="Your organisation (prompted for when not given).")
    ] = "",
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, envvar="FEDPACT_PASSWORD",
                     show_default=False, help="Prompted for when not given ($FEDPACT_PASSWORD also works)."),
    ] = "",
    hub: HubOpt = None,
) -> None:
    """Create an account on the hub."""
    with errors():
        c = _client(hub, login=False)
        user = c.register(name, password, organisation)
        out.print(f"registered {user['name']} ({user['organisation']}) on {c.url}; "
                  f"now run 'fedpact login {name}{_hub_flag()}'", highlight=False)


@app.command()
def login(
    name: str,
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, envvar="FEDPACT_PASSWORD", show_default=False,
                     help="Prompted for when not given ($FEDPACT_PASSWORD also works)."),
    ] = "",
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
    # A name is kept on one line (other columns wrap first) and never elided: "heart-…"
    # cannot be typed into the next command.
    longest = max([len(task["name"]) for task in tasks] + [4])
    for col in ("id", "name", "status", "privacy", "model", "creator", "participants", "created"):
        if col == "name":
            t.add_column(col, no_wrap=True, min_width=min(longest, 50), overflow="fold")
        else:
            t.add_column(col, overflow="fold")
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

    # One block per strategy, soft-wrapped: a parameter line is never split in the middle,
    # whatever the terminal's width (a table squeezed into 80 columns was unreadable).
    for a in CATALOG.values():
        out.print(f"{a.name}: {a.summary}", soft_wrap=True, highlight=False, markup=False)
        out.print(f"  privacy modes: {', '.join(a.privacy_modes)}", soft_wrap=True, highlight=False, markup=False)
        for p in a.params:
            default = "auto" if p.default is None else p.default
            out.print(f"  {p.name}: {p.type} = {default} ({p.bounds()}) {p.help}", soft_wrap=True, highlight=False,
                      markup=False)
        out.print()
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
        rounds = _rounds_if_allowed(c, info)
        if as_json:
            _print_json({**info, "rounds": rounds})
            return
        out.print(f"[bold]{info['name']}[/] (id {info['id']}) by {info['creator']}: "
                  f"[{STATUS_STYLE.get(info['status'], '')}]{info['status']}[/]")
        if info.get("description"):
            out.print(info["description"])
        out.print(f"admission: {_admission_text(info['definition'])}")
        if info.get("membership") and info["membership"] != "ADMITTED":
            out.print(f"your request to join: {info['membership']}")
        out.print(f"participants: {', '.join(info.get('participants', [])) or 'none yet (or not visible to you)'}", highlight=False)
        if info.get("requests"):
            out.print(f"waiting for your approval: {', '.join(info['requests'])} "
                      f"('fedpact task approve {info['name']} USER')")
        out.print("definition:")
        out.print(_definition_text(info["definition"]), highlight=False, markup=False)
        out.print("history:")
        for ev in info.get("events", []):
            out.print(f"  {ev['at'][:19].replace('T', ' ')}  {ev['status']:<9} {ev.get('reason') or ''}")
        for table in _rounds_tables(rounds, out.width) if rounds else []:
            out.print(table)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None and v != {}}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _definition_text(definition: dict[str, Any]) -> str:
    """The definition as the YAML a creator writes, without the unset (null) fields."""
    import yaml

    text = yaml.safe_dump(_without_nulls(definition), sort_keys=False, default_flow_style=None, width=88)
    return "\n".join("  " + line for line in text.rstrip().splitlines())


def _metric_cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


_SHORT = {"num_samples": "samples", "seconds": "secs", "selected": "picked"}


def _header(key: str) -> str:
    return _SHORT.get(key, key).replace("accuracy", "acc").replace("_", " ")


def _rounds_tables(rounds: list[dict[str, Any]], width: int) -> list[Table]:
    """Rounds as tables that fit ``width`` columns: metrics that do not fit beside the round,
    status and participants go to further tables keyed by round, so no number is ever elided.

    The metrics' own ``participants`` count is shown next to the names, so there is one
    participants column, not two.
    """
    from rich import box

    keys = sorted({k for r in rounds for k, v in (r.get("metrics") or {}).items()
                   if isinstance(v, (int, float)) and k != "participants"})
    cells = {k: [_metric_cell((r.get("metrics") or {}).get(k)) for r in rounds] for k in keys}
    need = {k: max([len(c) for c in cells[k]] + [max(len(w) for w in _header(k).split())]) + 3 for k in keys}
    numbers = [str(r["number"]) for r in rounds]
    names = [f"{len(r.get('participants', []))}: {', '.join(r.get('participants', []))}" for r in rounds]
    groups: list[list[str]] = [[]]
    used = 8 + 12 + 20  # round, status and a participants column that wraps
    for k in keys:
        if used + need[k] > width and groups[-1]:
            groups.append([])
            used = 8
        groups[-1].append(k)
        used += need[k]
    tables = []
    for i, group in enumerate(groups):
        t = Table(title="rounds" if i == 0 else None, box=box.SIMPLE_HEAD, pad_edge=False)
        t.add_column("round", justify="right", no_wrap=True)
        if i == 0:
            t.add_column("status", no_wrap=True)
            t.add_column("participants", overflow="fold", ratio=1)
        for k in group:
            t.add_column(_header(k), justify="right", no_wrap=True, min_width=need[k] - 3)
        for j, r in enumerate(rounds):
            lead = [numbers[j], r["status"], names[j]] if i == 0 else [numbers[j]]
            t.add_row(*lead, *[cells[k][j] for k in group])
        tables.append(t)
    return tables


def _rounds_if_allowed(c: HubClient, info: dict[str, Any]) -> list[dict[str, Any]]:
    """Rounds are for members; anyone else sees the public description only."""
    try:
        return c.list_rounds(info["id"])
    except HubError as exc:
        if exc.status == 403:
            return []
        raise


def _admission_text(definition: dict[str, Any]) -> str:
    a = definition.get("admission") or {"mode": "approval"}
    mode = a.get("mode", "approval")
    if mode != "invite":
        return {"open": "open (joining admits)", "approval": "approval (the creator approves each request)"}.get(mode, mode)
    invited = [*a.get("users", []), *(f"organisation {o}" for o in a.get("organisations", []))]
    return f"invite ({', '.join(invited)})"


@task_app.command("requests")
def task_requests(task: str, as_json: Annotated[bool, typer.Option("--json")] = False, hub: HubOpt = None) -> None:
    """Join requests waiting for your approval (tasks you created)."""
    with errors():
        items = _client(hub).join_requests(task)
        if as_json:
            _print_json(items)
        elif not items:
            out.print(f"no pending requests for {task}")
        else:
            t = Table()
            for col in ("user", "organisation", "asked at"):
                t.add_column(col)
            for r in items:
                t.add_row(r["user"], r["organisation"], r["joined_at"][:19].replace("T", " "))
            out.print(t)
            out.print(f"approve with 'fedpact task approve {task} USER', decline with 'fedpact task decline {task} USER'")


@task_app.command("approve")
def task_approve(task: str, user: str, hub: HubOpt = None) -> None:
    """Admit a user who asked to join your task."""
    with errors():
        _client(hub).approve(task, user)
        out.print(f"admitted {user} to {task}")


@task_app.command("decline")
def task_decline(task: str, user: str, hub: HubOpt = None) -> None:
    """Refuse a user's request to join your task."""
    with errors():
        _client(hub).decline(task, user)
        out.print(f"declined {user}'s request to join {task}")


@task_app.command("remove")
def task_remove(task: str, user: str, hub: HubOpt = None) -> None:
    """Take an admitted member out of your task; rounds go on without them from the next one."""
    with errors():
        _client(hub).remove_member(task, user)
        out.print(f"removed {user} from {task}; the hub refuses their messages from now on")


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
            out.print(f"task {task} kept (nothing deleted)")
            return
        _client(hub).delete_task(task)
        out.print(f"deleted task {task}")


# -- membership ---------------------------------------------------------------------------
@app.command()
def join(task: str, hub: HubOpt = None) -> None:
    """Join a task as a data owner, or ask to if its creator approves each participant (after checking
    this installation can train it)."""
    from fedpact.common.extras import check_task
    with errors():
        c = _client(hub)
        info = c.get_task(task)
        check_task(info["definition"], info["name"])
        if c.join(task).get("status") == "PENDING":
            out.print(f"asked to join {task}; its creator must approve you (see 'fedpact task show {task}'). "
                      f"'fedpact participate {task} --data FILE' can start now: it waits for the approval")
        else:
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
@app.command()
def aggregate(
    task: str,
    resume: Annotated[bool, typer.Option("--resume", help="Continue after the last completed round.")] = False,
    eval_data: Annotated[Path | None, typer.Option(help="Data to evaluate the global model on each round.")] = None,
    label: Annotated[str | None, typer.Option(help="Label column of a CSV file (default: the task's data.label).")] = None,
    labels: Annotated[Path | None, typer.Option(help="IDX labels file that goes with IDX images.")] = None,
    missing: Annotated[str | None, typer.Option(
        help="'error', 'drop' or 'impute' for missing values (default: the task's data.missing).")] = None,
    quorum_timeout: Annotated[float | None, typer.Option(help="Give up if the quorum is not reached in this many seconds.")] = None,
    mlflow_uri: Annotated[str | None, typer.Option(
        "--mlflow-uri", envvar="MLFLOW_TRACKING_URI",
        help="Track the task as an MLflow run on this tracking server (needs fedpact[mlflow]).")] = None,
    hub: HubOpt = None,
) -> None:
    """Run the aggregator of a task you created, until it completes."""
    from fedpact.cli.progress import RichProgress
    from fedpact.common.extras import check_task
    from fedpact.runtime.aggregator import run_aggregator

    with errors():
        c = _client(hub)
        info = c.get_task(task)
        check_task(info["definition"], info["name"])
        data = _load_for_task(c, task, eval_data, label, labels, missing) if eval_data else None
        progress = RichProgress()
        options: dict[str, Any] = {"eval_data": data, "resume": resume, "progress": progress,
                                   "quorum_timeout_s": quorum_timeout}
        try:
            if mlflow_uri:
                from fedpact.integrations.mlflow import run_tracked

                result = run_tracked(c, task, mlflow_uri, **options)
            else:
                result = run_aggregator(c, task, **options)
        finally:
            progress.close()
        out.print(f"task {result.task_name} {result.status} after {result.rounds_completed} rounds; "
                  f"model {result.model_id} stored on the hub")


def _load_for_task(c: HubClient, task: str, path: Path, label: str | None, labels: Path | None,
                   missing: str | None) -> Any:
    """Read the data as the task's definition says (label, header, missing, categories)."""
    from fedpact.common.definition import parse_definition
    from fedpact.data.prepare import load_for_task

    try:
        schema = parse_definition(c.get_task(task)["definition"]).data
    except (HubError, FedpactError, KeyError, ValueError):
        schema = None  # not readable before admission: the old defaults, and the join reports why
    return load_for_task(path, schema, label=label, missing=missing, labels_path=labels)


@app.command()
def participate(
    task: str,
    data: Annotated[Path, typer.Option(help="Your local data: CSV, NPZ or IDX images.")],
    label: Annotated[str | None, typer.Option(help="Label column of a CSV file (default: the task's data.label).")] = None,
    labels: Annotated[Path | None, typer.Option(help="IDX labels file that goes with IDX images.")] = None,
    missing: Annotated[str | None, typer.Option(
        help="'error', 'drop' or 'impute' for missing values (default: the task's data.missing).")] = None,
    model_dir: Annotated[Path, typer.Option(help="Where to save the final model.")] = Path("fedpact-models"),
    threads: Annotated[int | None, typer.Option(help="CPU threads for local training.")] = None,
    hub: HubOpt = None,
) -> None:
    """Train on your local data whenever the task's aggregator asks, until the task completes."""
    from fedpact.cli.progress import RichProgress
    from fedpact.common.extras import check_task
    from fedpact.runtime.kind_participant import TaskParticipant
    from fedpact.runtime.participant import run_participant

    with errors():
        c = _client(hub)
        info = c.get_task(task)
        check_task(info["definition"], info["name"])
        dataset = _load_for_task(c, task, data, label, labels, missing)
        progress = RichProgress()
        try:
            result = run_participant(c, task, TaskParticipant(dataset, threads=threads), progress=progress,
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


@model_app.command("card")
def model_card(
    model_id: Annotated[int, typer.Argument(help="Model id (see 'fedpact model list').")],
    description: Annotated[str | None, typer.Option(help="Set the description (task creator).")] = None,
    licence: Annotated[str | None, typer.Option(help="Set the licence, e.g. CC-BY-4.0 (task creator).")] = None,
    hub: HubOpt = None,
) -> None:
    """Show a model's card as JSON, or set its description and licence."""
    with errors():
        c = _client(hub)
        if description is not None or licence is not None:
            card = c.set_model_card(model_id, description=description, licence=licence)
        else:
            card = c.model_card(model_id)
        _print_json(card)


@model_app.command("download")
def model_download(
    task: Annotated[str | None, typer.Argument(help="Task whose final model to download.")] = None,
    model_id: Annotated[int | None, typer.Option("--id", help="Download this model id instead.")] = None,
    # A str, not a Path: "-o models/" must keep its slash to mean "into this new directory".
    output: Annotated[str, typer.Option("--output", "-o", help="File, or directory (existing, or ending in /).")] = ".",
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
def predict(
    model: Annotated[Path, typer.Argument(help="A model file from 'fedpact model download' (safetensors).")],
    data: Annotated[Path, typer.Option(help="Samples to predict: CSV with a header row, or NPZ with an array 'x'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write.")] = Path("predictions.csv"),
) -> None:
    """Predict with a downloaded model: one row per sample, the class and each class's probability."""
    from fedpact.inference import load_model, read_features, write_predictions

    with errors():
        trained = load_model(model)
        x = read_features(data, trained.schema)
        path = write_predictions(output, trained, x)
        out.print(f"{len(x)} predictions written to {path}", highlight=False)


@model_app.command("export")
def model_export(
    model: Annotated[Path, typer.Argument(help="A model file from 'fedpact model download' (safetensors).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Export format: onnx.")] = "onnx",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: MODEL.onnx).")] = None,
) -> None:
    """Export a downloaded model for serving elsewhere (ONNX; needs fedpact[onnx])."""
    from fedpact.inference import load_model

    with errors():
        trained = load_model(model)
        path = trained.export(output or model.with_suffix(f".{fmt}"), fmt)
        out.print(f"model exported to {path} (input 'x', outputs 'probabilities' and 'label')", highlight=False)


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


def _show_hosted(st: dict[str, Any], task: str) -> None:
    name = st.get("task_name") or task
    line = f"hosted aggregator of task {name}: {st['state']}"
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
    mlflow_uri: Annotated[str | None, typer.Option(
        "--mlflow-uri", help="Track the task as an MLflow run on this server (the hub needs fedpact[mlflow]).")] = None,
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
            spec = {"blob": c.upload_blob(task, eval_data, private=True), "format": fmt}
            if label and fmt == "csv":
                spec["label"] = label
        st = c.start_hosted_aggregator(task, resume=resume, eval_data=spec, mlflow_uri=mlflow_uri)
        _show_hosted(st, task)
        out.print(f"follow it with 'fedpact hosted log {task} --follow' or on the task's web page")


@hosted_app.command("status")
def hosted_status(task: str, as_json: Annotated[bool, typer.Option("--json")] = False, hub: HubOpt = None) -> None:
    """Show whether the hub runs the task's aggregator, and how it ended."""
    with errors():
        st = _client(hub).hosted_aggregator_status(task)
        _print_json(st) if as_json else _show_hosted(st, task)


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
        _show_hosted(_client(hub).stop_hosted_aggregator(task), task)


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="fedpact")


if __name__ == "__main__":  # pragma: no cover
    main()
