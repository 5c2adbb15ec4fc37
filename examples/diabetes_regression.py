"""Regression across sites: disease progression from scikit-learn's bundled diabetes data.

The 442 patients are split across four sites (unevenly, as clinics are). The task is
``data.task: regression`` with the NumPy ``linear_regression`` model: features *and* the
target are standardised with federated means and deviations (each site shares only sums,
sums of squares and counts), each round every site trains locally and the sample-weighted
average becomes the next global model, and MSE, MAE and R2 are pooled from per-site sums,
so they equal what an evaluation on all hold-out patients together would give. The result
is compared with a least-squares fit on the pooled training data.

The federation runs in this process, with the library functions each party calls; the
participant runtime takes regression tasks once it carries the target moments (see
docs/algorithms.md "Task kinds").

    python examples/diabetes_regression.py
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.datasets import load_diabetes

from fedpact.algorithms import weighted_average
from fedpact.algorithms.standardize import (
    apply_standardization,
    combine_moments,
    combine_target_moments,
    local_moments,
    standardize_target,
    unstandardize_target,
)
from fedpact.common.definition import parse_definition
from fedpact.data import Dataset
from fedpact.models import build_model
from fedpact.models.metrics import add_sums, regression_metrics, regression_sums

DEFINITION = {
    "model": {"name": "linear_regression"},
    "rounds": 30,
    "local_epochs": 2,
    "batch_size": 16,
    "learning_rate": 0.02,
    "quorum": 4,
    "data": {"task": "regression", "features": 10, "label": "progression", "standardize": True},
    "evaluation": {"holdout": 0.25},
}
SHARES = (0.4, 0.3, 0.2, 0.1)


def split_sites(seed: int = 0) -> list[Dataset]:
    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    cuts = np.cumsum([int(s * len(x)) for s in SHARES[:-1]])
    return [Dataset(x[idx], y[idx], continuous=True) for idx in np.split(order, cuts)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--max-gap", type=float, default=0.05, help="exit 1 if R2 falls short of the centralised fit by more")
    args = ap.parse_args(argv)
    d = parse_definition(DEFINITION)
    parts = [site.split(d.evaluation.holdout, seed=d.seed + i) for i, site in enumerate(split_sites(d.seed))]
    for i, (train, test) in enumerate(parts):
        print(f"site {i + 1}: {len(train)} training and {len(test)} hold-out patients")
    # federated standardisation of the features and the target: only sums travel
    moments = [local_moments(train.x, train.y) for train, _ in parts]
    fmean, fstd = combine_moments(moments)
    ymean, ystd = combine_target_moments(moments)
    sites = [(apply_standardization(tr.x, fmean, fstd), standardize_target(tr.y, ymean, ystd),
              apply_standardization(te.x, fmean, fstd), te.y) for tr, te in parts]
    global_model = build_model(d.model, d.data, seed=d.seed)
    local = build_model(d.model, d.data, seed=d.seed)
    for r in range(1, d.rounds + 1):
        updates, counts = [], []
        for i, (x, t, _, _) in enumerate(sites):
            local.set_weights(global_model.get_weights())
            local.fit(x, t, epochs=d.local_epochs, batch_size=d.batch_size, lr=d.learning_rate, seed=d.seed + r + i)
            updates.append(local.get_weights())
            counts.append(len(x))
        global_model.set_weights(weighted_average(updates, counts))
        sums = [regression_sums(ty, unstandardize_target(global_model.predict(tx), ymean, ystd))
                for _, _, tx, ty in sites]
        m = regression_metrics(add_sums(sums))
        if r == 1 or r % 10 == 0:
            print(f"round {r:>2}: hold-out MSE {m['mse']:.0f}  MAE {m['mae']:.1f}  R2 {m['r2']:.3f}")
    x_all = np.concatenate([s[0] for s in sites])
    y_all = np.concatenate([tr.y for tr, _ in parts])
    design = np.column_stack([x_all, np.ones(len(x_all))])
    coef = np.linalg.lstsq(design, y_all, rcond=None)[0]
    central = regression_metrics(add_sums([regression_sums(ty, np.column_stack([tx, np.ones(len(tx))]) @ coef)
                                           for _, _, tx, ty in sites]))
    print(f"centralised least squares on the pooled training data: hold-out R2 {central['r2']:.3f}")
    print(f"final model: pooled hold-out R2 {m['r2']:.3f}, MSE {m['mse']:.0f} after {d.rounds} rounds")
    return 0 if m["r2"] >= central["r2"] - args.max_gap else 1


if __name__ == "__main__":
    sys.exit(main())
