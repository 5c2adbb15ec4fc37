"""Round overhead against Flower: 10 participants x 1M float32, no training, alternated in one run.

fedpact: ``bench/round_overhead.py`` (hub process, participants as threads of a second
process, aggregator in the bench process), embedded (SQLite + blob files) and deployed
(PostgreSQL + RabbitMQ; a fresh database per run). Flower: its gRPC API,
``flwr.server.start_server`` with FedAvg in one process and ten ``flwr.client.start_client``
NumPy clients as threads of a second process, installed by this script in its own venv
(``bench/.venv-flwr``, the one ``bench/simulation.py`` makes). Both sides run the same
workload: a 1,000,000-parameter float32 model (W 10 x 99,999 + b 10), each client
returns the received weights plus a constant with 100 samples, FedAvg over all ten.

Per round: the wall time between the ends of consecutive rounds (rounds 2..R), and the
CPU seconds (user + system, from /proc) of each process over the same interval, median
over the rounds. The configurations alternate: fedpact embedded, Flower, fedpact
deployed, Flower, ... ``--repeat`` times.

    .venv/bin/python bench/round_overhead_flower.py                  # 3 repeats x 10 rounds
    .venv/bin/python bench/round_overhead_flower.py --repeat 1 --no-deployed
    .venv/bin/python bench/round_overhead_flower.py --warmup --repeat 4   # each engine once first, not counted
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine_facts, table, write_result  # noqa: E402
from simulation import ensure_flower_venv  # noqa: E402

FEATURES = 99_999
CLASSES = 10

FLOWER_SERVER = r'''
import json, os, sys, time
import numpy as np
import flwr as fl

port, rounds, n, pidfile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
TCK = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TCK
    except (OSError, ValueError, IndexError):
        return float("nan")

ends, cpus = {}, {}

class Timed(fl.server.strategy.FedAvg):
    def aggregate_fit(self, server_round, results, failures):
        out = super().aggregate_fit(server_round, results, failures)
        ends[server_round] = time.perf_counter()
        try:
            client_pid = int(open(pidfile).read())
        except (OSError, ValueError):
            client_pid = -1
        cpus[server_round] = {"server": cpu(os.getpid()), "clients": cpu(client_pid)}
        if failures:
            print(f"round {server_round}: {len(failures)} failures: {failures[:1]}", flush=True)
        return out

init = fl.common.ndarrays_to_parameters([np.zeros((10, 99_999), np.float32), np.zeros(10, np.float32)])
strategy = Timed(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_evaluate_clients=0,
                 min_available_clients=n, initial_parameters=init)
fl.server.start_server(server_address=f"127.0.0.1:{port}", config=fl.server.ServerConfig(num_rounds=rounds),
                       strategy=strategy)
print("RESULT " + json.dumps({"ends": ends, "cpu": cpus}), flush=True)
'''

FLOWER_CLIENTS = r'''
import sys, threading
import numpy as np
import flwr as fl

port, n = sys.argv[1], int(sys.argv[2])

class NoTrain(fl.client.NumPyClient):
    def __init__(self, k):
        self.k = k
    def fit(self, parameters, config):
        eps = np.float32(1e-6 * (self.k + 1))
        return [p + eps for p in parameters], 100, {"loss": 0.0}

def one(k):
    fl.client.start_client(server_address=f"127.0.0.1:{port}", client=NoTrain(k).to_client(), insecure=True)

threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
'''


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _steady(ends: dict[int, float], cpu: dict[int, dict[str, float]]) -> dict[str, Any]:
    rounds = sorted(ends)
    cycles = [ends[r] - ends[r - 1] for r in rounds if r - 1 in ends and r >= 2]
    per_proc: dict[str, float] = {}
    for name in cpu[rounds[0]]:
        per_proc[name] = statistics.median([cpu[r][name] - cpu[r - 1][name] for r in rounds if r - 1 in cpu and r >= 2])
    return {"cycle_median_s": statistics.median(cycles), "cycles_s": cycles, "cpu_s_per_round": per_proc,
            "cpu_s_per_round_total": sum(per_proc.values())}


def run_flower(rounds: int, n: int) -> dict[str, Any]:
    py = ensure_flower_venv()
    server_py = HERE / ".venv-flwr" / "round_server.py"
    clients_py = HERE / ".venv-flwr" / "round_clients.py"
    server_py.write_text(FLOWER_SERVER)
    clients_py.write_text(FLOWER_CLIENTS)
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        pidfile = Path(tmp) / "clients.pid"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRPC_VERBOSITY": "ERROR"}
        server = subprocess.Popen([str(py), str(server_py), str(port), str(rounds), str(n), str(pidfile)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(3.0)  # the gRPC server binds; clients retry anyway
        clients = subprocess.Popen([str(py), str(clients_py), str(port), str(n)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=env)
        pidfile.write_text(str(clients.pid))
        try:
            out, err = server.communicate(timeout=600)
            clients.wait(timeout=60)
        finally:
            for p in (server, clients):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"engine": "flower", "error": (err or out)[-3000:]}
    res = json.loads(line[7:])
    ends = {int(k): v for k, v in res["ends"].items()}
    cpu = {int(k): v for k, v in res["cpu"].items()}
    return {"engine": "flower", "api": "flwr.server.start_server / flwr.client.start_client (gRPC)",
            **_steady(ends, cpu)}


def run_fedpact(rounds: int, n: int, deployed: bool, tag: str, src: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "round_overhead.py"), "--rounds", str(rounds), "--participants", str(n),
           "--tag", tag, "--no-components"]
    dbname = None
    if deployed:
        dbname = f"bench_overhead_{int(time.time())}"
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", dbname], check=True)
        cmd += ["--database-url", f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}",
                "--broker-url", "amqp://guest:guest@127.0.0.1:5672/"]
    env = {**os.environ, "PYTHONPATH": src} if src else None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    finally:
        if dbname:
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", dbname], check=False)
    path = next((line.split("result written to ", 1)[1].strip() for line in proc.stdout.splitlines()
                 if "result written to " in line), None)
    engine = ("fedpact deployed" if deployed else "fedpact embedded") + (" (baseline)" if src else "")
    if path is None:
        return {"engine": engine, "error": (proc.stderr or proc.stdout)[-3000:]}
    res = json.loads(Path(path).read_text())
    Path(path).unlink()  # the comparison's own result file holds what matters
    cpu = res["cpu_seconds_per_round"]
    names = {"hub": "hub", "aggregator (bench process)": "aggregator", "participants (worker process)": "participants"}
    per_proc = {names.get(k, k): v for k, v in cpu.items()}
    cycles = [v for k, v in res["cycle_s"].items() if int(k) >= 2]
    return {"engine": engine, "cycle_median_s": res["cycle_stats_steady"]["median"], "cycles_s": cycles,
            "cpu_s_per_round": per_proc, "cpu_s_per_round_total": sum(per_proc.values()),
            "requests_per_round": res["traffic_per_round_bytes"]["http_requests"],
            "participant_errors": res["participant_errors"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--participants", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-deployed", action="store_true")
    ap.add_argument("--tag", default="")
    ap.add_argument("--baseline-src", default=None,
                    help="the src/ folder of another fedpact version: also run it (embedded) in the alternation")
    ap.add_argument("--warmup", action="store_true",
                    help="run each configuration once first and leave those runs out of the summary: the first run "
                         "of each pays for pages and files the machine has not touched yet, whichever engine it is")
    a = ap.parse_args()
    facts = machine_facts()
    print(f"== round overhead vs Flower: {a.participants} participants x {FEATURES * CLASSES + CLASSES:,} float32, "
          f"{a.rounds} rounds, {a.repeat} repeats, load {os.getloadavg()} ==", flush=True)
    rows: list[dict[str, Any]] = []
    for i in range(-1 if a.warmup else 0, a.repeat):
        order: list[tuple[str, bool | None, str | None]] = [("fedpact embedded", False, None), ("flower", None, None)]
        if a.baseline_src:
            order += [("fedpact embedded (baseline)", False, a.baseline_src)]
        if not a.no_deployed:
            order += [("fedpact deployed", True, None)] + ([] if i < 0 else [("flower", None, None)])
        for name, deployed, src in order:
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            if deployed is None:
                row = run_flower(a.rounds, a.participants)
            else:
                row = run_fedpact(a.rounds, a.participants, deployed, f"vs-flower-{i}", src)
            row |= {"repeat": i, "warmup": i < 0, "load_1min_before": load, "wall_s": time.perf_counter() - t0}
            rows.append(row)
            if "error" in row:
                print(f"{name}: ERROR {row['error'][-1500:]}", flush=True)
            else:
                cpu = ", ".join(f"{k} {v:.3f}" for k, v in row["cpu_s_per_round"].items())
                print(f"{row['engine']:17s} {row['cycle_median_s']:.3f} s/round; CPU-s per round: {cpu} "
                      f"(total {row['cpu_s_per_round_total']:.3f}); load {load:.1f}{' (warm-up)' if i < 0 else ''}",
                      flush=True)
    summary = []
    counted = [r for r in rows if "error" not in r and not r["warmup"]]
    for engine in sorted({r["engine"] for r in counted}):
        mine = [r for r in counted if r.get("engine") == engine]
        summary.append([engine, len(mine), f"{statistics.median(r['cycle_median_s'] for r in mine):.3f}",
                        ", ".join(f"{r['cycle_median_s']:.3f}" for r in mine),
                        f"{statistics.median(r['cpu_s_per_round_total'] for r in mine):.3f}"])
    print(table(["engine", "runs", "s/round (median of runs)", "each run", "CPU-s/round, all processes"], summary))
    path = write_result("round_overhead_flower" + (f"-{a.tag}" if a.tag else ""),
                        {"benchmark": "round_overhead_flower", "machine": facts, "loadavg_at_end": os.getloadavg(),
                         "parameters": vars(a), "rows": rows})
    print(f"result written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
