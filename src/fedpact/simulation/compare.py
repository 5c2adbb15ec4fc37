"""``fedpact.compare``: several strategies or privacy modes on the same partitions, one table, one plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpact.common.errors import FedpactError
from fedpact.simulation.data import load_simulation_data
from fedpact.simulation.run import SimulationResult, _definition, simulate

#: Privacy modes a variant may name; any other name is a strategy.
PRIVACY_VARIANTS = ("open", "dp", "secure", "secure+dp")
_DP_VARIANTS = ("dp", "secure+dp")
#: The columns of the comparison table, in order, where the runs have them.
_COLUMNS = ("rounds", "eval_accuracy", "eval_loss", "train_loss", "val_accuracy", "epsilon", "participants", "seconds")


@dataclass
class Comparison:
    """The runs of one comparison, by variant name."""

    results: dict[str, SimulationResult]

    @property
    def table(self) -> Any:
        """A pandas DataFrame, one row per variant: the last round's metrics and the total seconds."""
        import pandas as pd

        rows = []
        for name, res in self.results.items():
            last = res.records[-1] if res.records else {}
            row: dict[str, Any] = {"variant": name, "status": res.status, "rounds": len(res.records)}
            row.update({k: last.get(k) for k in _COLUMNS[1:-1] if k in last})
            row["seconds"] = round(sum(r["seconds"] for r in res.records), 2)
            rows.append(row)
        return pd.DataFrame.from_records(rows).set_index("variant")

    def plot(self, path: str | Path, metric: str | None = None) -> Path:
        """One PNG: ``metric`` (eval_accuracy where the runs have it) per round, one line per variant."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise FedpactError("the comparison plot needs matplotlib: pip install 'fedpact[sim]'") from None
        metric = metric or self._default_metric()
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, res in self.results.items():
            pts = [(r["round"], r[metric]) for r in res.records if r.get(metric) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=name)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def _default_metric(self) -> str:
        for metric in ("eval_accuracy", "train_loss"):
            if any(r.get(metric) is not None for res in self.results.values() for r in res.records):
                return metric
        raise FedpactError("the runs recorded no metric to plot")


def variant_overrides(name: str, definition: Mapping[str, Any]) -> dict[str, Any]:
    """The definition fields a variant changes: the privacy mode, or the strategy."""
    if name in PRIVACY_VARIANTS:
        if name not in _DP_VARIANTS:  # their parameters (clip_norm, noise, budget) belong to the dp modes only
            return {"privacy": {"mode": name}}
        return {"privacy": {**dict(definition.get("privacy") or {}), "mode": name}}
    return {"algorithm": {"name": name}}


def parse_variants(text: str | Sequence[str]) -> list[str]:
    names = [v.strip() for v in text.split(",")] if isinstance(text, str) else [str(v).strip() for v in text]
    names = [n for n in names if n]
    if len(names) < 1 or len(set(names)) != len(names):
        raise FedpactError(f"--compare needs distinct variant names separated by commas, got {text!r}")
    return names


def compare(definition: Any, variants: str | Sequence[str], participants: int | None = None, *,
            partition: str = "iid", data: str = "builtin:digits", label: str = "label", seed: int | None = None,
            **options: Any) -> Comparison:
    """Run each variant (a strategy name such as ``fedadam``, or a privacy mode) on the same partitions.

    To compare privacy modes, give the definition the dp parameters (clip_norm, noise or
    epsilon budget) under ``privacy``: ``dp`` and ``secure+dp`` variants use them, the
    others drop them.
    """
    from fedpact.sdk import load_definition

    raw = load_definition(definition)
    names = parse_variants(variants)
    base = _definition(raw, {"seed": seed})
    shared = load_simulation_data(data, partition, participants, base.seed, label)
    shared.source = data
    results: dict[str, SimulationResult] = {}
    for name in names:
        variant = {**raw, **variant_overrides(name, raw)}
        results[name] = simulate(variant, data=shared, partition=partition, seed=seed, **options)
    return Comparison(results)
