"""``fedpact simulate``: a task definition with N virtual participants, no hub (docs/simulation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

out = Console()


def _table(df: Any, title: str) -> Table:
    table = Table(title=title)
    table.add_column(df.index.name or "round")
    for col in df.columns:
        table.add_column(str(col), justify="right")
    for idx, row in df.iterrows():
        table.add_row(str(idx), *(_cell(v) for v in row.tolist()))
    return table


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def simulate_cmd(
    definition: Annotated[Path, typer.Argument(help="Task definition, YAML or JSON.")],
    participants: Annotated[int | None, typer.Option(
        help="Virtual participants (default: one per file or column value).")] = None,
    partition: Annotated[str, typer.Option(help="iid, dirichlet:ALPHA, shards:K or column:NAME.")] = "iid",
    data: Annotated[str, typer.Option(
        help="builtin:digits, a data file, or a directory/glob with one file per participant.")] = "builtin:digits",
    label: Annotated[str, typer.Option(help="The label column of CSV data.")] = "label",
    rounds: Annotated[int | None, typer.Option(help="Rounds (default: the definition's).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of partitions, sampling, dropouts and training.")] = None,
    fraction: Annotated[float | None, typer.Option(help="Share of participants sampled per round.")] = None,
    backend: Annotated[str, typer.Option(help="process (default), ray or inline.")] = "process",
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: one per core).")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster to run on (with --backend ray).")] = None,
    dropout: Annotated[float, typer.Option(help="Per-round probability that a selected participant drops out.")] = 0.0,
    stragglers: Annotated[float, typer.Option(help="Per-round probability that a selected participant is slowed down.")] = 0.0,
    slowdown: Annotated[float, typer.Option(help="How much slower a straggler trains.")] = 10.0,
    speed: Annotated[float, typer.Option(help="Median compute speed, samples per second (simulated clock).")] = 1000.0,
    speed_spread: Annotated[float, typer.Option(help="Log-normal spread of compute speeds across participants.")] = 0.0,
    compare: Annotated[str | None, typer.Option(
        help="Variants to compare on the same partitions, e.g. fedavg,fedadam,median or open,dp.")] = None,
    plot: Annotated[Path, typer.Option(help="Where --compare writes its plot (PNG).")] = Path("simulation-comparison.png"),
    model_out: Annotated[Path | None, typer.Option("--model-out", help="Save the final model here (fedpact.load_model reads it).")] = None,
    history_out: Annotated[Path | None, typer.Option("--history-out", help="Save the history as CSV here.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Simulate a federation on this machine (or a Ray cluster): no hub, no accounts, the real round code."""
    from fedpact.cli.main import errors

    options: dict[str, Any] = dict(label=label, rounds=rounds, fraction=fraction, backend=backend, workers=workers,
                                   ray_address=ray_address, dropout=dropout, stragglers=stragglers, slowdown=slowdown,
                                   speed=speed, speed_spread=speed_spread, progress=not quiet)
    with errors():
        if compare:
            from fedpact.simulation.compare import compare as run_compare

            result = run_compare(definition, compare, participants, partition=partition, data=data, seed=seed,
                                 **options)
            out.print(_table(result.table, f"{len(result.results)} variants, same partitions ({partition})"))
            out.print(f"plot written to {result.plot(plot)}")
            return
        from fedpact.simulation import simulate

        res = simulate(definition, participants, partition=partition, data=data, seed=seed, **options)
        history = res.history
        cols = [c for c in ("round", "participants", "eval_accuracy", "eval_loss", "train_loss", "epsilon",
                            "seconds", "sim_clock") if c in history.columns and history[c].notna().any()]
        out.print(_table(history[cols].set_index("round"), f"simulation {res.status.lower()}: {res.reason}"))
        if model_out is not None:
            out.print(f"final model saved to {res.save_model(model_out)}")
        if history_out is not None:
            history_out.parent.mkdir(parents=True, exist_ok=True)
            history.to_csv(history_out, index=False)
            out.print(f"history saved to {history_out}")
        if res.status != "COMPLETE":
            raise typer.Exit(1)
