"""What the privacy modes cost, and what DP does to accuracy.

Sections (``--only`` picks some; all by default):

* ``hub``: per-round time of ``secure`` against ``open`` in the same run, through the real
  hub: the hub is its own OS process on loopback, the participants are threads of a second
  process (``round_overhead.py``'s no-training participant: it returns the global weights
  plus a constant at once, so what is measured is orchestration and privacy cost, not
  training), the aggregator runs here. Default: 10 participants, a 1,000,000-parameter
  ``softmax_regression`` (99,999 features x 10 classes + 10), rounds 2..R (steady state).
* ``encrypted``: the same for ``encrypted`` against ``open`` with a 100,010-parameter model
  (9,999 features): CKKS ciphertexts are ~20x the plaintext, so 1M parameters x 10
  participants would be ~0.8 GB of uploads per round on this 2-core machine.
* ``scaling``: the secure-aggregation protocol alone, in process, without the hub: all n
  clients and the server run the four steps in this process, one after the other, with a
  100,000-value vector, for n = 10..100, complete graph vs SecAgg+ sparse graph. Reports
  the mean per-client time (all four client steps) and the server time (relay + unmask).
* ``prg``: mask expansion throughput (AES-256-CTR and ChaCha20 keystream into uint32), MB/s.
* ``accuracy``: ``open``, ``dp`` (central and local) and ``secure+dp`` on the digits demo
  data (10 participants, 10 rounds, through an embedded hub, real training) with
  ``target_epsilon`` 1, 4 and 8 at delta 1e-5; the accountant's final epsilon is reported.

    .venv/bin/python bench/privacy_cost.py                      # everything (~10 min)
    .venv/bin/python bench/privacy_cost.py --only prg scaling    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_facts, print_machine, stats, table, write_result  # noqa: E402

from fedpact.client.hub import HubClient  # noqa: E402
from fedpact.runtime import Progress  # noqa: E402
from fedpact.runtime.aggregator import Aggregator  # noqa: E402

PASSWORD = "bench-password-1"


# -- hub runs ------------------------------------------------------------------------------
def worker_main() -> int:
    import round_overhead

    spec = json.loads(sys.stdin.read())
    out = round_overhead.run_participants(spec["url"], spec["task"], spec["tokens"], spec["poll_wait"])
    print("RESULT " + json.dumps({"errors": out["errors"]}), flush=True)
    return 0


def hub_definition(features: int, n: int, rounds: int, privacy: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {"name": "softmax_regression"}, "rounds": rounds, "local_epochs": 1, "batch_size": 32,
        "learning_rate": 0.1, "quorum": n, "min_participants": n, "fraction": 1.0, "round_timeout_s": 300,
        "admission": "open",
        "data": {"kind": "tabular", "features": features, "label": "label", "classes": list(range(10))},
        "privacy": privacy,
    }


def run_on_hub(hub_url: str, tokens: dict[str, str], n: int, features: int, rounds: int,
               privacy: dict[str, Any]) -> dict[str, Any]:
    alice = HubClient(hub_url, tokens["alice"])
    task = f"bench-{privacy['mode'].replace('+', '-')}-{uuid.uuid4().hex[:6]}"
    alice.create_task(task, hub_definition(features, n, rounds, privacy), "privacy cost benchmark")
    ptokens = [tokens[f"p{k:03d}"] for k in range(n)]
    worker = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(json.dumps({"url": hub_url, "task": task, "tokens": ptokens, "poll_wait": 10.0}))
    worker.stdin.close()
    ends: dict[int, float] = {}
    quorum: list[float] = []

    class Rec(Progress):
        def info(self, text: str) -> None:
            if text.startswith("quorum reached") and not quorum:
                quorum.append(time.perf_counter())

    agg = Aggregator(alice, task, progress=Rec(quiet=True), quorum_timeout_s=300,
                     on_round=lambda r, _m: ends.__setitem__(r, time.perf_counter()))
    agg.run()
    out = worker.stdout.read()
    worker.wait(timeout=300)
    errors = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])["errors"]
    cycle = {r: ends[r] - (ends[r - 1] if r - 1 in ends else quorum[0]) for r in sorted(ends)}
    records = {int(x["number"]): x for x in alice.list_rounds(task)}
    alice.close()
    steady = [cycle[r] for r in cycle if r >= 2] or list(cycle.values())
    return {"mode": privacy["mode"], "cycle": cycle, "steady": stats(steady), "errors": errors,
            "seconds": {r: records[r]["metrics"].get("seconds") for r in records}}


def section_hub(a: argparse.Namespace, results: dict[str, Any], encrypted: bool) -> None:
    from fedpact.hub.server import HubProcess

    n = a.participants
    features = 9_999 if encrypted else 99_999
    params = features * 10 + 10
    modes = [{"mode": "open"}, {"mode": "encrypted"}] if encrypted else [{"mode": "open"}, {"mode": "secure"}]
    data_dir = Path(tempfile.mkdtemp(prefix="fedpact-privacy-bench-"))
    hub = HubProcess(data_dir / "hub")
    hub.start()
    try:
        tokens: dict[str, str] = {}
        for name in ["alice"] + [f"p{k:03d}" for k in range(n)]:
            with HubClient(hub.url) as c:
                c.register(name, PASSWORD, "Bench")
                tokens[name] = c.login(name, PASSWORD)
        runs = []
        for privacy in modes * a.repeat:
            print(f"  {privacy['mode']}: {n} participants, {params:,} parameters, {a.rounds} rounds ...", flush=True)
            runs.append(run_on_hub(hub.url, tokens, n, features, a.rounds, privacy))
    finally:
        hub.stop()
    rows, by_mode = [], {}
    for run in runs:
        by_mode.setdefault(run["mode"], []).extend(v for r, v in run["cycle"].items() if r >= 2)
        rows.append([run["mode"], " ".join(f"{run['cycle'][r]:.2f}" for r in sorted(run["cycle"])),
                     f"{run['steady']['median']:.3f}", "; ".join(run["errors"]) or "-"])
    print(table(["mode", "cycle s per round (1..R)", "median rounds 2..R", "errors"], rows))
    other = "encrypted" if encrypted else "secure"
    ratio = statistics.median(by_mode[other]) / statistics.median(by_mode["open"])
    print(f"  {other} / open, median steady-state round: {ratio:.2f}x")
    results["encrypted" if encrypted else "hub"] = {"participants": n, "parameters": params, "runs": runs,
                                                    "ratio": ratio}


# -- in-process protocol scaling -------------------------------------------------------------
def simulate(n: int, length: int, sparse: bool) -> dict[str, float]:
    from fedpact.privacy.secagg import SecAggClient, SecAggParams, SecAggServer

    names = [f"p{i:03d}" for i in range(n)]
    params = SecAggParams("bench", uuid.uuid4().hex, tuple(names), n // 2 + 1, length, sparse=sparse)
    server = SecAggServer(params)
    clients = {u: SecAggClient(params, u) for u in names}
    x = np.random.default_rng(0).integers(0, 2**32, length, dtype=np.uint32)
    client_t = dict.fromkeys(names, 0.0)
    server_t = 0.0

    def timed_client(u: str, fn: Any, *args: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args)
        client_t[u] += time.perf_counter() - t
        return out

    def timed_server(fn: Any, *args: Any) -> Any:
        nonlocal server_t
        t = time.perf_counter()
        out = fn(*args)
        server_t += time.perf_counter() - t
        return out

    msgs = {u: timed_client(u, clients[u].advertise_keys) for u in names}
    for u in names:
        timed_server(server.receive, u, msgs[u])
    roster = timed_server(server.roster)
    msgs = {u: timed_client(u, clients[u].share_keys, roster) for u in names}
    for u in names:
        timed_server(server.receive, u, msgs[u])
    fwd = timed_server(server.forward_shares)
    dropped = names[1]  # one dropout after ShareKeys, so the server also rebuilds a mask key
    for u in names:
        if u == dropped:
            continue
        meta, y = timed_client(u, clients[u].masked_input, fwd[u], x)
        timed_server(server.receive, u, meta, y)
    req = timed_server(server.unmask_request)
    for u in names:
        if u != dropped:
            timed_server(server.receive, u, timed_client(u, clients[u].unmask, req))
    total = timed_server(server.finish)
    assert np.array_equal(total, (x.astype(np.uint64) * (n - 1) % 2**32).astype(np.uint32))
    live = [client_t[u] for u in names if u != dropped]
    return {"client_mean_s": statistics.mean(live), "client_max_s": max(live), "server_s": server_t,
            "neighbours": len(params.neighbours(names[0]))}


def section_scaling(a: argparse.Namespace, results: dict[str, Any]) -> None:
    rows, out = [], []
    for n in a.scaling:
        for sparse in (False, True):
            r = simulate(n, a.scaling_length, sparse)
            out.append({"n": n, "sparse": sparse, **r})
            rows.append([n, "sparse" if sparse else "complete", r["neighbours"], f"{r['client_mean_s'] * 1000:.1f}",
                         f"{r['client_max_s'] * 1000:.1f}", f"{r['server_s'] * 1000:.0f}"])
            print(f"  n={n} {'sparse' if sparse else 'complete'} done", flush=True)
    print(table(["participants", "graph", "neighbours", "client ms (mean)", "client ms (max)", "server ms"], rows))
    results["scaling"] = {"vector_length": a.scaling_length, "rows": out}


def section_prg(a: argparse.Namespace, results: dict[str, Any]) -> None:
    from fedpact.privacy.prg import measure_throughput

    out = {c: measure_throughput(128, c, repeats=5) for c in ("aes-ctr", "chacha20")}
    print(table(["stream cipher", "mask expansion MB/s (128 MB, best of 5, 1 core)"],
                [[c, f"{v:,.0f}"] for c, v in out.items()]))
    results["prg"] = out


# -- accuracy under DP -----------------------------------------------------------------------
def run_digits(privacy: dict[str, Any], n: int, rounds: int, seed: int) -> dict[str, Any]:
    from fedpact.data.builtin import digits_federation
    from fedpact.hub import EmbeddedHub
    from fedpact.runtime import DataParticipant, run_participant

    parts, test = digits_federation(n, test_fraction=0.25, seed=seed)
    with tempfile.TemporaryDirectory() as d, EmbeddedHub(Path(d) / "hub") as hub:
        clients = []
        for name in ["alice"] + [f"p{i:02d}" for i in range(n)]:
            c = HubClient(hub.url)
            c.register(name, PASSWORD, "Bench")
            c.login(name, PASSWORD)
            clients.append(c)
        definition = {"model": {"name": "softmax_regression"}, "rounds": rounds, "local_epochs": 2,
                      "batch_size": 32, "learning_rate": 0.1, "quorum": n, "min_participants": n // 2 + 1, "admission": "open",
                      "round_timeout_s": 60, "seed": seed, "privacy": privacy,
                      "data": {"kind": "tabular", "features": 64, "classes": list(range(10)), "standardize": True}}
        clients[0].create_task("digits", definition)
        threads = [threading.Thread(target=run_participant, args=(c, "digits", DataParticipant(p)),
                                    kwargs={"progress": Progress(quiet=True), "poll_wait": 1.0}, daemon=True)
                   for c, p in zip(clients[1:], parts)]
        for t in threads:
            t.start()
        result = Aggregator(clients[0], "digits", eval_data=test, progress=Progress(quiet=True), poll_wait=0.5).run()
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
    last = result.history[-1]["metrics"]
    return {"accuracy": result.metrics.get("eval_accuracy"), "epsilon": last.get("epsilon"),
            "noise_multiplier": last.get("noise_multiplier"), "rounds": result.rounds_completed}


def section_accuracy(a: argparse.Namespace, results: dict[str, Any]) -> None:
    n, rounds, clip = a.dp_participants, a.dp_rounds, 1.0
    configs: list[tuple[str, dict[str, Any]]] = [("open", {"mode": "open"})]
    for eps in a.epsilons:
        common = {"clip_norm": clip, "target_epsilon": eps, "delta": 1e-5}
        configs += [(f"dp central eps={eps:g}", {"mode": "dp", "placement": "central", **common}),
                    (f"dp local eps={eps:g}", {"mode": "dp", "placement": "local", **common}),
                    (f"secure+dp eps={eps:g}", {"mode": "secure+dp", **common})]
    rows, out = [], []
    for label, privacy in configs:
        accs, info = [], {}
        for seed in range(a.dp_seeds):
            info = run_digits(privacy, n, rounds, seed)
            accs.append(info["accuracy"])
        out.append({"label": label, "privacy": privacy, "accuracies": accs, **info})
        eps_txt = f"{info['epsilon']:.3f}" if info.get("epsilon") is not None else "-"
        z_txt = f"{info['noise_multiplier']:.3f}" if info.get("noise_multiplier") is not None else "-"
        rows.append([label, z_txt, eps_txt, f"{statistics.mean(accs):.3f}",
                     f"{min(accs):.3f}-{max(accs):.3f}"])
        print(f"  {label}: accuracy {statistics.mean(accs):.3f}", flush=True)
    print(table(["mode", "noise multiplier z", "epsilon after last round", "accuracy (mean)", "range over seeds"], rows))
    results["accuracy"] = {"participants": n, "rounds": rounds, "clip_norm": clip, "delta": 1e-5, "runs": out}


def main() -> int:
    if "--worker" in sys.argv[1:]:
        return worker_main()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=["prg", "scaling", "hub", "encrypted", "accuracy"])
    ap.add_argument("--participants", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=1, help="alternate open/other this many times")
    ap.add_argument("--scaling", type=int, nargs="*", default=[10, 25, 50, 100])
    ap.add_argument("--scaling-length", type=int, default=100_000)
    ap.add_argument("--dp-participants", type=int, default=10)
    ap.add_argument("--dp-rounds", type=int, default=10)
    ap.add_argument("--dp-seeds", type=int, default=2)
    ap.add_argument("--epsilons", type=float, nargs="*", default=[1.0, 4.0, 8.0])
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    facts = machine_facts()
    print("== privacy_cost ==")
    print_machine(facts)
    results: dict[str, Any] = {"facts": facts, "args": vars(a)}
    if "prg" in a.only:
        print("\n-- mask expansion --")
        section_prg(a, results)
    if "scaling" in a.only:
        print(f"\n-- secure aggregation in process, {a.scaling_length:,} values, one dropout after ShareKeys --")
        section_scaling(a, results)
    if "hub" in a.only:
        print("\n-- secure vs open through the hub --")
        section_hub(a, results, encrypted=False)
    if "encrypted" in a.only:
        print("\n-- encrypted vs open through the hub --")
        section_hub(a, results, encrypted=True)
    if "accuracy" in a.only:
        print("\n-- accuracy under DP on digits --")
        section_accuracy(a, results)
    path = write_result("privacy_cost" + (f"-{a.tag}" if a.tag else ""), results)
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
