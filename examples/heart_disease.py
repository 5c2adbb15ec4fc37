"""Cross-silo: four hospitals train one heart-disease classifier without pooling records.

Each of the four original UCI heart-disease sites (Cleveland, Budapest, Zurich/Basel,
Long Beach) is one participant with its own file, as it would be in practice: sites differ
in size, label balance and missing values. The features are the eight that every site
mostly records (age, sex, chest-pain type, resting blood pressure, maximum heart rate,
exercise angina, ST depression, resting ECG); rows missing any of them are dropped at the
site. The target is the usual binary one, ``num > 0``. Federated standardisation gives all
sites the same feature scaling without sharing any record.

    python examples/heart_disease.py --data ../shared/data/heart-disease
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

import fedpact
from fedpact.data.loaders import load_csv
from fedpact.runtime import DataParticipant, Progress

COLUMNS = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak",
           "slope", "ca", "thal", "num"]
FEATURES = ["age", "sex", "cp", "trestbps", "thalach", "exang", "oldpeak", "restecg"]
SITES = {"cleveland": "Cleveland Clinic", "hungarian": "Hungarian Institute of Cardiology",
         "switzerland": "University Hospitals Zurich and Basel", "va": "V.A. Medical Center Long Beach"}

DEFINITION = {
    "model": {"name": "softmax_regression", "params": {"l2": 0.001}},
    "rounds": 20,
    "local_epochs": 2,
    "batch_size": 16,
    "learning_rate": 0.05,
    "quorum": 4,
    "min_participants": 3,
    "round_timeout_s": 120,
    "data": {"kind": "tabular", "features": FEATURES, "label": "num", "classes": [0, 1], "standardize": True},
    "evaluation": {"holdout": 0.25},
    # The network invites its four member hospitals by organisation; nobody else may join.
    "admission": {"mode": "invite", "organisations": sorted(SITES.values())},
    "seed": 0,
}


def load_site(folder: Path, site: str) -> fedpact.Dataset:
    ds = load_csv(folder / f"processed.{site}.data", label="num", features=FEATURES, header=COLUMNS, missing="drop")
    return fedpact.Dataset(ds.x, (ds.y > 0).astype(np.int64), ds.feature_names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "heart-disease")
    ap.add_argument("--min-accuracy", type=float, default=0.70, help="exit 1 below this hold-out accuracy")
    args = ap.parse_args(argv)
    sites = {name: load_site(args.data, name) for name in SITES}
    for name, ds in sites.items():
        print(f"{SITES[name]:<40} {len(ds):>4} patients, {np.mean(ds.y):.0%} with heart disease")

    with fedpact.Client.embedded(tempfile.mkdtemp(prefix="fedpact-heart-")) as coordinator:
        coordinator.register("coordinator", "heart-example-pw", "Research network")
        coordinator.login("coordinator", "heart-example-pw")
        coordinator.create_task("heart-disease", DEFINITION, "Binary heart disease (num > 0), four hospitals")
        clients, results, errors = {}, {}, []
        for name in SITES:
            c = fedpact.Client(coordinator.url)
            c.register(f"{name}-site", "heart-example-pw", SITES[name])
            c.login(f"{name}-site", "heart-example-pw")
            clients[name] = c

        def participate(name: str) -> None:
            try:
                results[name] = clients[name].run_participant("heart-disease", DataParticipant(sites[name]),
                                                              progress=Progress(quiet=True))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=participate, args=(n,)) for n in SITES]
        for t in threads:
            t.start()
        outcome = coordinator.run_aggregator("heart-disease", progress=Progress(quiet=True))
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
