"""Cross-silo: four hospitals train one heart-disease classifier without pooling records.

Each of the four original UCI heart-disease sites (Cleveland, Budapest, Zurich/Basel,
Long Beach) is one participant with its own file, as it would be in practice: sites differ
in size, label balance and missing values. All 13 features are used, as the definition
declares them: the files have no header row (``columns``), chest-pain type, resting ECG,
ST slope and thal are one-hot encoded by their declared categories, and missing values are
imputed with the *federated* median of each column, computed from every site's histogram
counts (no site's own figure, no record leaves a site). The target is the usual binary one,
``num > 0``. Federated standardisation gives all sites the same feature scaling.

    python examples/heart_disease.py              # the copies shipped in examples/data
    python examples/heart_disease.py --data DIR   # or the same four files elsewhere
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

import fedpact
from fedpact.common.definition import parse_definition
from fedpact.data.prepare import federated_fill_values, impute, load_task_data
from fedpact.runtime import Progress
from fedpact.runtime.kind_participant import TaskParticipant

COLUMNS = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak",
           "slope", "ca", "thal", "num"]
FEATURES = COLUMNS[:-1]
SITES = {"cleveland": "Cleveland Clinic", "hungarian": "Hungarian Institute of Cardiology",
         "switzerland": "University Hospitals Zurich and Basel", "va": "V.A. Medical Center Long Beach"}

DEFINITION = {
    "model": {"name": "logistic_regression", "params": {"l2": 0.001}},
    "rounds": 20,
    "local_epochs": 2,
    "batch_size": 16,
    "learning_rate": 0.05,
    "quorum": 4,
    "min_participants": 3,
    "round_timeout_s": 120,
    "data": {
        "kind": "tabular", "features": FEATURES, "label": "num", "classes": [0, 1], "standardize": True,
        "header": False, "columns": COLUMNS, "missing": "impute", "impute": "median",
        "categorical": {"cp": [1, 2, 3, 4], "restecg": [0, 1, 2], "slope": [1, 2, 3], "thal": [3, 6, 7]},
    },
    "evaluation": {"holdout": 0.25},
    # The network invites its four member hospitals by organisation; nobody else may join.
    "admission": {"mode": "invite", "organisations": sorted(SITES.values())},
    "seed": 0,
}
DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "heart-disease"


def load_sites(folder: Path) -> dict[str, fedpact.Dataset]:
    """Each site reads its own file as the definition says; gaps stay NaN until imputed."""
    schema = parse_definition(DEFINITION).data
    sites = {}
    for name in SITES:
        ds = load_task_data(folder / f"processed.{name}.data", schema)
        sites[name] = fedpact.Dataset(ds.x, (ds.y > 0).astype(np.int64), ds.feature_names)
    return sites


def prepare_sites(sites: dict[str, fedpact.Dataset]) -> dict[str, fedpact.Dataset]:
    """Federated median imputation in one process (bench/algorithms.py's centralised twin uses it).

    The federation in :func:`main` runs the same exchange through the runtime: the sites'
    range and histogram summaries travel to the aggregator, the fills come back.
    """
    fills = federated_fill_values(list(sites.values()), parse_definition(DEFINITION).data)
    print("federated medians filled in: " + ", ".join(f"{c} {v:.1f}" for c, v in fills.items()))
    return {name: impute(ds, fills) for name, ds in sites.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding the four processed.*.data files")
    ap.add_argument("--min-accuracy", type=float, default=0.70, help="exit 1 below this hold-out accuracy")
    args = ap.parse_args(argv)
    raw = load_sites(args.data)
    for name, ds in raw.items():
        gaps = int(np.isnan(ds.x).any(axis=1).sum())
        print(f"{SITES[name]:<40} {len(ds):>4} patients, {np.mean(ds.y):.0%} with heart disease, "
              f"{gaps} with missing values")

    with fedpact.Client.embedded(tempfile.mkdtemp(prefix="fedpact-heart-")) as coordinator:
        coordinator.register("coordinator", "heart-example-pw", "Research network")
        coordinator.login("coordinator", "heart-example-pw")
        coordinator.create_task("heart-disease", DEFINITION, "Binary heart disease (num > 0), four hospitals")
        clients, results, errors = {}, {}, []
        for name, hospital in SITES.items():
            c = fedpact.Client(coordinator.url)
            c.register(f"{name}-site", "heart-example-pw", hospital)
            c.login(f"{name}-site", "heart-example-pw")
            clients[name] = c

        def participate(name: str) -> None:
            try:
                # raw data, gaps included: the fills come from the aggregator's imputation exchange
                results[name] = clients[name].run_participant("heart-disease", TaskParticipant(raw[name]),
                                                              progress=Progress(quiet=True))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=participate, args=(n,)) for n in SITES]
        for t in threads:
            t.start()
        outcome = coordinator.run_aggregator("heart-disease", progress=Progress(quiet=True))
        fills = coordinator.hub.get_checkpoint("heart-disease")["state"]["fills"]
        print("federated medians filled in: " + ", ".join(f"{c} {v:.1f}" for c, v in fills.items()))
        for t in threads:
            t.join(60)
        for c in clients.values():
            c.close()
    if errors:
        print(f"a site failed: {errors[0]}")
        return 1
    rounds = outcome.history
    for entry in rounds[:: max(1, len(rounds) // 5)] + rounds[-1:]:
        mt = entry["metrics"]
        print(f"round {entry['round']:>2}: train loss {mt['train_loss']:.3f}  "
              f"hold-out accuracy {mt.get('val_accuracy', float('nan')):.3f}")
    acc = outcome.metrics["val_accuracy"]
    print(f"final model: hold-out accuracy across the four sites {acc:.3f} after {outcome.rounds_completed} rounds")
    return 0 if acc >= args.min_accuracy else 1


if __name__ == "__main__":
    sys.exit(main())
