"""Per-round orchestration overhead of a federation over the real hub on loopback.

Set-up (all real: HTTP, SQLite, blob files, safetensors):

* the hub runs as its own OS process (``fedpact.hub.server.HubProcess``) on 127.0.0.1, with
  a fresh data directory under the system temp folder;
* the bench process registers a task creator and P participants (default 10), and creates a
  task whose model is ``softmax_regression`` on tabular data with 99,999 features and 10
  classes: W (10 x 99,999) + b (10) = 1,000,000 float32 parameters (4 MB);
* the participants are threads of a *second* OS process (this script re-run with
  ``--worker``), each a ``fedpact.runtime.Participant`` subclass whose ``fit`` returns the
  received weights plus a per-participant constant (1e-6 * k) at once, with a fixed
  ``num_samples``: no training, so what is measured is orchestration only;
* the aggregator runs in this (the bench) process, default settings, FedAvg.

Why participants live in a second process: in a real federation they are other machines;
sharing the aggregator's process would make the aggregator wait on their GIL time and
charge it to the round. ``--participants-in-process`` runs them as threads of this process
instead, for comparison.

What is reported, per round r (rounds are counted only after the quorum is reached):

* ``cycle``: wall time between the end of round r-1 and the end of round r, as seen by
  the aggregator's ``on_round`` callback (round 1: from "quorum reached"). It includes
  everything the aggregator does for a round: round record, broadcast, waiting for
  participants (download, fit, upload), aggregation, round record, checkpoint, round-end.
* ``seconds``: the ``seconds`` metric of the round record the aggregator stores (from the
  round's start to after aggregation; excludes checkpoint and round-end broadcast).
* model traffic: HTTP body bytes of blob uploads (PUT to uploads/ or blobs/, POST to
  messages/raw) and blob downloads (GET), counted by
  httpx event hooks on every client (aggregator and each participant), in the steady state
  (differences between consecutive rounds). Two countings are given:
  - ``participant_view``: one broadcast download per participant + one update upload per
    participant + the checkpoint upload (what the brief counts);
  - ``all_hops``: every model byte crossing HTTP: the aggregator's broadcast upload, the
    participants' downloads and uploads, the aggregator's downloads of each update, the
    checkpoint upload.

    .venv/bin/python bench/round_overhead.py                 # 10 participants, 15 rounds
    .venv/bin/python bench/round_overhead.py --profile       # + cProfile of the aggregator
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_facts, print_machine, start_haproxy, stats, table, write_result  # noqa: E402

from fedpact.client.hub import HubClient  # noqa: E402
from fedpact.runtime import Participant, Progress, TrainConfig  # noqa: E402
from fedpact.runtime.aggregator import Aggregator  # noqa: E402

MB = 1e6
PASSWORD = "bench-password-1"
FEATURES = 99_999
CLASSES = 10
TARGET_S = 0.5


# -- byte counting -----------------------------------------------------------------------
class Counter:
    """HTTP body bytes of one client, by kind, via httpx event hooks (exact for blob traffic)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.c = {"blob_up": 0, "blob_down": 0, "other_up": 0, "other_down": 0, "requests": 0}

    def on_request(self, request: Any) -> None:
        try:
            n = len(request.content)
        except Exception:  # noqa: BLE001 - a streamed body (an update sent from its arrays): its declared length
            n = int(request.headers.get("content-length", 0) or 0)
        path = request.url.path
        # Model bytes go up as resumable chunks, one-request blobs, or raw message bodies.
        is_blob = (request.method == "PUT" and ("/uploads/" in path or "/blobs/" in path)) or (
            request.method == "POST" and path.endswith("/messages/raw")
        )
        with self.lock:
            self.c["requests"] += 1
            self.c["blob_up" if is_blob else "other_up"] += n

    def on_response(self, response: Any) -> None:
        # The body is not read yet here (blobs are streamed); Content-Length is what will come.
        n = int(response.headers.get("content-length", 0) or 0)
        is_blob = response.request.method == "GET" and "/blobs/" in response.request.url.path
        with self.lock:
            self.c["blob_down" if is_blob else "other_down"] += n

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.c)


    def on_bulk_request(self, method: str, url: str, headers: dict[str, str]) -> None:
        with self.lock:
            self.c["requests"] += 1

    def on_bulk_response(self, url: str, status: int, length: int) -> None:
        # Downloads of blobs go through the client's bulk channel (urllib3), not httpx.
        with self.lock:
            self.c["blob_down" if "/blobs/" in url else "other_down"] += length


