"""Running a hub: in the foreground, in a background thread, or as a child process.

``EmbeddedHub`` is what the SDK, notebooks and tests use when nobody runs a hub: it lives
in the caller's process and dies with it. ``HubProcess`` runs the same hub as a separate
OS process, so it can be stopped, killed and restarted on the same data directory, which
is how restarts and crashes are tested.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx
import uvicorn
from fastapi import FastAPI

from fedpact.common.allocator import keep_freed_memory
from fedpact.hub.app import create_app
from fedpact.hub.config import SETTINGS, HubConfig
from fedpact.hub.logs import uvicorn_log_config
from fedpact.hub.protocol import lean_protocol

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
START_TIMEOUT_S = 30.0
GRACEFUL_SHUTDOWN_S = 3


def serve(config: HubConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Run the hub in the foreground until interrupted (Ctrl-C or SIGTERM)."""
    keep_freed_memory()  # the hub's own process: every body it receives reuses freed memory
    log_config = uvicorn_log_config(config.json_logs)
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level="info",
        http=lean_protocol(),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        ssl_certfile=_path(config.tls_cert),
        ssl_keyfile=_path(config.tls_key),
        log_config=log_config if log_config is not None else uvicorn.config.LOGGING_CONFIG,
    )


def _path(p: Path | None) -> str | None:
    return None if p is None else str(p)


def _wait_healthy(url: str, alive: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    # Only asks whether the port answers and sends no credentials, so it need not verify
    # the hub's certificate (which may be signed by a CA this process was not told about).
    with httpx.Client(timeout=2.0, verify=False) as client:
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError(f"{what} stopped while starting")
            try:
                if client.get(f"{url}/api/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer {url}/api/v1/health within {timeout:.0f} s")


def _resolve_config(data_dir: str | Path | None, config: HubConfig | None) -> HubConfig:
    if config is None:
        if data_dir is None:
            raise ValueError("give a data_dir or a HubConfig")
        return HubConfig(data_dir=Path(data_dir))
    if data_dir is not None and Path(data_dir).expanduser().resolve() != config.data_dir:
        raise ValueError(f"data_dir {data_dir} differs from config.data_dir {config.data_dir}; give only one")
    return config


class EmbeddedHub:
    """A hub served by uvicorn in a background thread of this process, on a free local port."""

    def __init__(self, data_dir: str | Path | None = None, config: HubConfig | None = None) -> None:
        self.config = _resolve_config(data_dir, config)
        self.url = ""
        #: The local port it serves on, once started (as ``HubProcess.port``).
        self.port = 0
        self.app: FastAPI | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    def start(self) -> EmbeddedHub:
        if self._thread is not None:
            return self
        keep_freed_memory()  # the caller's process now receives and sends models (see allocator.py)
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say they
        # are TCP, and without it every keep-alive response stalls 40 ms on Nagle + delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((DEFAULT_HOST, 0))
        port = sock.getsockname()[1]
        self.app = create_app(self.config)
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_level="warning",
                access_log=False,
                http=lean_protocol(),
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                ssl_certfile=_path(self.config.tls_cert),
                ssl_keyfile=_path(self.config.tls_key),
            )
        )
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"fedpact-hub-{port}", daemon=True
        )
        self._server, self._thread, self._sock = server, thread, sock
        self.port = port
        self.url = f"{self.config.scheme}://{DEFAULT_HOST}:{port}"
        thread.start()
        try:
            _wait_healthy(self.url, thread.is_alive, START_TIMEOUT_S, "the embedded hub")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread; safe to call twice."""
        server, thread, sock = self._server, self._thread, self._sock
        self._server = self._thread = self._sock = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=GRACEFUL_SHUTDOWN_S + 10)
        if sock is not None:
            sock.close()

    def __enter__(self) -> EmbeddedHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((DEFAULT_HOST, 0))
        return int(s.getsockname()[1])


class HubProcess:
    """A hub running as its own OS process (``python -m fedpact.hub``); its output goes to ``hub.log``."""

    def __init__(
        self, data_dir: str | Path | None = None, config: HubConfig | None = None, port: int | None = None
    ) -> None:
        self.config = _resolve_config(data_dir, config)
        self.port = port or free_port()
        self.url = f"{self.config.scheme}://{DEFAULT_HOST}:{self.port}"
        self.log_path = self.config.data_dir / "hub.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _argv(self) -> list[str]:
        c = self.config
        argv = [
            sys.executable, "-m", "fedpact.hub",
            "--data-dir", str(c.data_dir),
            "--host", DEFAULT_HOST,
            "--port", str(self.port),
        ]  # fmt: skip
        for name in SETTINGS:
            value = getattr(c, name)
            if isinstance(value, bool):
                if value:
                    argv += ["--" + name.replace("_", "-")]
            elif value is not None:
                argv += ["--" + name.replace("_", "-"), str(value)]
        return argv

    def start(self) -> HubProcess:
        if self._proc is not None:
            return self
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        proc = self._proc
        try:
            _wait_healthy(self.url, lambda: proc.poll() is None, START_TIMEOUT_S, "the hub process")
        except RuntimeError as e:
            self.kill()
            raise RuntimeError(f"{e}; its log:\n{self._log_tail()}") from None
        return self

    def _log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then wait (SIGKILL if it does not exit in ``timeout``); returns the exit code.

        uvicorn finishes in-flight requests, then re-raises SIGTERM, so a clean stop
        usually reports ``-SIGTERM`` rather than 0.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def kill(self) -> int | None:
        """SIGKILL, as a crash would; returns the exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        return proc.wait()

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
