"""A burst of logins against a hub with production password hashing, and what it costs others.

Set-up: the hub runs as its own OS process (``HubProcess``) with the default argon2id
costs (64 MiB, time cost 3, parallelism 4) and the default ``hash_slots`` (the CPU count).
The bench registers one user and a task, then fires ``--burst`` concurrent logins (default
40, the figure of issue 7) from threads while a reader thread reads the task
(``GET /tasks/{task}``) in a loop. Reported: the logins' outcomes (200 or 503), the
reader's median and worst latency during the burst, and the hub process's peak resident
memory (sampled from /proc every 20 ms).

    .venv/bin/python bench/login_burst.py [--burst 40]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from fedpact.hub import HubConfig, HubProcess

PASSWORD = "bench-password-1"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--burst", type=int, default=40)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        hub = HubProcess(config=HubConfig(data_dir=Path(d) / "hub")).start()
        try:
            api = f"{hub.url}/api/v1"
            with httpx.Client(base_url=api, timeout=120) as c:
                assert c.post("/users", json={"name": "alice", "password": PASSWORD, "organisation": "o"}).status_code == 201
                token = c.post("/auth/login", json={"name": "alice", "password": PASSWORD}).json()["token"]
                task = {"name": "bench-task", "definition": {"model": {"name": "softmax_regression"},
                        "data": {"kind": "tabular", "features": 4, "classes": [0, 1]}}}  # fmt: skip
                assert c.post("/tasks", json=task, headers={"Authorization": f"Bearer {token}"}).status_code == 201
            base_rss = rss_mib(hub.pid or 0)
            peak = [base_rss]
            done = threading.Event()
            latencies: list[float] = []
            outcomes: Counter[int] = Counter()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], rss_mib(hub.pid or 0))
                    time.sleep(0.02)

            def read() -> None:
                with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
                    while not done.is_set():
                        t = time.perf_counter()
                        assert c.get("/tasks/bench-task").status_code == 200
                        latencies.append(time.perf_counter() - t)
                        time.sleep(0.01)

            def login() -> None:
                with httpx.Client(base_url=api, timeout=120) as c:
                    outcomes[c.post("/auth/login", json={"name": "alice", "password": PASSWORD}).status_code] += 1

            helpers = [threading.Thread(target=sample), threading.Thread(target=read)]
            for t in helpers:
                t.start()
            start = time.perf_counter()
            burst = [threading.Thread(target=login) for _ in range(a.burst)]
            for t in burst:
                t.start()
            for t in burst:
                t.join()
            elapsed = time.perf_counter() - start
            done.set()
            for t in helpers:
                t.join()
        finally:
            hub.stop()
    print(f"{a.burst} concurrent logins in {elapsed:.1f} s: {dict(outcomes)}")
    print(f"task reads during the burst: {len(latencies)}, median {statistics.median(latencies) * 1000:.0f} ms, "
          f"worst {max(latencies) * 1000:.0f} ms")
    print(f"hub RSS: {base_rss:.0f} MiB before, peak {peak[0]:.0f} MiB")


if __name__ == "__main__":
    main()
