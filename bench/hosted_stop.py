"""How long a stop of a hosted aggregator takes, asked of the replica that runs it or of another one.

Two hub replicas (OS processes, each with its own data directory) on one PostgreSQL
database; the aggregator always runs on replica A. Each sample starts it through A, waits
until it is waiting for its quorum, then times ``DELETE /tasks/{task}/aggregator`` (200:
the stop is recorded) sent to A (the owner stops it itself), to B with RabbitMQ between
the replicas (B records the request and wakes A through the broker), and to B without a
broker (A finds the request by its once-a-second check). Every figure includes the
aggregator process's own exit after SIGTERM.

    .venv/bin/python bench/hosted_stop.py [--samples 5]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and RabbitMQ on 127.0.0.1:5672 (guest).
It creates and drops its own databases.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_facts, print_machine, stats, table, write_result

from fedpact.hub.config import HubConfig
from fedpact.hub.server import HubProcess

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BROKER = "amqp://guest:guest@127.0.0.1:5672/"
PASSWORD = "bench-password-1"


def _wait(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the aggregator did not start")
        time.sleep(0.1)


def _measure(url: str, broker: str | None, samples: int, modes: list[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"database_url": url, "broker_url": broker, "password_time_cost": 1, "password_memory_kib": 8192}
        with HubProcess(config=HubConfig(data_dir=Path(tmp) / "a", **cfg)) as hub_a, \
                HubProcess(config=HubConfig(data_dir=Path(tmp) / "b", **cfg)) as hub_b:
            time.sleep(2)  # both replicas connect to the broker
            a = httpx.Client(base_url=f"{hub_a.url}/api/v1", timeout=90)
            b = httpx.Client(base_url=f"{hub_b.url}/api/v1", timeout=90)
            a.post("/users", json={"name": "alice", "password": PASSWORD, "organisation": "Bench"})
            token = a.post("/auth/login", json={"name": "alice", "password": PASSWORD}).json()["token"]
            for c in (a, b):
                c.headers["Authorization"] = f"Bearer {token}"
            task = a.post("/tasks", json={"name": "stops", "definition": {
                "model": {"name": "softmax_regression"}, "rounds": 1, "quorum": 2, "admission": "open",
                "data": {"kind": "tabular", "features": 4, "classes": [0, 1]}}}).json()["name"]
            for _ in range(samples):
                for mode in modes:
                    r = a.post(f"/tasks/{task}/aggregator", json={})
                    assert r.status_code == 202, r.text
                    _wait(lambda: "waiting for participants" in b.get(f"/tasks/{task}/aggregator/log").json()["text"]
                          .rsplit("starting:", 1)[-1], 60)
                    via = a if mode == "owner" else b
                    t0 = time.perf_counter()
                    r = via.delete(f"/tasks/{task}/aggregator")
                    out[mode].append(time.perf_counter() - t0)
                    assert r.status_code == 200 and r.json()["state"] == "stopped", r.text
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=5)
    args = p.parse_args()
    facts = machine_facts()
    results: dict[str, list[float]] = {}
    for broker, modes in ((BROKER, ["owner", "other replica, broker"]), (None, ["other replica, no broker"])):
        db = f"fedpact_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{db}"')
        try:
            results.update(_measure(f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}", broker, args.samples, modes))
        finally:
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    print_machine(facts)
    rows = []
    for mode, values in results.items():
        s = stats(values)
        rows.append([mode, len(values), f"{s['median']:.2f}", f"{s['min']:.2f}", f"{s['max']:.2f}"])
    print(table(["DELETE sent to", "samples", "median s", "min s", "max s"], rows))
    facts["loadavg_at_end"] = list(os.getloadavg())
    write_result("hosted_stop", {"machine": facts, "seconds": results,
                                 "stats": {m: stats(v) for m, v in results.items()}})


if __name__ == "__main__":
    main()
