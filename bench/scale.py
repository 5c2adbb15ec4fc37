"""Participants per hub: seconds per round and hub CPU per participant at N = 10, 100, 1,000.

Set-up (all real): the hub is its own OS process (``HubProcess``, SQLite and blob files
in a fresh temp folder), or with ``--replicas 3`` three hub processes on one fresh
PostgreSQL database with RabbitMQ wake-ups and a SeaweedFS S3 blob store, behind haproxy
started with the shipped ``deploy/haproxy.cfg`` (the set-up of docs/deploy.md and of
tests/e2e/test_deployed_faults.py). The aggregator runs in this process; the N
participants are threads of ``--workers`` worker processes (this script re-run with
``--worker``), each a real ``run_participant`` training softmax regression on its IID
shard of scikit-learn's digits (1,797 samples, so 1 to 2 samples each at N = 1,000: what
is measured is the hub, not the training). Every participant is required in every round
(quorum = min_participants = N), so one participant that gives up stalls the run.

Users are registered with cheap password hashes (argon2 at its minimum cost, set through
the hub's ordinary ``password_*`` settings) and without the per-address registration
limit: the bench registers 1,000 users from one address, which production settings
rightly refuse. Registration is not what is measured.

Reported per N: seconds per round (median of the wall time between round ends), hub CPU
seconds per round and per participant per round (from /proc of the hub processes, summed
over replicas, over the rounds after the first), the participants' and the aggregator's
CPU per round, errors (participant threads that raised: "gave up"; rounds not complete),
and how long registration and start-up (until every hello arrived) took.

    .venv/bin/python bench/scale.py --participants 10 100 1000 --rounds 3
    .venv/bin/python bench/scale.py --participants 10 100 1000 --rounds 3 --replicas 3
    .venv/bin/python bench/scale.py --participants 1000 --py-spy   # + where the hub spends its CPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from _common import machine_facts, print_machine, start_haproxy, table, write_result

PASSWORD = "bench-password-1"
#: Bench-only hub settings: the cheapest argon2 the hub accepts and no registration limit.
BENCH_SETTINGS: dict[str, Any] = {
    "password_time_cost": 1,
    "password_memory_kib": 8,
    "password_parallelism": 1,
    "registrations_per_address": 0,
}


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
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
        "admission": "open",
        "data": {"kind": "tabular", "features": 64, "label": "label", "classes": list(range(10))},
        "seed": 0,
    }


def worker_main() -> int:
    """Run the participants named on stdin as threads; one JSON line per failure as it happens, then "done"."""
    from fedpact.client.hub import HubClient
    from fedpact.data.builtin import load_digits_dataset
    from fedpact.data.partition import split_iid
    from fedpact.runtime import DataParticipant, run_participant
    from fedpact.runtime.progress import Progress

    job = json.loads(sys.stdin.readline())
    shards = split_iid(load_digits_dataset(), job["total"], seed=0)
    model_dir = Path(tempfile.mkdtemp(prefix="fedpact-scale-"))
    lock = threading.Lock()

    def one(index: int, token: str) -> None:
        try:
            with HubClient(job["url"], token, on_notice=lambda _text: None) as client:
                run_participant(client, job["task"], DataParticipant(shards[index]), progress=Progress(quiet=True),
                                poll_wait=30.0, model_dir=model_dir / str(index))
        except BaseException as e:  # noqa: BLE001 - counted and reported
            # Reported at once: a worker stopped after a failed run has still told.
            with lock:
                print(json.dumps({"error": f"participant {index}: {type(e).__name__}: {e}"}), flush=True)

    threads = [threading.Thread(target=one, args=(i, t), daemon=True, name=f"p{i}") for i, t in job["participants"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"done": True}), flush=True)
    return 0


@contextmanager
def hubs(n_replicas: int, work: Path) -> Iterator[tuple[str, list[int]]]:
    """One embedded hub, or ``n_replicas`` on PostgreSQL + RabbitMQ + S3 behind haproxy: (URL, hub pids)."""
    from fedpact.hub.config import HubConfig
    from fedpact.hub.server import HubProcess

    with ExitStack() as stack:
        if n_replicas <= 1:
            hub = stack.enter_context(HubProcess(config=HubConfig(data_dir=work / "hub", **BENCH_SETTINGS)))
            assert hub.pid is not None
            yield hub.url, [hub.pid]
            return
        from seaweedfs import start_seaweedfs
        from services import RABBITMQ_URL, postgres_database

        url = stack.enter_context(postgres_database("fedpact_bench_scale"))
        weed = start_seaweedfs(work / "seaweedfs")
        stack.callback(weed.stop)
        # 3 x 2 x 10 connections: under PostgreSQL's default max_connections (100) with room
        # for other clients of the same server (docs/deploy.md).
        config = HubConfig(data_dir=work / "hub", database_url=url, broker_url=RABBITMQ_URL,
                           blob_store=weed.url("fedpact-bench"), database_pool_size=10, **BENCH_SETTINGS)
        procs = [HubProcess(config=config) for _ in range(n_replicas)]
        for h in procs:
            h.start()
            stack.callback(h.stop)
        lb, lb_url = start_haproxy([h.port for h in procs], work / "haproxy.log")

        def stop_lb() -> None:
            lb.terminate()
            lb.wait(10)

        stack.callback(stop_lb)
        yield lb_url, [h.pid for h in procs if h.pid is not None]


def register_all(url: str, task: str, n: int, threads: int = 8) -> list[str]:
    """Register, log in and join ``n`` users, a few at a time; their tokens in order."""
    from fedpact.client.hub import HubClient

    def one(i: int) -> str:
        with HubClient(url) as c:
            c.register(f"p{i:04d}", PASSWORD, "Bench")
            token = c.login(f"p{i:04d}", PASSWORD)
            if c.join(task).get("status") != "ADMITTED":
                raise RuntimeError(f"p{i:04d} was not admitted to {task}")
            return token

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(n)))


def run_one(n: int, rounds: int, workers: int, replicas: int, py_spy: bool) -> dict[str, Any]:
    from fedpact.client.hub import HubClient

    work = Path(tempfile.mkdtemp(prefix=f"fedpact-scale-{n}-"))
    with hubs(replicas, work) as (url, pids):
        admin = HubClient(url)
        admin.register("creator", PASSWORD, "Bench")
        admin.login("creator", PASSWORD)
        task = f"scale-{n}"
        admin.create_task(task, definition(n, rounds))
        t_reg = time.monotonic()
        tokens = register_all(url, task, n)
        register_s = time.monotonic() - t_reg
        procs = []
        per = (n + workers - 1) // workers
        for w in range(workers):
            mine = [(i, tokens[i]) for i in range(w * per, min(n, (w + 1) * per))]
            if not mine:
                continue
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"url": url, "task": task, "total": n, "participants": mine}) + "\n")
            proc.stdin.flush()
            procs.append(proc)
        try:
            return _measure(n, rounds, replicas, pids, procs, admin, task, work, py_spy, register_s)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()  # a run cut short (Ctrl-C) must not leave participants behind
                    proc.wait()


def _measure(n: int, rounds: int, replicas: int, pids: list[int], procs: list[subprocess.Popen[str]], admin: Any, task: str,
             work: Path, py_spy: bool, register_s: float) -> dict[str, Any]:
    from fedpact.runtime import Events, run_aggregator

    ends: list[float] = []
    hub_cpu: list[float] = []
    worker_cpu: list[float] = []
    own_cpu: list[float] = []
    ready_at: list[float] = []

    def own() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    class Timing(Events):
        def round_started(self, round: int, rounds: int, selected: list[str]) -> None:
            if not ready_at:
                ready_at.append(time.monotonic())
            super().round_started(round, rounds, selected)

        def round_finished(self, round: int, rounds: int, metrics: dict[str, Any]) -> None:
            ends.append(time.monotonic())
            hub_cpu.append(sum(_cpu_seconds(p) for p in pids))
            worker_cpu.append(sum(_cpu_seconds(p.pid) for p in procs))
            own_cpu.append(own())
            super().round_finished(round, rounds, metrics)

    spies = []
    if py_spy:
        for pid in pids:
            spies.append(subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-p", str(pid), "-o",
                 str(work / f"py-spy-{pid}.txt"), "-f", "raw", "-r", "100", "--gil", "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    start_cpu = sum(_cpu_seconds(p) for p in pids)
    t0 = time.monotonic()
    status = "error"
    failure = None
    try:
        status = run_aggregator(admin, task, progress=Timing(), poll_wait=10.0,
                                quorum_timeout_s=max(300.0, n * 0.6)).status
    except Exception as exc:  # noqa: BLE001 - reported in the result
        failure = f"{type(exc).__name__}: {exc}"
    wall = time.monotonic() - t0
    errors: list[str] = []
    stopped = 0  # workers stopped before all their participants finished (after a failed run)
    for proc in procs:
        try:
            out_line, _ = proc.communicate(timeout=300 if failure is None else 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out_line, _ = proc.communicate()
        reports = [json.loads(line) for line in (out_line or "").splitlines() if line.startswith("{")]
        errors += [r["error"] for r in reports if "error" in r]
        stopped += not any(r.get("done") for r in reports)
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT, not on SIGTERM
        spy.wait()
    records = admin.list_rounds(task)
    admin.close()
    cycles = [b - a for a, b in pairwise(ends)]
    cpu_rounds = [b - a for a, b in pairwise(hub_cpu)]
    cpu_per_round = sum(cpu_rounds) / len(cpu_rounds) if cpu_rounds else (hub_cpu[-1] - start_cpu if hub_cpu else 0.0)
    worker_rounds = [b - a for a, b in pairwise(worker_cpu)]
    own_rounds = [b - a for a, b in pairwise(own_cpu)]
    return {
        "participants": n, "rounds": rounds, "replicas": replicas, "status": status, "failure": failure,
        "wall_s": wall, "register_s": register_s,
        "startup_s": ready_at[0] - t0 if ready_at else None,
        "round_seconds": [float(r["metrics"].get("seconds", 0)) for r in records if r["status"] == "complete"],
        "round_cycles_s": cycles,
        "cycle_median_s": sorted(cycles)[len(cycles) // 2] if cycles else None,
        "hub_cpu_per_round_s": cpu_per_round, "hub_cpu_per_participant_round_ms": 1000 * cpu_per_round / n,
        "participants_cpu_per_round_s": sum(worker_rounds) / len(worker_rounds) if worker_rounds else None,
        "aggregator_cpu_per_round_s": sum(own_rounds) / len(own_rounds) if own_rounds else None,
        "errors": errors, "gave_up": len(errors), "workers_stopped": stopped,
        "incomplete_rounds": rounds - sum(r["status"] == "complete" for r in records),
        "py_spy": [str(work / f"py-spy-{p}.txt") for p in pids] if py_spy else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--participants", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=4, help="participant processes")
    p.add_argument("--replicas", type=int, default=1,
                   help="1: one embedded hub (SQLite); more: replicas on PostgreSQL + RabbitMQ + S3 behind haproxy")
    p.add_argument("--py-spy", action="store_true")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    if a.worker:
        return worker_main()
    facts = machine_facts()
    print_machine(facts)
    results = []
    for n in a.participants:
        r = run_one(n, a.rounds, min(a.workers, n), a.replicas, a.py_spy)
        r["loadavg_after"] = os.getloadavg()
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "errors"} | {"errors": r["errors"][:5]}), flush=True)
    print(table(["N", "replicas", "status", "s/round", "hub CPU s/round", "hub CPU ms/participant/round",
                 "gave up", "incomplete rounds", "workers stopped"],
                [[r["participants"], r["replicas"], r["status"], f"{r['cycle_median_s'] or 0:.2f}",
                  f"{r['hub_cpu_per_round_s']:.2f}", f"{r['hub_cpu_per_participant_round_ms']:.2f}", r["gave_up"],
                  r["incomplete_rounds"], r["workers_stopped"]] for r in results]))
    path = write_result("scale" + (f"-{a.tag}" if a.tag else ""), {"machine": facts, "results": results})
    print(f"result: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
