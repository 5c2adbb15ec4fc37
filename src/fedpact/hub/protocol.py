"""The HTTP protocol the hub serves with: uvicorn's httptools protocol, minus two copies
of every request body.

uvicorn appends each piece of a body the socket delivers to a ``bytearray`` and hands the
application ``bytes(that bytearray)``: two copies of every byte, made in the event loop
with the GIL held. A participant's 4 MB update arrives as a few dozen pieces, and the hub
spends about a millisecond per update copying. Here a piece that finds nothing waiting is
kept as the ``bytes`` object the parser made, and ``bytes()`` of a ``bytes`` object is that
object: the application gets the piece itself. Pieces that pile up (the application not
reading yet) are joined as uvicorn joins them. Flow control is uvicorn's.

It depends on two attributes of uvicorn's request cycle (``body``, which ``receive()``
passes through ``bytes()`` and then resets, and ``message_event``); ``lean_protocol()``
falls back to uvicorn's own protocol when they are not what this expects, and the hub's
tests run every upload through it.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def lean_protocol() -> type[Any] | str:
    """The protocol class to give ``uvicorn.Config(http=...)``, or "auto" to let uvicorn choose."""
    try:
        from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    except ImportError:  # no httptools: uvicorn falls back to h11, which this does not touch
        return "auto"
    if not _cycle_keeps_body_as_expected(RequestResponseCycle):
        log.warning("uvicorn's request cycle is not what fedpact.hub.protocol expects; serving with uvicorn's own")
        return "auto"

    class LeanHttpToolsProtocol(HttpToolsProtocol):
        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
                return
            if not cycle.body:
                # Handed over as it is: receive() calls bytes() on it (uvicorn types it bytearray).
                cycle.body = body  # type: ignore[assignment]
            elif isinstance(cycle.body, bytes):
                cycle.body = bytearray(cycle.body) + body  # pieces piling up: joined, as uvicorn does
            else:
                cycle.body += body
            if len(cycle.body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            cycle.message_event.set()

    return LeanHttpToolsProtocol


def _cycle_keeps_body_as_expected(cycle: type[Any]) -> bool:
    import inspect

    try:
        receive = inspect.getsource(cycle.receive)
        init = inspect.getsource(cycle.__init__)
    except (OSError, TypeError):
        return False
    return '"body": bytes(self.body)' in receive and "self.body = bytearray()" in receive and "self.body = bytearray()" in init
