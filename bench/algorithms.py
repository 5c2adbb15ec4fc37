"""Accuracy of the aggregation strategies, and federated against centralised training.

Sections (``--only`` picks some; all by default):

* ``digits``: every strategy named in ``--strategies`` (default: the built-in ones the
  definition accepts) on scikit-learn's digits, split across 10 participants by a
  Dirichlet(0.3) label skew (the non-IID setting), through an embedded hub with real
  training; the aggregator evaluates the global model on a held-out 25% after every round.
  With ``--poisoned 0.2`` the same again with 2 of the 10 participants sending poisoned
  updates (``--attack scaled``: their update times -10; ``random``: Gaussian noise of the
  update's scale times 10). Strategies added later are benchmarked by naming them.
* ``heart``: the heart-disease example (all 13 features, declared one-hot, federated median
  imputation, four hospitals, 20 rounds) against the same model trained centrally on the
  pooled training rows: the same per-site hold-out split, the same prepared features, the
  same number of passes over the data; scikit-learn's LogisticRegression on the same rows
  as a reference. Accuracy on the pooled hold-out rows of the four sites.

    .venv/bin/python bench/algorithms.py                         # everything (~3 min)
    .venv/bin/python bench/algorithms.py --only heart
    .venv/bin/python bench/algorithms.py --strategies fedavg fedprox --poisoned 0.2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from _common import machine_facts, print_machine, table, write_result  # noqa: E402

import fedpact  # noqa: E402
from fedpact.common.definition import BUILTIN_ALGORITHMS, parse_definition  # noqa: E402
from fedpact.data import Dataset, encode_labels, load_digits_dataset, split_dirichlet  # noqa: E402
from fedpact.runtime import DataParticipant, Participant, Progress  # noqa: E402
from fedpact.runtime.kind_participant import TaskParticipant  # noqa: E402
from fedpact.runtime.participant import TrainConfig  # noqa: E402

PW = "bench-algorithms-pw"
ALGORITHM_PARAMS: dict[str, dict[str, Any]] = {
    "fedprox": {"mu": 0.01},
    # Two of ten participants may be poisoned: the byzantine-robust rules are told so.
    "trimmed_mean": {"beta": 0.2},
    "krum": {"f": 2},
    "multi_krum": {"f": 2},
}


class PoisonedParticipant(DataParticipant):
    """Trains honestly, then sends a poisoned update: scaled by -10, or random of 10x its size."""

    def __init__(self, data: Any, attack: str, seed: int) -> None:
        super().__init__(data)
        self.attack, self.rng = attack, np.random.default_rng(seed)

    def fit(self, weights: Any, config: TrainConfig, progress: Any) -> Any:
        trained, n, metrics = super().fit(weights, config, progress)
        poisoned = {}
        for k, w in trained.items():
            delta = w - weights[k]
            if self.attack == "scaled":
                bad = -10.0 * delta
            else:
                bad = self.rng.normal(0.0, 10.0 * float(np.std(delta)) + 1e-3, size=delta.shape)
            poisoned[k] = (weights[k] + bad).astype(np.float32)
        return poisoned, n, metrics


def run_federation(definition: dict[str, Any], shards: list[Dataset], eval_data: Dataset | None,
                   poisoned: set[int], attack: str,
                   participant: Callable[[Dataset], Participant] | None = None) -> list[dict[str, Any]]:
    """One task through an embedded hub: participants as threads, the aggregator here.

    ``participant`` makes an honest site's participant (default: DataParticipant on the shard).
    """
    with fedpact.Client.embedded(tempfile.mkdtemp(prefix="fedpact-bench-alg-")) as owner:
        owner.register("owner", PW, "Bench")
        owner.login("owner", PW)
        owner.create_task("bench", definition, "bench/algorithms.py")
        errors: list[BaseException] = []
        clients = []

        def participate(i: int, c: fedpact.Client) -> None:
            if i in poisoned:
                p: Participant = PoisonedParticipant(shards[i], attack, i)
            else:
                p = participant(shards[i]) if participant else DataParticipant(shards[i], threads=1)
            try:
                c.run_participant("bench", p, progress=Progress(quiet=True))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = []
        for i in range(len(shards)):
            c = fedpact.Client(owner.url)
            c.register(f"site{i}", PW, f"site {i}")
            c.login(f"site{i}", PW)
            clients.append(c)
            threads.append(threading.Thread(target=participate, args=(i, c), daemon=True))
        for t in threads:
            t.start()
        outcome = owner.run_aggregator("bench", eval_data=eval_data, progress=Progress(quiet=True))
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
    if errors:
        raise RuntimeError(f"a participant failed: {errors[0]}")
    return list(outcome.history)


def digits_section(strategies: list[str], rounds: int, poisoned_share: float, attack: str) -> dict[str, Any]:
    train, test = load_digits_dataset().split(0.25, seed=0)
    shards = split_dirichlet(train, 10, alpha=0.3, seed=0)
    sizes = [len(s) for s in shards]
    classes = [len(np.unique(s.y)) for s in shards]
    print(f"digits: {len(train)} training samples over 10 participants, Dirichlet(0.3): sizes {sizes}, "
          f"classes per participant {classes}; {len(test)} held out")
    settings = [(s, set()) for s in strategies]
    if poisoned_share > 0:
        n_bad = round(poisoned_share * len(shards))
        settings += [(s, set(range(n_bad))) for s in strategies]
    runs = []
    for name, bad in settings:
        definition = {
            "model": {"name": "softmax_regression"},
            "algorithm": {"name": name, "params": ALGORITHM_PARAMS.get(name, {})},
            "rounds": rounds, "local_epochs": 2, "batch_size": 16, "learning_rate": 0.1,
            "quorum": 10, "min_participants": 8, "round_timeout_s": 120, "admission": "open",
            "data": {"kind": "tabular", "features": 64, "classes": list(range(10))},
            "evaluation": {"holdout": 0.0}, "seed": 0,
        }
        t0 = time.perf_counter()
        history = run_federation(definition, shards, test, bad, attack)
        acc = [round(float(h["metrics"]["eval_accuracy"]), 4) for h in history]
        label = f"{name}" + (f" ({len(bad)} poisoned, {attack})" if bad else "")
        runs.append({"strategy": name, "poisoned": len(bad), "attack": attack if bad else None,
                     "eval_accuracy": acc, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"  {label:<32} accuracy per round: {' '.join(f'{a:.3f}' for a in acc)}")
    print(table(["strategy", "poisoned", "round 1", f"round {rounds // 2}", f"round {rounds}", "best"],
                [[r["strategy"], r["poisoned"], f"{r['eval_accuracy'][0]:.3f}",
                  f"{r['eval_accuracy'][rounds // 2 - 1]:.3f}", f"{r['eval_accuracy'][-1]:.3f}",
                  f"{max(r['eval_accuracy']):.3f}"] for r in runs]))
    return {"participants": 10, "alpha": 0.3, "sizes": sizes, "classes_per_participant": classes,
            "test_samples": len(test), "rounds": rounds, "runs": runs}


def heart_section() -> dict[str, Any]:
    import heart_disease as example
    from sklearn.linear_model import LogisticRegression as SkLogistic

    from fedpact.algorithms.standardize import (
        apply_standardization,
        combine_moments,
        local_moments,
    )
    from fedpact.data import conform
    from fedpact.models import build_model

    sites = example.prepare_sites(example.load_sites(example.DEFAULT_DATA))
    d = parse_definition(example.DEFINITION)
    t0 = time.perf_counter()
    # The bench runs every site itself under its own names: the example's invitations do not apply.
    # As in the example, each site holds its raw file (gaps included) and the runtime computes
    # the federated medians; the centralised twin below uses the same medians (prepare_sites).
    raw = example.load_sites(example.DEFAULT_DATA)
    history = run_federation({**example.DEFINITION, "admission": "open"}, list(raw.values()), None, set(), "scaled",
                             participant=TaskParticipant)
    fed_seconds = time.perf_counter() - t0
    fed_acc = float(history[-1]["metrics"].get("val_accuracy", float("nan")))
    # the centralised twin: each site's own hold-out split, exactly as DataParticipant.setup makes it
    parts = [conform(ds, d.data).split(d.evaluation.holdout, seed=d.seed) for ds in sites.values()]
    mean, std = combine_moments([local_moments(tr.x) for tr, _ in parts])
    x_tr = apply_standardization(np.concatenate([tr.x for tr, _ in parts]), mean, std)
    y_tr = encode_labels(np.concatenate([tr.y for tr, _ in parts]), d.data.classes)
    x_te = apply_standardization(np.concatenate([te.x for _, te in parts]), mean, std)
    y_te = encode_labels(np.concatenate([te.y for _, te in parts]), d.data.classes)
    central = build_model(d.model, d.data, seed=d.seed)
    central.fit(x_tr, y_tr, epochs=d.rounds * d.local_epochs, batch_size=d.batch_size, lr=d.learning_rate,
                optimizer=d.optimizer, seed=d.seed)
    central_acc = float(central.evaluate(x_te, y_te)["accuracy"])
    sk_acc = float(SkLogistic(max_iter=2000).fit(x_tr, y_tr).score(x_te, y_te))
    rows = [["federated (4 sites, 20 rounds x 2 local epochs)", f"{fed_acc:.3f}", len(y_tr), len(y_te)],
            ["centralised, same model and passes, pooled rows", f"{central_acc:.3f}", len(y_tr), len(y_te)],
            ["scikit-learn LogisticRegression, pooled rows", f"{sk_acc:.3f}", len(y_tr), len(y_te)]]
    print(f"heart disease, all 13 features (one-hot -> {x_tr.shape[1]} inputs), federated median imputation:")
    print(table(["model", "hold-out accuracy", "train rows", "hold-out rows"], rows))
    return {"federated_val_accuracy": round(fed_acc, 4), "centralised_accuracy": round(central_acc, 4),
            "sklearn_logistic_accuracy": round(sk_acc, 4), "train_rows": len(y_tr), "holdout_rows": len(y_te),
            "inputs": int(x_tr.shape[1]), "federated_seconds": round(fed_seconds, 1),
            "val_accuracy_per_round": [round(float(h["metrics"].get("val_accuracy", float("nan"))), 4)
                                       for h in history]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--only", nargs="*", choices=["digits", "heart"], default=["digits", "heart"])
    ap.add_argument("--strategies", nargs="*", default=list(BUILTIN_ALGORITHMS))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--poisoned", type=float, default=0.2, help="share of poisoned participants (0 to skip)")
    ap.add_argument("--attack", choices=["scaled", "random"], default="scaled")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    facts = machine_facts()
    print_machine(facts)
    result: dict[str, Any] = {"machine": facts, "argv": sys.argv[1:]}
    if "digits" in args.only:
        result["digits"] = digits_section(args.strategies, args.rounds, args.poisoned, args.attack)
    if "heart" in args.only:
        result["heart"] = heart_section()
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    path = write_result("algorithms" + (f"-{args.tag}" if args.tag else ""), result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
