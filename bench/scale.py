"""Participants per hub: seconds per round and hub CPU per participant at N = 10, 100, 1,000.

Set-up (all real): the hub is its own OS process (``HubProcess``, SQLite and blob files
in a fresh temp folder, or ``--database-url``/``--broker-url`` for PostgreSQL and RabbitMQ);
the aggregator runs in this process; the N participants are threads of ``--workers``
worker processes (this script re-run with ``--worker``), each a real
``run_participant`` training softmax regression on its IID shard of scikit-learn's digits
(1,797 samples, so 1 to 2 samples each at N = 1,000: what is measured is the hub, not the
training). Every participant is required in every round (quorum = min_participants = N).

Reported per N: seconds per round (median of the round records' ``seconds`` and of the
wall time between round ends), hub CPU seconds per round and per participant per round
(from /proc of the hub process, over the rounds after the first), errors (participant
threads that raised, rounds not complete).

    .venv/bin/python bench/scale.py --participants 10 100 1000 --rounds 3
    .venv/bin/python bench/scale.py --participants 1000 --py-spy   # + where the hub spends its CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_facts, print_machine, table, write_result

PASSWORD = "bench-password-1"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def definition(n: int, rounds: int) -> dict[str, Any]:
    return {
        "model": {"name": "softmax_regression"},
        "rounds": rounds,
        "local_epochs": 1,
        "batch_size": 32,
        "learning_rate": 0.1,
        "quorum": n,
        "min_participants": n,
        "round_timeout_s": 600,
        "data": {"kind": "tabular", "features": 64, "label": "label", "classes": list(range(10))},
        "seed": 0,
    }


def worker_main() -> int:
    """Run the participants named on stdin as threads; print one JSON line with the errors."""
    from fedpact.client.hub import HubClient
    from fedpact.data.builtin import load_digits_dataset
    from fedpact.data.partition import split_iid
    from fedpact.runtime import DataParticipant, run_participant
    from fedpact.runtime.progress import Progress

    job = json.loads(sys.stdin.readline())
    shards = split_iid(load_digits_dataset(), job["total"], seed=0)
    errors: list[str] = []
    model_dir = Path(tempfile.mkdtemp(prefix="fedpact-scale-"))

    def one(index: int, token: str) -> None:
        try:
            with HubClient(job["url"], token) as client:
                run_participant(client, job["task"], DataParticipant(shards[index]), progress=Progress(quiet=True),
                                poll_wait=30.0, model_dir=model_dir / str(index))
        except BaseException as e:  # noqa: BLE001 - counted and reported
            errors.append(f"participant {index}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(i, t), daemon=True) for i, t in job["participants"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"errors": errors}), flush=True)
    return 0


def run_one(n: int, rounds: int, workers: int, database_url: str | None, broker_url: str | None,
            py_spy: bool) -> dict[str, Any]:
    from fedpact.client.hub import HubClient
    from fedpact.hub.config import HubConfig
    from fedpact.hub.server import HubProcess
    from fedpact.runtime import Events, run_aggregator

    data_dir = Path(tempfile.mkdtemp(prefix=f"fedpact-scale-{n}-"))
    config = HubConfig(data_dir=data_dir, database_url=database_url, broker_url=broker_url,
                       password_time_cost=1, password_memory_kib=8192)
    with HubProcess(config=config) as hub:
        assert hub.pid is not None
        admin = HubClient(hub.url)
        admin.register("creator", PASSWORD, "Bench")
        admin.login("creator", PASSWORD)
        task = f"scale-{n}"
        admin.create_task(task, definition(n, rounds))
        tokens: list[str] = []
        for i in range(n):
            with HubClient(hub.url) as c:
                c.register(f"p{i:04d}", PASSWORD, "Bench")
                tokens.append(c.login(f"p{i:04d}", PASSWORD))
                c.join(task)
        procs = []
        per = (n + workers - 1) // workers
        for w in range(workers):
            mine = [(i, tokens[i]) for i in range(w * per, min(n, (w + 1) * per))]
            if not mine:
                continue
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"url": hub.url, "task": task, "total": n, "participants": mine}) + "\n")
            proc.stdin.flush()
            procs.append(proc)
        ends: list[float] = []
        cpu: list[float] = []
        spy = None

        class Timing(Events):
            def round_finished(self, round: int, rounds: int, metrics: dict[str, Any]) -> None:
                ends.append(time.monotonic())
                cpu.append(_cpu_seconds(hub.pid or 0))
                super().round_finished(round, rounds, metrics)

        if py_spy:
            out = data_dir / "py-spy.svg"
            spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-p",
                                    str(hub.pid), "-o", str(out), "-r", "50", "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start_cpu = _cpu_seconds(hub.pid)
        t0 = time.monotonic()
        result = run_aggregator(admin, task, progress=Timing(), poll_wait=10.0)
        wall = time.monotonic() - t0
        errors: list[str] = []
        for proc in procs:
            out_line, _ = proc.communicate(timeout=300)
            errors += json.loads(out_line.strip().splitlines()[-1])["errors"] if out_line.strip() else ["worker died"]
        if spy is not None:
            spy.terminate()
            spy.wait()
        records = admin.list_rounds(task)
        admin.close()
    seconds = [float(r["metrics"].get("seconds", 0)) for r in records if r["status"] == "complete"]
    cycles = [b - a for a, b in pairwise(ends)]
    cpu_rounds = [b - a for a, b in pairwise(cpu)]
    cpu_per_round = sum(cpu_rounds) / len(cpu_rounds) if cpu_rounds else (cpu[-1] - start_cpu if cpu else 0.0)
    return {
        "participants": n, "rounds": rounds, "status": result.status, "wall_s": wall,
        "round_seconds": seconds, "round_cycles_s": cycles,
        "cycle_median_s": sorted(cycles)[len(cycles) // 2] if cycles else None,
        "hub_cpu_per_round_s": cpu_per_round, "hub_cpu_per_participant_round_ms": 1000 * cpu_per_round / n,
        "errors": errors, "incomplete_rounds": sum(r["status"] != "complete" for r in records),
        "py_spy": str(data_dir / "py-spy.svg") if py_spy else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--participants", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=4, help="participant processes")
    p.add_argument("--database-url")
    p.add_argument("--broker-url")
    p.add_argument("--py-spy", action="store_true")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    if a.worker:
        return worker_main()
    facts = machine_facts()
    print_machine(facts)
    results = []
    for n in a.participants:
        r = run_one(n, a.rounds, min(a.workers, n), a.database_url, a.broker_url, a.py_spy)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "errors"} | {"errors": len(r["errors"])}), flush=True)
    print(table(["N", "status", "s/round (cycle)", "hub CPU s/round", "hub CPU ms/participant/round", "errors"],
                [[r["participants"], r["status"], f"{r['cycle_median_s'] or 0:.2f}", f"{r['hub_cpu_per_round_s']:.2f}",
                  f"{r['hub_cpu_per_participant_round_ms']:.2f}", len(r["errors"]) + r["incomplete_rounds"]]
                 for r in results]))
    write_result("scale" + (f"-{a.tag}" if a.tag else ""), {"machine": facts, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
