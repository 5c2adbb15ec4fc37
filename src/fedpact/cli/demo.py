"""``fedpact demo``: the whole workflow on one machine, through the real parts.

An embedded hub in this process; Alice creates a task and runs the aggregator; Bob,
Carol and Dave (and more with ``--participants``) each train on their own shard of
scikit-learn's bundled digits in their own OS process. Every process talks HTTP to the
hub, exactly as it would across organisations.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fedpact.client.hub import HubClient

NAMES = ["bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory"]
PASSWORD = "demo-password-1"
TASK = "digits-demo"


def demo_definition(participants: int, rounds: int) -> dict[str, Any]:
    return {
        "model": {"name": "mlp", "params": {"hidden": [64]}},
        "algorithm": {"name": "fedavg"},
        "rounds": rounds,
        "local_epochs": 3,
        "batch_size": 32,
        "learning_rate": 0.1,
        "optimizer": "sgd",
        "quorum": participants,
        "min_participants": max(1, participants - 1),
        "fraction": 1.0,
        "round_timeout_s": 60,
        "data": {"kind": "tabular", "features": 64, "label": "label", "classes": list(range(10)),
                 "standardize": True},
        "evaluation": {"holdout": 0.2},
        "seed": 0,
    }


def _admit(alice: HubClient, names: list[str], procs: dict[str, subprocess.Popen[bytes]], console: Console,
           timeout_s: float = 120.0) -> bool:
    """Approve each participant's join request as it arrives, as a task creator would.

    The task uses the default admission (approval), so each ``fedpact participate`` asks
    to join and waits; False if a participant exits or never asks.
    """
    waiting = set(names)
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for request in alice.join_requests(TASK):
            if request["user"] in waiting:
                alice.approve(TASK, request["user"])
                waiting.discard(request["user"])
                console.print(f"alice approved {request['user']}'s request to join ({request['organisation']})")
        if any(procs[n].poll() is not None for n in waiting):
            return False
        time.sleep(0.2)
    return not waiting


def run_demo(*, participants: int = 3, rounds: int = 10, data_dir: Path | None = None, console: Console | None = None) -> bool:
    from fedpact.data.builtin import digits_federation
    from fedpact.data.loaders import save_csv
    from fedpact.hub.server import EmbeddedHub
    from fedpact.inference import load_model

    console = console or Console()
    if not 1 <= participants <= len(NAMES):
        raise ValueError(f"--participants must be between 1 and {len(NAMES)}")
    t0 = time.monotonic()
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="fedpact-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    names = NAMES[:participants]

    shards, test = digits_federation(participants, test_fraction=0.25, seed=0)
    for name, shard in zip(names, shards):
        save_csv(root / "data" / f"{name}.csv", shard)
    save_csv(root / "data" / "test.csv", test)

    with EmbeddedHub(root / "hub") as hub:
        console.print(f"[bold]fedpact demo[/]: hub at {hub.url} (data in {root})")
        tokens: dict[str, str] = {}
        for name, org in [("alice", "Acme Research"), *[(n, f"{n.title()} Labs") for n in names]]:
            c = HubClient(hub.url)
            c.register(name, PASSWORD, org)
            tokens[name] = c.login(name, PASSWORD)
            c.close()
        alice = HubClient(hub.url, tokens["alice"])
        alice.create_task(TASK, demo_definition(participants, rounds),
                          "Handwritten digits, 64 pixel features; each data owner keeps its shard.")
        console.print(f"alice created task {TASK!r}; {', '.join(names)} each train on their own file in their own process")

        console.print(f"starting {len(names)} participant processes and the aggregator (each loads the training "
                      "stack first, which takes a few seconds on a busy machine)")
        env_base = {**os.environ, "FEDPACT_HUB": hub.url, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        procs: dict[str, subprocess.Popen[bytes]] = {}
        logs = []
        for name in names:
            log = open(root / "logs" / f"{name}.log", "wb")
            logs.append(log)
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "fedpact", "participate", TASK, "--data", str(root / "data" / f"{name}.csv"),
                 "--model-dir", str(root / "models" / name), "--threads", "1"],
                env={**env_base, "FEDPACT_TOKEN": tokens[name], "FEDPACT_HOME": str(root / "home" / name)},
                stdout=log, stderr=subprocess.STDOUT,
            )
        if not _admit(alice, names, procs, console):
            for p in procs.values():
                p.terminate()
                p.wait(timeout=10)
            for f in logs:
                f.close()
            console.print(f"[red]the demo failed[/]: not every participant asked to join; logs are in {root / 'logs'}")
            return False
        log = open(root / "logs" / "alice-aggregator.log", "wb")
        logs.append(log)
        procs["aggregator"] = subprocess.Popen(
            [sys.executable, "-m", "fedpact", "aggregate", TASK, "--eval-data", str(root / "data" / "test.csv")],
            env={**env_base, "FEDPACT_TOKEN": tokens["alice"], "FEDPACT_HOME": str(root / "home" / "alice")},
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            ok = _follow(alice, procs, console, rounds)
            for name in names:
                try:
                    procs[name].wait(timeout=30 if ok else 0.1)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
            for p in procs.values():
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
            for f in logs:
                f.close()
        if not ok:
            console.print(f"[red]the demo failed[/]; logs are in {root / 'logs'}")
            return False
        model = alice.list_models(TASK)[-1]
        path = alice.download_model(model["id"], root / "model.safetensors")
        alice.close()
    trained = load_model(path)
    acc = trained.evaluate(test.x, test.y)["accuracy"]
    console.print(f"model {model['id']} stored on the hub (sha256 {model['sha256'][:16]}...), "
                  f"contributors: {', '.join(model['contributors'])}")
    console.print(f"downloaded to {path}; accuracy on the {len(test)} held-out digits: [bold]{acc:.4f}[/]")
    console.print(f"each participant received it too: {root / 'models'}/<name>/")
    console.print(f"done in {time.monotonic() - t0:.1f} s")
    return True


def _follow(alice: HubClient, procs: dict[str, subprocess.Popen[bytes]], console: Console, rounds: int) -> bool:
    """Print each round as the hub records it, until the aggregator exits."""
    shown: set[int] = set()
    reported: set[str] = set()
    joined: list[str] = []
    expected = len(procs) - 1
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if not shown and len(joined) < expected:
            now = list(alice.get_task(TASK).get("participants", []))
            if now != joined:
                joined = now
                console.print(f"participants connected: {len(joined)}/{expected} ({', '.join(joined)})")
        for r in alice.list_rounds(TASK):
            if r["status"] == "complete" and r["number"] not in shown:
                shown.add(r["number"])
                mt = r["metrics"]
                console.print(
                    f"round {r['number']}/{rounds}: test accuracy {mt.get('eval_accuracy', float('nan')):.4f}  "
                    f"train loss {mt.get('train_loss', float('nan')):.4f}  ({int(mt.get('participants', 0))} participants, "
                    f"{mt.get('seconds', 0):.2f} s)"
                )
        agg = procs["aggregator"].poll()
        if agg is not None:
            return agg == 0 and alice.get_task(TASK)["status"] == "COMPLETE"
        for name, p in procs.items():
            if p.poll() not in (None, 0) and name not in reported:
                reported.add(name)
                console.print(f"[yellow]{name}'s process exited early (code {p.returncode}); see its log[/]")
        time.sleep(0.3)
    return False
