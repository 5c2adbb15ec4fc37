"""Shared by the benchmark scripts: machine facts, statistics, table printing, result files.

Not a test helper and not part of the package: the scripts import it as a sibling module
(``python bench/<script>.py`` puts ``bench/`` first on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Environment variables that change which OpenBLAS kernel runs or how it blocks.
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "sse4", "fma")))
    except OSError:
        pass
    return []


def _caches() -> dict[str, str]:
    out: dict[str, str] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")):
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        out[f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''}"] = size
    return out


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _versions() -> dict[str, str | None]:
    import numpy

    v: dict[str, str | None] = {"python": sys.version.split()[0], "numpy": numpy.__version__}
    for mod in ("scipy", "torch", "fedpact", "httpx", "uvicorn", "safetensors"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is a fact, not an error
            v[mod] = None
    return v


def blas_info() -> list[dict[str, Any]]:
    """What threadpoolctl reports for every BLAS/OpenMP library loaded so far."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads", "threading_layer", "filepath")
    return [{k: lib.get(k) for k in keep} for lib in threadpool_info()]


def machine_facts() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "cpu_simd_flags": _cpu_flags(),
        "caches": _caches(),
        "mem_total_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "loadavg_at_start": load,
        "versions": _versions(),
        "blas_env": {k: os.environ.get(k) for k in BLAS_ENV},
    }


def stats(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "min": min(samples),
        "median": statistics.median(samples),
        "mean": statistics.fmean(samples),
        "max": max(samples),
        "stdev": statistics.stdev(samples) if len(samples) > 1 else 0.0,
    }


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def print_machine(facts: dict[str, Any]) -> None:
    v = facts["versions"]
    print(f"machine: {facts['nproc']} CPUs ({facts['cpu_model']}), {facts['mem_total_gib']} GiB, "
          f"caches {facts['caches']}, load {facts['loadavg_at_start']}")
    print(f"versions: python {v['python']}, numpy {v['numpy']}, scipy {v['scipy']}, torch {v['torch']}, "
          f"fedpact {v['fedpact']}")
    print(f"BLAS env: {facts['blas_env']}")


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>-<UTC timestamp>.json``.

    One file per run and no ``-latest`` copy: docs/benchmarks.md cites runs by their
    timestamped name, and a copy would only duplicate one of them.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, indent=2, sort_keys=False, default=str)
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(text + "\n")
    return path


HAPROXY_CFG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"


def start_haproxy(hub_ports: list[int], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """haproxy with the shipped deploy/haproxy.cfg in front of hubs on 127.0.0.1; its process
    and address once it routes to them. The config names three servers: with fewer hubs the
    list wraps around (two hubs: the third server line names the first again)."""
    import httpx

    from fedpact.hub.server import free_port

    port = free_port()
    env = {**os.environ, "FEDPACT_LB_BIND": f"127.0.0.1:{port}"}
    for i in range(3):
        env[f"FEDPACT_HUB{i + 1}"] = f"127.0.0.1:{hub_ports[i % len(hub_ports)]}"
    with open(log, "wb") as out:
        lb = subprocess.Popen(["haproxy", "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return lb, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or lb.poll() is not None:
            lb.kill()
            lb.wait()
            raise RuntimeError(f"haproxy at {url} did not route to the hubs within 30 s; see {log}")
        time.sleep(0.2)
