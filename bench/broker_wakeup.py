"""Wake-up latency between two hub replicas: post on replica B, how soon does a poll on A return?

Two hub processes on one PostgreSQL database with RabbitMQ between them (the deployed
shape). A long-poll waits on A; the bench posts a message on B and measures from just
before the POST to the moment A's poll returns with it. The database re-check is set to
60 s so only a wake-up carried by the broker can return the poll in time. Goal: <= 50 ms.

    .venv/bin/python bench/broker_wakeup.py [--samples 40]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and RabbitMQ on 127.0.0.1:5672 (guest).
It creates and drops its own database.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=40)
    a = p.parse_args()
    db = f"fedpact_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
    latencies: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = HubConfig(data_dir=Path(tmp), database_url=url, broker_url=BROKER)
            with HubProcess(config=config) as hub_a, HubProcess(config=config) as hub_b:
                time.sleep(2)  # both replicas connect to the broker
                a_http = httpx.Client(base_url=f"{hub_a.url}/api/v1", timeout=90)
                b_http = httpx.Client(base_url=f"{hub_b.url}/api/v1", timeout=90)
                for name in ("alice", "bob"):
                    a_http.post("/users", json={"name": name, "password": "bench-password-1", "organisation": "Bench"})
                tok = {n: a_http.post("/auth/login", json={"name": n, "password": "bench-password-1"}).json()["token"]
                       for n in ("alice", "bob")}
                alice = {"Authorization": f"Bearer {tok['alice']}"}
                bob = {"Authorization": f"Bearer {tok['bob']}"}
                task = a_http.post("/tasks", headers=alice, json={"name": "wakeup", "definition": {
                    "model": {"name": "softmax_regression"}, "rounds": 1, "quorum": 1,
                    "data": {"kind": "tabular", "features": 4, "classes": [0, 1]}}}).json()["name"]
                assert b_http.post(f"/tasks/{task}/join", headers=bob).status_code == 200
                cursor = 0
                for _ in range(a.samples):
                    done: dict[str, float] = {}

                    def poll(after: int, done: dict[str, float]) -> None:
                        r = a_http.get(f"/tasks/{task}/mailbox/aggregator", headers=alice,
                                       params={"after": after, "wait": 60})
                        done["t"] = time.perf_counter()
                        done["cursor"] = r.json()["cursor"]

                    t = threading.Thread(target=poll, args=(cursor, done))
                    t.start()
                    time.sleep(0.3)  # the poll is waiting on A
                    t0 = time.perf_counter()
                    r = b_http.post(f"/tasks/{task}/messages", headers=bob,
                                    json={"sender": "participant/bob", "recipient": "aggregator", "kind": "ping"})
                    assert r.status_code == 201, r.text
                    t.join()
                    latencies.append((done["t"] - t0) * 1000)
                    cursor = int(done["cursor"])
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    facts = machine_facts()
    print_machine(facts)
    s = stats(latencies)
    print(table(["samples", "median ms", "p90 ms", "max ms"],
                [[len(latencies), f"{s['median']:.1f}", f"{sorted(latencies)[int(0.9 * len(latencies)) - 1]:.1f}",
                  f"{max(latencies):.1f}"]]))
    print("(each from just before the POST on B to the return of the poll on A, including the POST itself)")
    write_result("broker_wakeup", {"machine": facts, "latency_ms": latencies, "stats": s})


if __name__ == "__main__":
    main()
