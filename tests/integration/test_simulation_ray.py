"""A simulation on a real local Ray cluster: a head node and a worker node, started here on
127.0.0.1 with free ports, and stopped at the end (only the processes this test started)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from federation_helpers import digits_definition

from fedpact.simulation import simulate

RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def node_ports() -> list[str]:
    names = ["--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
             "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port"]
    ports = free_ports(len(names))
    lo = free_ports(1)[0]
    # Worker ports: a small range above a free port (Ray needs a range; collisions are retried by Ray).
    out = [f"{n}={p}" for n, p in zip(names, ports)]
    return [*out, f"--min-worker-port={lo}", f"--max-worker-port={lo + 40}"]


def start(args: list[str], tmp: Path, name: str) -> subprocess.Popen[bytes]:
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", "--num-cpus=1", *args],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group this test created (ray start --block and the daemons it spawned)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, f"ray start exited: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the Ray head did not listen on {port}: {log.read_text()[-3000:]}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[str]:
    import ray

    temp = Path("/tmp") / f"fpray{os.getpid()}"  # Ray's socket paths must stay short
    gcs = free_ports(1)[0]
    address = f"127.0.0.1:{gcs}"
    head = start(["--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--include-dashboard=false",
                  f"--temp-dir={temp}", *node_ports()], tmp_path, "head")
    worker = None
    try:
        wait_for_port(gcs, head, tmp_path / "head.log")
        ray.init(address=address, include_dashboard=False, log_to_driver=False)  # waits for the head
        worker = start([f"--address={address}", "--node-ip-address=127.0.0.1", *node_ports()], tmp_path, "worker")
        deadline = time.monotonic() + 120
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        yield address
    finally:
        ray.shutdown()
        for proc in (worker, head):
            if proc is not None:
                stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_a_simulation_runs_on_a_two_node_ray_cluster_like_on_the_process_pool(ray_cluster: str) -> None:
    import ray

    kw = dict(partition="dirichlet:0.5", seed=3, rounds=2, fraction=0.5, progress=False)
    on_ray = simulate(digits_definition(), 20, backend="ray", ray_address=ray_cluster, **kw)
    assert ray.cluster_resources().get("CPU") == 2.0
    local = simulate(digits_definition(), 20, backend="inline", **kw)
    assert on_ray.status == "COMPLETE" and (on_ray.history["participants"] == 10).all()
    # The cluster ran the same training on the same partitions: the same model as in-process.
    for k in local.weights:
        assert (on_ray.weights[k] == local.weights[k]).all()