def counted_client(url: str, token: str | None = None) -> tuple[HubClient, Counter]:
    client = HubClient(url, token)
    counter = Counter()
    client._http.event_hooks = {"request": [counter.on_request], "response": [counter.on_response]}
    bulk = getattr(client, "_bulk", None)  # absent from clients before client/bulk.py (--baseline-src runs)
    if bulk is not None:
        bulk.hooks.append(counter.on_bulk_request)
        bulk.response_hooks.append(counter.on_bulk_response)
    return client, counter


# -- participants ------------------------------------------------------------------------
class NoTrain(Participant):
    """Returns the global weights plus a tiny constant at once: orchestration only."""

    def __init__(self, k: int, counter: Counter, samples: int = 100) -> None:
        self.k = k
        self.samples = samples
        self.counter = counter
        self.fit_log: list[dict[str, Any]] = []

    def num_samples(self) -> int:
        return self.samples

    def fit(self, weights, config: TrainConfig, progress: Progress):  # type: ignore[no-untyped-def]
        self.fit_log.append({"round": config.round, "t": time.time(), **self.counter.snapshot()})
        eps = 1e-6 * (self.k + 1)
        return {name: w + w.dtype.type(eps) for name, w in weights.items()}, self.samples, {"loss": 0.0}


def run_participants(url: str, task: str, tokens: list[str], poll_wait: float) -> dict[str, Any]:
    from fedpact.runtime import run_participant

    out: dict[str, Any] = {"participants": [], "errors": []}
    lock = threading.Lock()

    def one(k: int, token: str) -> None:
        client, counter = counted_client(url, token)
        p = NoTrain(k, counter)
        try:
            res = run_participant(client, task, p, progress=Progress(quiet=True), poll_wait=poll_wait)
            status = res.status
        except BaseException as exc:  # noqa: BLE001 - reported to the bench
            status = f"error: {exc!r}"
            with lock:
                out["errors"].append(status)
        with lock:
            out["participants"].append({"k": k, "status": status, "fit_log": p.fit_log, "final": counter.snapshot()})
        client.close()

    threads = [threading.Thread(target=one, args=(k, t), name=f"participant-{k}", daemon=True)
               for k, t in enumerate(tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def worker_main() -> int:
    """``--worker``: read {url, task, tokens, poll_wait} on stdin, print one JSON result line."""
    spec = json.loads(sys.stdin.read())
    out = run_participants(spec["url"], spec["task"], spec["tokens"], spec["poll_wait"])
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# -- the run -----------------------------------------------------------------------------
class Recorder(Progress):
    """Quiet progress that timestamps the events the measurement needs."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.quorum_at: float | None = None
        self.started: dict[int, float] = {}
        self.warnings: list[str] = []

    def info(self, text: str) -> None:
        if text.startswith("quorum reached") and self.quorum_at is None:
            self.quorum_at = time.perf_counter()

    def warning(self, text: str) -> None:
        self.warnings.append(text)

    def round_started(self, round: int, rounds: int, selected: list[str]) -> None:
        self.started[round] = time.perf_counter()


def definition(rounds: int, n: int) -> dict[str, Any]:
    return {
        "model": {"name": "softmax_regression"},
        "algorithm": {"name": "fedavg"},
        "rounds": rounds,
        "local_epochs": 1,
        "batch_size": 32,
        "learning_rate": 0.1,
        "quorum": n,
        "admission": "open",
        "min_participants": n,
        "fraction": 1.0,
        "round_timeout_s": 120,
        "data": {"kind": "tabular", "features": FEATURES, "label": "label", "classes": list(range(CLASSES))},
    }


def main(argv: list[str] | None = None) -> int:
    if argv is None and "--worker" in sys.argv[1:]:
        return worker_main()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--poll-wait", type=float, default=10.0, help="participants' long-poll wait (run_participant default 10)")
    ap.add_argument("--participants-in-process", action="store_true", help="participants as threads of this process")
    ap.add_argument("--profile", action="store_true", help="cProfile the aggregator thread and print its hotspots")
    ap.add_argument("--py-spy", metavar="PY_SPY", default=None,
                    help="path of a py-spy binary: sample the hub, participant and aggregator processes during the run")
    ap.add_argument("--keep", action="store_true", help="keep the hub's data directory")
    ap.add_argument("--no-components", action="store_true", help="skip the per-request component timings at the end")
    ap.add_argument("--tag", default="", help="suffix for the result file name")
    ap.add_argument("--database-url", default=None, help="deployed variant: e.g. postgresql+psycopg://postgres@127.0.0.1/DB")
    ap.add_argument("--broker-url", default=None, help="deployed variant: e.g. amqp://guest:guest@127.0.0.1:5672/")
    ap.add_argument("--s3", action="store_true",
                    help="deployed variant: blobs in a SeaweedFS S3 server this script starts (presigned transfers)")
    ap.add_argument("--replicas", type=int, default=1,
                    help="deployed variant: this many hub processes behind haproxy (deploy/haproxy.cfg, at most 3)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if (a.replicas > 1 or a.s3) and not (a.database_url and a.broker_url):
        ap.error("--replicas and --s3 need the deployed variant (--database-url and --broker-url)")
    if not 1 <= a.replicas <= 3:
        ap.error("--replicas is 1 to 3 (deploy/haproxy.cfg names three servers)")

    from fedpact.hub.config import HubConfig
    from fedpact.hub.server import HubProcess

    facts = machine_facts()
    print(f"== round_overhead: {a.participants} participants, {FEATURES * CLASSES + CLASSES:,} parameters, "
          f"{a.rounds} rounds, hub process on loopback ==")
    print_machine(facts)
    data_dir = Path(tempfile.mkdtemp(prefix="fedpact-bench-"))
    # Replicas share the database, the broker and the blob directory (one machine), as the
    # replicas of docs/deploy.md share an object store; 10 connections each, as there.
    weed = None
    if a.s3:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
        from seaweedfs import start_seaweedfs

        weed = start_seaweedfs(data_dir / "seaweedfs")
    config = HubConfig(data_dir=data_dir / "hub", database_url=a.database_url, broker_url=a.broker_url,
                       **({"blob_store": weed.url("fedpact-bench")} if weed is not None else {}),
                       **({"database_pool_size": 10} if a.replicas > 1 else {}))
    replicas = [HubProcess(config=config) for _ in range(a.replicas)]
    hub = replicas[0]
    t = time.perf_counter()
    for h in replicas:
        h.start()
    lb: subprocess.Popen[bytes] | None = None
    hub_url = hub.url
    if a.replicas > 1:
        lb, hub_url = start_haproxy([h.port for h in replicas], data_dir / "haproxy.log")
    print(f"hub process pid {hub.pid if a.replicas == 1 else [h.pid for h in replicas]} at {hub_url} (data {data_dir}), started in "
          f"{time.perf_counter() - t:.1f} s")
    worker: subprocess.Popen[str] | None = None
    try:
        t = time.perf_counter()
        names = ["alice"] + [f"p{k:02d}" for k in range(a.participants)]
        tokens: dict[str, str] = {}
        for name in names:
            with HubClient(hub_url) as c:
                c.register(name, PASSWORD, "Bench")
                tokens[name] = c.login(name, PASSWORD)
        alice, agg_counter = counted_client(hub_url, tokens["alice"])
        task = f"bench-{int(time.time())}"
        alice.create_task(task, definition(a.rounds, a.participants), "round overhead benchmark")
        print(f"registered {len(names)} users and created task {task!r} in {time.perf_counter() - t:.1f} s")

        ptokens = [tokens[n] for n in names[1:]]
        in_process: dict[str, Any] = {}
        if a.participants_in_process:
            th = threading.Thread(target=lambda: in_process.update(run_participants(hub_url, task, ptokens, a.poll_wait)),
                                  daemon=True)
            th.start()
        else:
            worker = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
            assert worker.stdin is not None
            worker.stdin.write(json.dumps({"url": hub_url, "task": task, "tokens": ptokens, "poll_wait": a.poll_wait}))
            worker.stdin.close()

        rec = Recorder()
        ends: dict[int, float] = {}
        agg_snap: dict[int, dict[str, int]] = {}

        cpu_pids: dict[str, int | tuple[int, ...] | None] = {
            "hub": tuple(h.pid for h in replicas if h.pid is not None) if a.replicas > 1 else hub.pid,
            "aggregator (bench process)": os.getpid(),
        }
        if lb is not None:
            cpu_pids["load balancer (haproxy)"] = lb.pid
        if worker is not None:
            cpu_pids["participants (worker process)"] = worker.pid
        cpu_snap: dict[int, dict[str, float]] = {}

        def on_round(r: int, metrics: dict[str, Any]) -> None:
            ends[r] = time.perf_counter()
            agg_snap[r] = agg_counter.snapshot()
            cpu_snap[r] = {k: _cpu_seconds(pid) for k, pid in cpu_pids.items()}

        agg = Aggregator(alice, task, progress=rec, on_round=on_round, quorum_timeout_s=120)
        timer = _Breakdown()
        timer.instrument(alice, agg)
        breakdown_snap: dict[int, dict[str, float]] = {}
        _inner_on_round = on_round

        def on_round(r: int, metrics: dict[str, Any]) -> None:  # noqa: F811 - extends the one above
            _inner_on_round(r, metrics)
            breakdown_snap[r] = timer.snapshot()

        agg.on_round = on_round
        prof = cProfile.Profile() if a.profile else None
        spies = _start_py_spy(a.py_spy, {"hub": hub.pid, "participants": worker.pid if worker else None,
                                         "aggregator": os.getpid()}, data_dir) if a.py_spy else {}
        t_run = time.perf_counter()
        if prof:
            prof.enable()
        result = agg.run()
        if prof:
            prof.disable()
        t_total = time.perf_counter() - t_run
        spy_summary = _stop_py_spy(spies)

        if worker is not None:
            assert worker.stdout is not None
            out_text = worker.stdout.read()
            worker.wait(timeout=120)
            line = next((ln for ln in out_text.splitlines() if ln.startswith("RESULT ")), None)
            presult = json.loads(line[len("RESULT "):]) if line else {"participants": [], "errors": ["no result"]}
        else:
            th.join(120)
            presult = in_process
        if presult.get("errors"):
            print(f"participant errors: {presult['errors']}")
        rounds_rec = alice.list_rounds(task)
        payload_sizes = _payload_sizes(agg)

        # -- per-round times -------------------------------------------------------------
        R = sorted(ends)
        assert rec.quorum_at is not None
        cycle = {r: ends[r] - (ends[r - 1] if r - 1 in ends else rec.quorum_at) for r in R}
        seconds = {int(x["number"]): float(x["metrics"]["seconds"]) for x in rounds_rec}
        steady = [r for r in R if r >= 2] or R
        # -- traffic ---------------------------------------------------------------------
        per_round_agg = [_diff(agg_snap[r], agg_snap[r - 1]) for r in steady if r - 1 in agg_snap]
        per_round_part: list[dict[str, int]] = []
        for r in range(2, max(R)):
            tot: dict[str, int] = {}
            for pp in presult.get("participants", []):
                logs = {e["round"]: e for e in pp["fit_log"]}
                if r in logs and r + 1 in logs:
                    for k, v in _diff(logs[r + 1], logs[r]).items():
                        tot[k] = tot.get(k, 0) + v
            if tot:
                per_round_part.append(tot)
        agg_up = statistics.median([d["blob_up"] for d in per_round_agg]) if per_round_agg else float("nan")
        agg_down = statistics.median([d["blob_down"] for d in per_round_agg]) if per_round_agg else float("nan")
        part_up = statistics.median([d["blob_up"] for d in per_round_part]) if per_round_part else float("nan")
        part_down = statistics.median([d["blob_down"] for d in per_round_part]) if per_round_part else float("nan")
        other = (statistics.median([d["other_up"] + d["other_down"] for d in per_round_agg]) if per_round_agg else 0) + (
            statistics.median([d["other_up"] + d["other_down"] for d in per_round_part]) if per_round_part else 0)
        requests = (statistics.median([d["requests"] for d in per_round_agg]) if per_round_agg else 0) + (
            statistics.median([d["requests"] for d in per_round_part]) if per_round_part else 0)
        participant_view = part_down + part_up + payload_sizes["checkpoint"]
        all_hops = agg_up + agg_down + part_up + part_down

        cs = stats([cycle[r] for r in steady])
        ss = stats([seconds[r] for r in steady if r in seconds])
        call = stats([cycle[r] for r in R])
        rows = [[r, f"{cycle[r]:.3f}", f"{seconds.get(r, float('nan')):.3f}"] for r in R]
        print()
        print(table(["round", "cycle s", "record 'seconds'"], rows))
        print()
        print(table(
            ["statistic (rounds 2..R)", "median", "mean", "min", "max", "stdev"],
            [["cycle s (end to end)", *(f"{cs[k]:.3f}" for k in ("median", "mean", "min", "max", "stdev"))],
             ["record 'seconds'", *(f"{ss[k]:.3f}" for k in ("median", "mean", "min", "max", "stdev"))]],
        ))
        print(f"all rounds incl. round 1: cycle median {call['median']:.3f} s, mean {call['mean']:.3f} s; "
              f"whole run after start (incl. quorum wait, final evaluation, model upload) {t_total:.1f} s")
        print()
        print(f"payload sizes: broadcast {payload_sizes['broadcast'] / MB:.2f} MB, update {payload_sizes['update'] / MB:.2f} MB, "
              f"checkpoint {payload_sizes['checkpoint'] / MB:.2f} MB")
        print(table(
            ["model bytes per round (steady state, measured)", "MB", "MB/s at median cycle"],
            [["aggregator uploads (broadcast + checkpoint)", f"{agg_up / MB:.1f}", ""],
             ["aggregator downloads (updates)", f"{agg_down / MB:.1f}", ""],
             ["participants download (broadcast)", f"{part_down / MB:.1f}", ""],
             ["participants upload (updates)", f"{part_up / MB:.1f}", ""],
             ["participant_view: P down + P up + checkpoint", f"{participant_view / MB:.1f}",
              f"{participant_view / MB / cs['median']:.1f}"],
             ["all_hops: every model byte over HTTP", f"{all_hops / MB:.1f}", f"{all_hops / MB / cs['median']:.1f}"],
             ["non-blob HTTP bodies (JSON, polls), all clients", f"{other / MB:.3f}", ""]],
        ))
        print(f"HTTP requests per round (all clients, steady state): {requests:.0f}")
        cpu_per_round = {k: statistics.median([cpu_snap[r][k] - cpu_snap[r - 1][k] for r in steady if r - 1 in cpu_snap])
                         for k in cpu_pids} if len(cpu_snap) > 1 else {}
        if cpu_per_round:
            total_cpu = sum(cpu_per_round.values())
            print(table(["CPU seconds per round (user+sys, /proc, median of rounds 2..R)", "CPU s", "% of 2 cores x cycle"],
                        [[k, f"{v:.3f}", f"{100 * v / (2 * cs['median']):.0f}%"] for k, v in cpu_per_round.items()]
                        + [["all three processes", f"{total_cpu:.3f}", f"{100 * total_cpu / (2 * cs['median']):.0f}%"]]))
        breakdown: dict[str, float] = {}
        if len(breakdown_snap) > 1:
            keys = sorted({k for snap in breakdown_snap.values() for k in snap})
            for k in keys:
                breakdown[k] = statistics.median([breakdown_snap[r].get(k, 0.0) - breakdown_snap[r - 1].get(k, 0.0)
                                                  for r in steady if r - 1 in breakdown_snap])
            rows_b = sorted(breakdown.items(), key=lambda kv: -kv[1])
            accounted = sum(breakdown.values())
            print(table(["aggregator thread, exclusive wall time per round (median, rounds 2..R)", "s", "% of cycle"],
                        [[k, f"{v:.3f}", f"{100 * v / cs['median']:.0f}%"] for k, v in rows_b]
                        + [["(not in an instrumented call)", f"{cs['median'] - accounted:.3f}",
                            f"{100 * (cs['median'] - accounted) / cs['median']:.0f}%"]]))
        met = cs["median"] <= TARGET_S
        print()
        print(f"seconds per round: {cs['median']:.3f} median / {cs['mean']:.3f} mean end to end; record 'seconds' "
              f"{ss['median']:.3f} median; target <= {TARGET_S} s: {'MET' if met else 'NOT MET'}")
        for w in rec.warnings:
            print(f"aggregator warning: {w}")

        components = {} if a.no_components else _components(alice, a.participants, hub.pid if a.replicas == 1 else None)

        hotspots = None
        if prof:
            hotspots = _print_profile(prof)
        res = {
            "benchmark": "round_overhead",
            "machine": facts,
            "loadavg_at_end": os.getloadavg(),
            "parameters": {"participants": a.participants, "rounds": a.rounds, "parameters": FEATURES * CLASSES + CLASSES,
                           "model": "softmax_regression", "features": FEATURES, "classes": CLASSES,
                           "participants_in_process": a.participants_in_process, "poll_wait": a.poll_wait,
                           "hub": ("HubProcess (separate OS process), " if a.replicas == 1 else
                                   f"{a.replicas} HubProcess replicas behind haproxy (deploy/haproxy.cfg), ")
                                  + ("PostgreSQL + RabbitMQ" if a.database_url else "SQLite") + " + blob files",
                           "replicas": a.replicas,
                           "data_dir": str(data_dir),
                           "profile": a.profile, "tag": a.tag},
            "status": result.status,
            "rounds_completed": result.rounds_completed,
            "cycle_s": {str(r): cycle[r] for r in R},
            "record_seconds": {str(r): v for r, v in seconds.items()},
            "cycle_stats_steady": cs,
            "record_seconds_stats_steady": ss,
            "cycle_stats_all": call,
            "run_total_s": t_total,
            "payload_bytes": payload_sizes,
            "traffic_per_round_bytes": {"aggregator_blob_up": agg_up, "aggregator_blob_down": agg_down,
                                        "participants_blob_up": part_up, "participants_blob_down": part_down,
                                        "participant_view": participant_view, "all_hops": all_hops,
                                        "non_blob_bodies": other, "http_requests": requests},
            "mb_per_s_at_median_cycle": {"participant_view": participant_view / MB / cs["median"],
                                         "all_hops": all_hops / MB / cs["median"]},
            "participant_errors": presult.get("errors", []),
            "aggregator_warnings": rec.warnings,
            "target_s": TARGET_S,
            "target_met": met,
            "components_ms": components,
            "cpu_seconds_per_round": cpu_per_round,
            "aggregator_breakdown_s_per_round": breakdown,
            "profile_hotspots": hotspots,
            "py_spy": spy_summary,
        }
        path = write_result("round_overhead" + (f"-{a.tag}" if a.tag else ""), res)
        print(f"result written to {path}")
        alice.close()
        return 0
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        if lb is not None:
            lb.terminate()
            lb.wait(10)
        for h in replicas:
            h.stop()
        if weed is not None:
            weed.stop()
        if not a.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def _start_py_spy(binary: str, pids: dict[str, int | None], out_dir: Path) -> dict[str, Any]:
    spies = {}
    for name, pid in pids.items():
        if pid is None:
            continue
        out = out_dir / f"py-spy-{name}.txt"
        proc = subprocess.Popen([binary, "record", "-p", str(pid), "-r", "100", "--nonblocking", "-f", "raw",
                                 "-o", str(out), "--threads"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        spies[name] = (proc, out)
    time.sleep(1.0)  # let py-spy attach before the rounds start
    return spies


def _stop_py_spy(spies: dict[str, Any], n: int = 18) -> dict[str, Any]:
    import signal
    from collections import Counter as Tally

    summary: dict[str, Any] = {}
    for name, (proc, out) in spies.items():
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not out.exists():
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            print(f"py-spy for {name}: no output ({err.strip()[:300]})")
            continue
        self_t: Tally[str] = Tally()
        incl: Tally[str] = Tally()
        total = 0
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            c = int(count)
            frames = [f for f in stack.split(";") if not f.startswith("thread ") and not f.startswith("process ")]
            if not frames:
                continue
            total += c
            self_t[_short(frames[-1])] += c
            for f in {_short(f) for f in frames}:
                incl[f] += c
        print()
        print(f"py-spy, {name} process: {total} samples at 100 Hz (= {total / 100:.1f} CPU-s of non-idle Python "
              f"threads); raw stacks in {out}")
        print(table(["self %", "function (file:line)"], [[f"{100 * c / total:.1f}", f] for f, c in self_t.most_common(n)]))
        print(table(["incl %", "function (file:line)"], [[f"{100 * c / total:.1f}", f] for f, c in incl.most_common(n + 12)
                                                           if "fedpact" in f or "httpx" in f or "uvicorn" in f or "safetensors" in f
                                                           or "sqlalchemy" in f or "hashlib" in f or "starlette" in f][:n]))
        summary[name] = {"samples": total, "self": self_t.most_common(n), "inclusive": incl.most_common(3 * n)}
    return summary


def _short(frame: str) -> str:
    """``fn (path/to/site-packages/pkg/mod.py:12)`` -> ``fn (pkg/mod.py)``."""
    fn, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{fn} ({path})"


def _components(client: HubClient, n_updates: int, hub_pid: int | None = None,
                reps: int = 5) -> dict[str, dict[str, float]]:
    """Median cost of each step a round is made of, measured alone against the same hub.

    For the requests, also the hub process's CPU time per request (user + system from
    /proc over all repetitions, so its 10 ms clock tick is divided by their number).
    """
    import hashlib

    from threadpoolctl import threadpool_limits

    from fedpact.algorithms.strategies import FedAvg
    from fedpact.algorithms.validation import validate_update
    from fedpact.runtime import messages as m

    task = client.create_task(f"bench-parts-{int(time.time())}", definition(1, 1), "component timings")["id"]
    rng = np.random.default_rng(1)
    w = {"weight": rng.standard_normal((CLASSES, FEATURES), dtype=np.float32), "bias": np.zeros(CLASSES, np.float32)}
    updates = [({k: v + np.float32(1e-6 * i) for k, v in w.items()}, 100) for i in range(n_updates)]
    payload = m.pack({"round_id": "x"}, m.prefixed(w, "w."))
    fedavg = FedAvg()
    out: dict[str, list[float]] = {}

    hub_cpu: dict[str, float] = {}

    def t(name: str, fn: Any, k: int = reps, on_hub: bool = False) -> None:
        c0 = _cpu_seconds(hub_pid)
        for _ in range(k):
            t0 = time.perf_counter()
            fn()
            out.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
        if on_hub and hub_pid is not None:
            hub_cpu[name] = (_cpu_seconds(hub_pid) - c0) / k * 1e3

    blobs: list[str] = []

    def up() -> None:
        data = payload + rng.bytes(16)  # unique content: the hub deduplicates identical blobs
        blobs.append(client.upload_blob(task, data)["sha256"])

    t("small JSON request (GET task)", lambda: client.get_task(task), 40, True)
    t("small message (POST, inline)", lambda: client.send(task, sender="aggregator", recipient="participants",
                                                          kind="bench", payload=b"x" * 100), 40, True)
    client.join(task)  # the creator may join as a data owner: then it reads the broadcasts
    me = client.user["name"] if client.user else client.me()["name"]
    t("poll that finds a message", lambda: client.poll(task, m.participant_address(me), after=0, wait=5, limit=1),
      40, True)
    raw_sent: list[int] = []

    def raw_update() -> None:
        # A participant's update: a unique 4 MB body as one raw message (the runtime's path).
        raw_sent.append(len(raw_sent))
        client.send(task, sender=m.participant_address(me), recipient="aggregator", kind="bench",
                    payload=payload + rng.bytes(16))

    t("update as a raw 4 MB message (POST messages/raw)", raw_update, 40, True)
    t("sha256 of 4 MB", lambda: hashlib.sha256(payload).hexdigest())
    t("m.pack (safetensors) 1M params", lambda: m.pack({"round_id": "x"}, m.prefixed(w, "w.")))
    t("m.unpack 1M params", lambda: m.unpack(payload))
    t("upload_blob 4 MB (one request)", up, 40, True)
    t("download_blob 4 MB (+ sha256 check)", lambda: client.download_blob(task, blobs[0]), 40, True)
    t("validate_update 1M params", lambda: validate_update(w, updates[0][0]))
    t(f"FedAvg.aggregate {n_updates} x 1M", lambda: fedavg.aggregate(w, updates), 9)

    def agg1() -> None:
        with threadpool_limits(1, user_api="blas"):
            fedavg.aggregate(w, updates)

    t(f"FedAvg.aggregate {n_updates} x 1M, BLAS 1 thread", agg1, 9)
    res = {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v),
               **({"hub_cpu_ms": hub_cpu[k]} if k in hub_cpu else {})} for k, v in out.items()}
    print()
    print("component costs, each measured alone against the same hub (ms):")
    print(table(["step", "median", "min", "max", "n", "hub CPU per request"],
                [[k, f"{r['median']:.1f}", f"{r['min']:.1f}", f"{r['max']:.1f}", r["n"],
                  f"{r['hub_cpu_ms']:.1f}" if "hub_cpu_ms" in r else ""] for k, r in res.items()]))
    return res


class _Breakdown:
    """Exclusive wall time of the aggregator's calls, by kind (nested calls are subtracted).

    The aggregator's own HubClient methods and the strategy's ``aggregate`` are wrapped on
    the instances in this process (nothing under src/ is changed); the cost is a few
    microseconds per call.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.stack: list[float] = []  # time spent in children of each open call
        self.lock = threading.Lock()
        self.owner = threading.get_ident()

    def wrap(self, label: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kw: Any) -> Any:
            if threading.get_ident() != self.owner:
                return fn(*args, **kw)
            self.stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                dt = time.perf_counter() - t0
                children = self.stack.pop()
                self.totals[label] = self.totals.get(label, 0.0) + dt - children
                if self.stack:
                    self.stack[-1] += dt
        return wrapped

    def instrument(self, client: HubClient, agg: Aggregator) -> None:
        labels = {
            "poll": "poll (long-poll: waiting for participants' messages)",
            "download_blob": "download_blob (updates, + sha256)",
            "upload_blob": "upload_blob (broadcast + checkpoint, + sha256)",
            "send": "send (message POSTs)",
            "put_round": "put_round (round records)",
            "put_checkpoint": "put_checkpoint",
            "ack": "ack",
            "get_task": "get_task (status checks)",
        }
        for name, label in labels.items():
            setattr(client, name, self.wrap(label, getattr(client, name)))
        agg.algorithm.aggregate = self.wrap("aggregate (FedAvg incl. checks)", agg.algorithm.aggregate)  # type: ignore[method-assign]
        import fedpact.runtime.rounds.open as base_mod

        # Wrapped where they are looked up at call time; a name the runtime no longer uses is skipped.
        if hasattr(base_mod, "validate_update"):
            base_mod.validate_update = self.wrap("validate_update", base_mod.validate_update)
        if hasattr(client, "download_tensors"):
            client.download_tensors = self.wrap("download_tensors (updates, decoded as they arrive)",  # type: ignore[method-assign]
                                                client.download_tensors)
        else:  # an older fedpact (--baseline-src in round_overhead_flower.py)
            client.download_blob = self.wrap("download_blob (updates)", client.download_blob)  # type: ignore[method-assign]

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals)


