"""A TCP relay to a local port for tests: counts the bytes each way, and breaks or changes the stream once.

For plain HTTP it is also a forward proxy: the hub accepts the absolute-form request line
(``GET http://host:port/path``) that a client sends to a proxy.
"""

from __future__ import annotations

import socket
import threading


class TcpRelay:
    """Relays to ``127.0.0.1:target_port``. ``cut_up_after`` / ``cut_down_after``: once that
    many bytes went that way (all connections together), the connection carrying them is
    broken, once. ``corrupt_down_at``: the byte at that offset of the downstream bytes is flipped."""

    def __init__(self, target_port: int, *, cut_up_after: int | None = None, cut_down_after: int | None = None,
                 corrupt_down_at: int | None = None) -> None:  # fmt: skip
        self.target_port = target_port
        self.limits = {True: cut_up_after, False: cut_down_after}
        self.corrupt_down_at = corrupt_down_at
        self.totals = {True: 0, False: 0}
        self.cut = False
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def up(self) -> int:
        return self.totals[True]

    @property
    def down(self) -> int:
        return self.totals[False]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while block := src.recv(256 * 1024):
                with self.lock:
                    at = self.totals[up]
                    limit = self.limits[up]
                    cut = not self.cut and limit is not None and at + len(block) > limit
                    if cut:
                        block = block[: limit - at]
                        self.cut = True
                    corrupt = self.corrupt_down_at
                    if not up and corrupt is not None and at <= corrupt < at + len(block):
                        flipped = bytearray(block)
                        flipped[corrupt - at] ^= 0xFF
                        block = bytes(flipped)
                    self.totals[up] += len(block)
                dst.sendall(block)
                if cut:
                    break
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.server.close()
