"""What moving one 4 MB model costs, piece by piece: the two findings behind section (k).

1. **Receiving a body with glibc's default allocator.** A bare ASGI app under uvicorn
   (httptools, uvloop; no fedpact code) that reads a 4 MB request body and discards it,
   as its own process, with and without ``fedpact.common.allocator.keep_freed_memory()``
   called first. Server CPU per request from /proc.
2. **Downloading a model on the client.** A real hub process holds a 4 MB safetensors
   blob; one client downloads it repeatedly (a) through httpx, reading the stream as the
   client did before (``iter_bytes``, no hashing, no decoding: the transport alone) and
   (b) through ``HubClient.download_tensors`` (urllib3, ``readinto`` the arrays, sha256
   checked). Client CPU (this process) and hub CPU per download.

    .venv/bin/python bench/byte_paths.py
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_facts, print_machine, table, write_result  # noqa: E402

SIZE = 4_000_000
TCK = os.sysconf("SC_CLK_TCK")

BARE_APP = textwrap.dedent('''
    import sys
    if sys.argv[1] == "tuned":
        from fedpact.common.allocator import keep_freed_memory
        assert keep_freed_memory(), "the allocator could not be tuned here"
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False,
                http="httptools", loop="uvloop")
''')


def cpu_of(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bare_receive(mode: str, n: int) -> dict[str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    proc = subprocess.Popen([sys.executable, "-c", BARE_APP, mode, str(port)], env=env)
    try:
        conn = None
        deadline = time.monotonic() + 30
        while conn is None:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port)
                c.request("GET", "/")
                c.getresponse().read()
                conn = c
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        body = os.urandom(SIZE)

        def post() -> None:
            conn.request("POST", "/", body=body)
            conn.getresponse().read()

        for _ in range(5):
            post()
        c0, t0 = cpu_of(proc.pid), time.perf_counter()
        for _ in range(n):
            post()
        return {"server_cpu_ms": 1e3 * (cpu_of(proc.pid) - c0) / n, "wall_ms": 1e3 * (time.perf_counter() - t0) / n}
    finally:
        proc.terminate()
        proc.wait(10)


def downloads(n: int) -> dict[str, dict[str, float]]:
    from fedpact.client.hub import HubClient
    from fedpact.common.tensors import encode_parts
    from fedpact.hub.config import HubConfig
    from fedpact.hub.server import HubProcess

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        hub = HubProcess(config=HubConfig(data_dir=Path(tmp) / "hub"))
        hub.start()
        try:
            c = HubClient(hub.url)
            c.register("alice", "bench-password-1", "Bench")
            c.login("alice", "bench-password-1")
            c.create_task("byte-paths", {"model": {"name": "softmax_regression"}, "algorithm": {"name": "fedavg"},
                                         "rounds": 1, "admission": "open",
                                         "data": {"kind": "tabular", "features": 99_999, "label": "label",
                                                  "classes": list(range(10))}})  # fmt: skip
            weights = {"weight": np.ones((10, 99_999), np.float32), "bias": np.zeros(10, np.float32)}
            ref = c.upload_blob("byte-paths", encode_parts(weights))
            path = f"/tasks/byte-paths/blobs/{ref['sha256']}"

            def via_httpx() -> None:
                with c._http.stream("GET", path, headers=c._headers()) as r:
                    for _ in r.iter_bytes():
                        pass

            def via_bulk() -> None:
                c.download_tensors("byte-paths", ref["sha256"], ref["size"])

            # The same call through httpx, as before client/bulk.py: the client takes that path
            # for URLs a proxy applies to (httpx, created without proxies here, connects directly).
            hx = HubClient(hub.url, c.token)
            hx._proxies = {"http": "http://proxy.invalid:3128"}

            def via_httpx_tensors() -> None:
                hx.download_tensors("byte-paths", ref["sha256"], ref["size"])

            for name, fn in (("httpx stream, transport only", via_httpx),
                             ("download_tensors through httpx (sha256 + decode), as before", via_httpx_tensors),
                             ("download_tensors, urllib3 readinto (sha256 + decode), now", via_bulk)):  # fmt: skip
                for _ in range(5):
                    fn()
                h0, p0, t0 = cpu_of(hub.pid), time.process_time(), time.perf_counter()
                for _ in range(n):
                    fn()
                out[name] = {"client_cpu_ms": 1e3 * (time.process_time() - p0) / n,
                             "hub_cpu_ms": 1e3 * (cpu_of(hub.pid) - h0) / n,
                             "wall_ms": 1e3 * (time.perf_counter() - t0) / n}  # fmt: skip
            c.close()
            hx.close()
        finally:
            hub.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="requests per measurement")
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    facts = machine_facts()
    print_machine(facts)
    runs = [(mode, bare_receive(mode, a.n)) for mode in ("default", "tuned", "default", "tuned")]  # alternated
    rows = [[f"bare uvicorn, receive 4 MB, allocator {mode}", f"{r['server_cpu_ms']:.2f}", f"{r['wall_ms']:.2f}"]
            for mode, r in runs]  # fmt: skip
    print(table(["what", "server CPU ms per request", "wall ms"], rows))
    down = downloads(a.n)
    print(table(["4 MB download", "client CPU ms", "hub CPU ms", "wall ms"],
                [[k, f"{v['client_cpu_ms']:.2f}", f"{v['hub_cpu_ms']:.2f}", f"{v['wall_ms']:.2f}"] for k, v in down.items()]))
    path = write_result(f"byte_paths{'-' + a.tag if a.tag else ''}",
                        {"benchmark": "byte_paths", "machine": facts, "requests": a.n, "bytes": SIZE,
                         "bare_receive": [{"allocator": mode, **r} for mode, r in runs], "downloads": down})
    print(f"result written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