def _cpu_seconds(pid: int | tuple[int, ...] | None) -> float:
    """user + system CPU time of a process (all its threads), or of several summed, from /proc."""
    if isinstance(pid, tuple):
        return sum(_cpu_seconds(p) for p in pid)
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a[k] - b.get(k, 0) for k in ("blob_up", "blob_down", "other_up", "other_down", "requests")}


def _payload_sizes(agg: Aggregator) -> dict[str, int]:
    """Sizes of the three model-carrying message bodies, built the way the runtime builds them."""
    from fedpact.runtime import messages as m

    w = m.prefixed(agg.global_weights, "w.")
    meta = {"round_id": "0" * 32, "rounds": 15, "selected": [f"p{k:02d}" for k in range(10)], "config": {},
            "deadline_s": 120}
    return {
        "broadcast": len(m.pack(meta, w)),
        "update": len(m.pack({"round_id": "0" * 32, "num_samples": 100, "train": {}, "val": {}, "train_seconds": 0.0}, w)),
        "checkpoint": len(m.pack({"round": 1}, w)),
    }


def _print_profile(prof: cProfile.Profile, n: int = 25) -> list[dict[str, Any]]:
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s)
    st.sort_stats("tottime").print_stats(n)
    text = s.getvalue()
    print()
    print("cProfile of the aggregator (bench process, main thread), top by own time:")
    print("\n".join(text.splitlines()[:n + 12]))
    s2 = io.StringIO()
    pstats.Stats(prof, stream=s2).sort_stats("cumulative").print_stats(n)
    print("top by cumulative time:")
    print("\n".join(s2.getvalue().splitlines()[:n + 12]))
    out = []
    for (file, line, fn), (_cc, nc, tt, ct, _) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:n]:  # type: ignore[attr-defined]
        out.append({"function": f"{file}:{line}({fn})", "calls": nc, "tottime_s": tt, "cumtime_s": ct})
    return out


if __name__ == "__main__":
    sys.exit(main())
