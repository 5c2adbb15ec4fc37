"""Model bytes coming down from the hub or its object store, read straight into their arrays.

httpx, which carries every other request, parses a response body in pure Python (h11)
and hands it over in 64 KiB pieces, each copied twice on the way: about 5 ms of CPU per
4 MB model on a 2-core machine, more than the hub spends serving it, and a round moves
twenty such downloads. urllib3 reads through the standard library's C-level buffered
socket, so a body can be ``readinto`` the destination (a model's own arrays, see
:meth:`fedpact.common.tensors.TensorSink.writable`): about 1 ms for the same 4 MB
(docs/benchmarks.md, section (b)).

Only downloads take this path. They are the bulk of a round's bytes on the receiving
side, and they are plain GETs, so the retry and resume logic stays in one place
(:meth:`fedpact.client.hub.HubClient._stream_to`). A URL that an environment proxy
applies to (``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` without a matching ``NO_PROXY``)
is left to httpx, which honours those variables as it always did.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

__all__ = ["BulkChannel", "BulkResponse", "Urllib3Error", "proxied"]

#: Observers of each bulk request (method, URL, headers); tests and benchmarks count traffic with them.
RequestHook = Callable[[str, str, dict[str, str]], None]
#: Observers of each answer (URL, status, Content-Length), before its body is read.
ResponseHook = Callable[[str, int, int], None]

BulkResponse = urllib3.BaseHTTPResponse


def proxied(url: str, proxies: dict[str, str]) -> bool:
    """Whether an environment proxy applies to ``url`` (httpx then carries it, as before).

    ``proxies`` is ``urllib.request.getproxies_environment()``, read once per client as
    httpx reads the environment once per client: it walks the whole environment.
    """
    parts = urlsplit(url)
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")  # NO_PROXY, as httpx reads it


class BulkChannel:
    """A pool of keep-alive connections for large GETs; safe to share between threads."""

    def __init__(self, ssl_context: ssl.SSLContext, timeout: float) -> None:
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=16,
            ssl_context=ssl_context,
            timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
            retries=False,  # the caller retries and resumes (Range), with its outage budget
        )
        self.hooks: list[RequestHook] = []
        self.response_hooks: list[ResponseHook] = []

    def get(self, url: str, headers: dict[str, str]) -> BulkResponse:
        """The response with its body unread (``readinto``/``read`` it, then ``release_conn``)."""
        for hook in self.hooks:
            hook("GET", url, headers)
        resp = self._pool.request(
            "GET", url, headers=headers, preload_content=False, decode_content=False, redirect=False
        )
        for seen in self.response_hooks:
            seen(url, resp.status, int(resp.headers.get("content-length", 0) or 0))
        return resp

    def close(self) -> None:
        self._pool.clear()
