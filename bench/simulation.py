"""Simulation speed and memory: fedpact simulate against Flower's simulation engine.

Workload (both engines): the scikit-learn digits (1,347 training samples after a 25 % test
split), multinomial logistic regression (64 x 10 + 10 parameters), IID partition over N
virtual participants (samples reused when N exceeds them), fraction 0.1 of them per round,
1 local epoch, batch size 32, learning rate 0.1, FedAvg. fedpact runs ``fedpact.simulate``
(process backend, one worker per core); Flower runs ``flwr.simulation.start_simulation``
on Ray with one CPU per client, in its own venv (``bench/.venv-flwr``, created here with
``pip install 'flwr[simulation]'``), its client training the same model in NumPy.

Each configuration runs in a fresh subprocess, so peak memory (ru_maxrss of the process and
of its children, i.e. the workers) is its own. fedpact and Flower alternate in one run.

    .venv/bin/python bench/simulation.py                       # N = 100, 1,000, 10,000; 10 rounds
    .venv/bin/python bench/simulation.py --sizes 100,1000 --rounds 10 --no-flower
    .venv/bin/python bench/simulation.py --memory-check           # 10,000 participants, fraction 0.01
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine_facts, write_result  # noqa: E402

FLWR_VENV = HERE / ".venv-flwr"
DEFINITION = {
    "model": {"name": "softmax_regression"}, "rounds": 10, "local_epochs": 1, "batch_size": 32,
    "learning_rate": 0.1, "quorum": 2, "min_participants": 2, "fraction": 0.1,
    "data": {"kind": "tabular", "features": 64, "classes": list(range(10))}, "evaluation": {"holdout": 0.0},
}


def _peak_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024.0


def run_fedpact(n: int, rounds: int, fraction: float = 0.1) -> dict:
    from fedpact.simulation import simulate

    t0 = time.monotonic()
    res = simulate(DEFINITION, n, partition="iid", rounds=rounds, seed=1, backend="process", progress=False,
                   fraction=fraction)
    total = time.monotonic() - t0
    h = res.history
    return {"engine": "fedpact", "n": n, "fraction": fraction, "rounds": rounds, "total_s": round(total, 2),
            "s_per_round": round(float(h["seconds"].mean()), 3), "final_accuracy": round(float(h["eval_accuracy"].iloc[-1]), 4),
            "peak_rss_mib_self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
            "peak_rss_mib_self_plus_largest_child": round(_peak_mib(), 1)}


FLOWER_SCRIPT = r'''
import json, sys, time, resource
import numpy as np
import flwr as fl
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

n, rounds = int(sys.argv[1]), int(sys.argv[2])
d = load_digits()
x = (d.data / 16.0).astype(np.float32)
xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.25, random_state=1, stratify=d.target)
pool = np.tile(np.arange(len(ytr)), max(1, -(-n // len(ytr))))
parts = np.array_split(np.random.default_rng(1).permutation(pool), n)

def fit_softmax(w, b, xs, ys, lr=0.1, bs=32, seed=0):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ys))
    for s in range(0, len(ys), bs):
        i = order[s:s + bs]
        z = xs[i] @ w.T + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z); p /= p.sum(1, keepdims=True)
        p[np.arange(len(i)), ys[i]] -= 1.0
        w -= lr * (p.T @ xs[i]) / len(i)
        b -= lr * p.mean(0)
    return w, b

class Client(fl.client.NumPyClient):
    def __init__(self, cid):
        self.idx = parts[int(cid)]
    def fit(self, parameters, config):
        w, b = (np.array(p, dtype=np.float32) for p in parameters)
        w, b = fit_softmax(w, b, xtr[self.idx], ytr[self.idx])
        return [w, b], len(self.idx), {}

def client_fn(context):
    cid = context.node_config["partition-id"] if hasattr(context, "node_config") else context
    return Client(cid).to_client()

times = []
class Timed(fl.server.strategy.FedAvg):
    def configure_fit(self, server_round, parameters, client_manager):
        times.append(time.monotonic())
        return super().configure_fit(server_round, parameters, client_manager)

init = fl.common.ndarrays_to_parameters([np.zeros((10, 64), np.float32), np.zeros(10, np.float32)])
strategy = Timed(fraction_fit=0.1, fraction_evaluate=0.0, min_fit_clients=2, min_evaluate_clients=0,
                 min_available_clients=n, initial_parameters=init)
t0 = time.monotonic()
fl.simulation.start_simulation(client_fn=lambda cid: Client(cid).to_client(), num_clients=n,
                               config=fl.server.ServerConfig(num_rounds=rounds), strategy=strategy,
                               client_resources={"num_cpus": 1}, ray_init_args={"include_dashboard": False, "num_cpus": 2})
total = time.monotonic() - t0
times.append(time.monotonic())
per = [b - a for a, b in zip(times, times[1:])]
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print("RESULT " + json.dumps({"engine": "flower", "n": n, "rounds": rounds, "total_s": round(total, 2),
      "s_per_round": round(sum(per) / len(per), 3), "peak_rss_mib_self": round(own, 1)}))
'''


def ensure_flower_venv() -> Path:
    py = FLWR_VENV / "bin" / "python"
    if not (FLWR_VENV / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(FLWR_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "flwr[simulation]", "scikit-learn"], check=True)
        (FLWR_VENV / ".installed").touch()
    return py


def run_flower(n: int, rounds: int) -> dict:
    py = ensure_flower_venv()
    script = FLWR_VENV / "digits_flower.py"
    script.write_text(FLOWER_SCRIPT)
    proc = subprocess.run([str(py), str(script), str(n), str(rounds)], capture_output=True, text=True, timeout=3600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"engine": "flower", "n": n, "rounds": rounds, "error": (proc.stderr or proc.stdout)[-2000:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--no-flower", action="store_true")
    ap.add_argument("--memory-check", action="store_true",
                    help="only fedpact with 10,000 participants and fraction 0.01 (issue 11, point 4)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        engine, n, *frac = args.one.split(":")
        print("RESULT " + json.dumps(run_fedpact(int(n), args.rounds, *map(float, frac)) if engine == "fedpact" else
                                     run_flower(int(n), args.rounds)), flush=True)
        return
    if args.memory_check:
        proc = subprocess.run([sys.executable, __file__, "--one", "fedpact:10000:0.01", "--rounds", str(args.rounds)],
                              capture_output=True, text=True)
        print(next((line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")), proc.stderr[-2000:]))
        return
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        for engine in ["fedpact"] + ([] if args.no_flower else ["flower"]):
            proc = subprocess.run([sys.executable, __file__, "--one", f"{engine}:{n}", "--rounds", str(args.rounds)],
                                  capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            row = next((json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")),
                       {"engine": engine, "n": n, "error": proc.stderr[-2000:]})
            print(json.dumps(row), flush=True)
            results.append(row)
    print(f"written to {write_result('simulation', {'machine': machine_facts(), 'rows': results})}")


if __name__ == "__main__":
    main()
