"""A 200 MB model, 3 participants: seconds per round and peak memory of hub and clients.

Set-up (all real): the hub is its own OS process (``HubProcess``) on 127.0.0.1 with its
blobs on local disk or, with ``--store s3``, in a SeaweedFS S3 server this script starts
(the one the tests use). The model is ``softmax_regression`` with 4,999,999 features and
10 classes: 50,000,000 float32 parameters, 200 MB. Each participant is its own OS process
(this script with ``--worker``) whose ``fit`` returns the received weights plus a constant
(no training: what is measured is moving and aggregating 200 MB). The aggregator runs in
this process.

Reported: wall seconds per round (aggregator's view, from one round's end to the next),
peak resident memory (VmHWM) of the hub, each participant and this process (aggregator),
and the bytes left in the blob store after the task ended and the hub's GC pass ran.

    .venv/bin/python bench/large_model.py                 # local disk
    .venv/bin/python bench/large_model.py --store s3      # SeaweedFS S3, presigned transfers
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from _common import machine_facts, print_machine, table, write_result

from fedpact.client.hub import HubClient
from fedpact.runtime import Participant, Progress, TrainConfig
from fedpact.runtime.aggregator import Aggregator

PASSWORD = "bench-password-1"
FEATURES = 4_999_999
CLASSES = 10
PARAMS = FEATURES * CLASSES + CLASSES


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM: the most resident memory the process has had, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


class NoTrain(Participant):
    """Returns the global weights plus a small constant: the cost is moving the model."""

    def __init__(self, k: int) -> None:
        self.k = k

    def num_samples(self) -> int:
        return 100

    def fit(self, weights, config: TrainConfig, progress: Progress):  # type: ignore[no-untyped-def]
        eps = 1e-6 * (self.k + 1)
        for w in weights.values():
            w += w.dtype.type(eps)  # in place: no second copy of the model
        return weights, 100, {"loss": 0.0}


def worker_main() -> int:
    from fedpact.runtime import run_participant

    spec = json.loads(sys.stdin.read())
    with HubClient(spec["url"], spec["token"], timeout=600, retry_for_s=120) as client:
        res = run_participant(client, spec["task"], NoTrain(spec["k"]), progress=Progress(quiet=True), poll_wait=10)
    print("RESULT " + json.dumps({"status": res.status, "peak_rss_mb": peak_rss_mb()}), flush=True)
    return 0


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
        "round_timeout_s": 900,
        "data": {"kind": "tabular", "features": FEATURES, "label": "label", "classes": list(range(CLASSES))},
    }


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    if argv is None and "--worker" in sys.argv[1:]:
        return worker_main()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", choices=["local", "s3"], default="local")
    ap.add_argument("--participants", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tag", default="")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    from fedpact.hub.blobstore import open_blob_store
    from fedpact.hub.config import HubConfig
    from fedpact.hub.server import HubProcess

    facts = machine_facts()
    print(f"== large_model: {PARAMS:,} float32 ({PARAMS * 4 / 1e6:.0f} MB), {a.participants} participants, "
          f"{a.rounds} rounds, blob store {a.store} ==")  # fmt: skip
    print_machine(facts)
    work = Path(tempfile.mkdtemp(prefix="fedpact-large-"))
    weed = None
    blob_store = None
    if a.store == "s3":
        from seaweedfs import start_seaweedfs

        weed = start_seaweedfs(work / "seaweedfs")
        blob_store = weed.url("fedpact-bench")
    config = HubConfig(data_dir=work / "hub", blob_store=blob_store, gc_grace_s=0, gc_interval_s=3600)
    hub = HubProcess(config=config)
    hub.start()
    workers: list[subprocess.Popen[str]] = []
    try:
        names = ["alice"] + [f"part{k}" for k in range(a.participants)]
        tokens: dict[str, str] = {}
        for name in names:
            with HubClient(hub.url) as c:
                c.register(name, PASSWORD, "Bench")
                tokens[name] = c.login(name, PASSWORD)
        alice = HubClient(hub.url, tokens["alice"], timeout=600, retry_for_s=120)
        task = f"large-{int(time.time())}"
        alice.create_task(task, definition(a.rounds, a.participants), "200 MB model benchmark")
        for k, name in enumerate(names[1:]):
            w = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
            assert w.stdin is not None
            w.stdin.write(json.dumps({"url": hub.url, "task": task, "token": tokens[name], "k": k}))
            w.stdin.close()
            workers.append(w)
        ends: dict[int, float] = {}
        hub_peak: list[float] = []

        def on_round(r: int, metrics: dict[str, Any]) -> None:
            ends[r] = time.perf_counter()
            hub_peak.append(peak_rss_mb(hub.pid or 0))
            print(f"round {r} done at {ends[r] - t0:.1f} s", flush=True)

        agg = Aggregator(alice, task, progress=Progress(quiet=True), on_round=on_round, quorum_timeout_s=600)
        t0 = time.perf_counter()
        result = agg.run()
        t_total = time.perf_counter() - t0
        clients = []
        for w in workers:
            assert w.stdout is not None
            out = w.stdout.read()
            w.wait(timeout=600)
            line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
            clients.append(json.loads(line[7:]) if line else {"status": f"exit {w.returncode}", "peak_rss_mb": None})
        hub_hwm = peak_rss_mb(hub.pid or 0)
        # The task ended (the aggregator set it COMPLETE): wait for the hub's GC pass.
        store = open_blob_store(blob_store, config.data_dir)
        deadline = time.monotonic() + 60
        left = sum(b.size for b in store.iter_blobs())
        while time.monotonic() < deadline:
            time.sleep(1)
            now = sum(b.size for b in store.iter_blobs())
            if now == left and now <= 2 * PARAMS * 4 + 10_000_000:
                break
            left = now
        rounds = sorted(ends)
        per_round = [ends[r] - ends[rounds[i - 1]] for i, r in enumerate(rounds) if i > 0]
        first = ends[rounds[0]] - t0 if rounds else float("nan")
        res = {
            "store": a.store,
            "params": PARAMS,
            "model_mb": PARAMS * 4 / 1e6,
            "participants": a.participants,
            "rounds": a.rounds,
            "status": getattr(result, "status", str(result)),
            "total_s": t_total,
            "first_round_s": first,
            "steady_round_s": per_round,
            "hub_peak_rss_mb": hub_hwm,
            "aggregator_peak_rss_mb": peak_rss_mb(),
            "participants_peak_rss_mb": [c["peak_rss_mb"] for c in clients],
            "participant_status": [c["status"] for c in clients],
            "store_bytes_after_gc": left,
            "staging_bytes_after": dir_bytes(config.uploads_dir),
            "machine": facts,
        }
        print(table(["what", "value"], [
            ["status", res["status"]],
            ["first round (s)", f"{first:.1f}"],
            ["later rounds (s)", ", ".join(f"{x:.1f}" for x in per_round)],
            ["hub peak RSS (MB)", f"{hub_hwm:.0f}"],
            ["aggregator process peak RSS (MB)", f"{res['aggregator_peak_rss_mb']:.0f}"],
            ["participant peak RSS (MB)", ", ".join(f"{x:.0f}" if x else "?" for x in res["participants_peak_rss_mb"])],
            ["blob store after GC (MB)", f"{left / 1e6:.0f}"],
        ]))  # fmt: skip
        path = write_result(f"large_model-{a.store}{a.tag}", res)
        print(f"result: {path}")
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        hub.stop()
        if weed is not None:
            weed.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
