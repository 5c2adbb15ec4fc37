"""Regression across sites: disease progression from scikit-learn's bundled diabetes data.

The 442 patients are split across four sites (unevenly, as clinics are). The task is
``data.task: regression`` with the NumPy ``linear_regression`` model: features *and* the
target are standardised with federated means and deviations (each site shares only sums,
sums of squares and counts), each round every site trains locally and the sample-weighted
average becomes the next global model, and MSE, MAE and R2 are pooled from per-site sums,
so they equal what an evaluation on all hold-out patients together would give. The result
is compared with a least-squares fit on the pooled training data.

The federation runs through fedpact's real runtime: an embedded hub, the aggregator in
this process and each site a participant thread (``TaskParticipant``) talking to it over
HTTP, as separate organisations would.

    python examples/diabetes_regression.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading

import numpy as np
from sklearn.datasets import load_diabetes

import fedpact
from fedpact.common.definition import parse_definition
from fedpact.data import Dataset
from fedpact.models.metrics import add_sums, regression_metrics, regression_sums
from fedpact.runtime import Progress
from fedpact.runtime.kind_participant import TaskParticipant

DEFINITION = {
    "model": {"name": "linear_regression"},
    "rounds": 30,
    "local_epochs": 2,
    "batch_size": 16,
    "learning_rate": 0.02,
    "quorum": 4,
    "data": {"task": "regression", "features": 10, "label": "progression", "standardize": True},
    "evaluation": {"holdout": 0.25},
    "admission": {"mode": "invite", "organisations": ["Clinic 1", "Clinic 2", "Clinic 3", "Clinic 4"]},
}
SHARES = (0.4, 0.3, 0.2, 0.1)


def split_sites(seed: int = 0) -> list[Dataset]:
    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    cuts = np.cumsum([int(s * len(x)) for s in SHARES[:-1]])
    return [Dataset(x[idx], y[idx], continuous=True) for idx in np.split(order, cuts)]


def federate(sites: list[Dataset]) -> tuple[fedpact.runtime.AggregatorResult, list[BaseException]]:
    """The task on an embedded hub: one participant thread per site, the aggregator here."""
    with fedpact.Client.embedded(tempfile.mkdtemp(prefix="fedpact-diabetes-")) as coordinator:
        coordinator.register("coordinator", "diabetes-example-pw", "Research network")
        coordinator.login("coordinator", "diabetes-example-pw")
        coordinator.create_task("diabetes", DEFINITION, "Disease progression after one year, four clinics")
        errors: list[BaseException] = []
        clients = []
        for i in range(len(sites)):
            c = fedpact.Client(coordinator.url)
            c.register(f"clinic-{i + 1}", "diabetes-example-pw", f"Clinic {i + 1}")
            c.login(f"clinic-{i + 1}", "diabetes-example-pw")
            clients.append(c)

        def participate(i: int) -> None:
            try:
                clients[i].run_participant("diabetes", TaskParticipant(sites[i]), progress=Progress(quiet=True))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=participate, args=(i,)) for i in range(len(sites))]
        for t in threads:
            t.start()
        outcome = coordinator.run_aggregator("diabetes", progress=Progress(quiet=True))
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
    return outcome, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--max-gap", type=float, default=0.05, help="exit 1 if R2 falls short of the centralised fit by more")
    args = ap.parse_args(argv)
    d = parse_definition(DEFINITION)
    sites = split_sites(d.seed)
    # each participant holds out the same share of its rows, split as the runtime splits them
    parts = [site.split(d.evaluation.holdout, seed=d.seed) for site in sites]
    for i, (train, test) in enumerate(parts):
        print(f"site {i + 1}: {len(train)} training and {len(test)} hold-out patients")
    outcome, errors = federate(sites)
    if errors:
        print(f"a site failed: {errors[0]}")
        return 1
    for entry in outcome.history:
        m = entry["metrics"]
        if entry["round"] == 1 or entry["round"] % 10 == 0:
            print(f"round {entry['round']:>2}: hold-out MSE {m.get('val_mse', float('nan')):.0f}  "
                  f"MAE {m.get('val_mae', float('nan')):.1f}  R2 {m.get('val_r2', float('nan')):.3f}")
    design = np.column_stack([np.concatenate([tr.x for tr, _ in parts]), np.ones(sum(len(tr) for tr, _ in parts))])
    coef = np.linalg.lstsq(design, np.concatenate([tr.y for tr, _ in parts]), rcond=None)[0]
    central = regression_metrics(add_sums([regression_sums(te.y, np.column_stack([te.x, np.ones(len(te))]) @ coef)
                                           for _, te in parts]))
    fed = outcome.metrics
    print(f"centralised least squares on the pooled training data: hold-out R2 {central['r2']:.3f}")
    print(f"final model: pooled hold-out R2 {fed['val_r2']:.3f}, MSE {fed['val_mse']:.0f} "
          f"after {outcome.rounds_completed} rounds")
    return 0 if fed["val_r2"] >= central["r2"] - args.max_gap else 1


if __name__ == "__main__":
    sys.exit(main())
