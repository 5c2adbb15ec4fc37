"""HTTP client for the hub's `/api/v1`.

One class, one method per route, so the SDK, the CLI and the runtime share a single,
tested way of talking to a hub. Transient connection failures (a hub restarting, a
dropped connection) are retried: every request the client sends is safe to repeat,
because reads are reads, uploads carry their offset and messages carry an idempotency key.

Two budgets, because the two failures mean different things. Before the first answer a
refused connection is almost always a wrong URL or a hub that is not started, so the
client gives up after ``first_contact_s`` (3 s) with a message that says so. Once the hub
has answered, silence means it is restarting: a participant or aggregator then waits up to
``retry_for_s`` (10 minutes by default, ``$FEDPACT_OUTAGE_TOLERANCE_S``) and says once that
it is retrying, so an operator's restart does not kill every data owner's process.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import os
import random
import re
import ssl
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Self, cast

import httpx

from fedpact.client.bulk import BulkChannel, BulkResponse, Urllib3Error, proxied
from fedpact.client.localblobs import LocalBlobs, on_this_machine
from fedpact.common import checksums
from fedpact.common.errors import FedpactError
from fedpact.common.tensors import Payload, TensorSink, Weights

API = "/api/v1"
#: A task blob's download path: the only downloads a local blob directory can serve.
_TASK_BLOB_PATH = re.compile(r"^/tasks/([^/]+)/blobs/[0-9a-f]{64}$")
#: Payloads above this size travel as blobs rather than inline in the message.
INLINE_LIMIT = 256 * 1024
CHUNK_SIZE = 8 * 1024 * 1024
#: In-memory payloads up to this size go in one request (resent whole if it fails);
#: larger ones and files use the chunked, resumable upload.
ONE_SHOT_LIMIT = 32 * 1024 * 1024
#: From this size an in-memory payload goes through an upload session, so that a hub whose
#: blob store presigns has its bytes go straight into the object store, never through the
#: hub's process; smaller ones are not worth the extra round trips and go in one request.
#: (The hub makes every session direct when its store presigns, whatever the size.)
PRESIGNED_MIN_BYTES = 8 * 1024 * 1024

ProgressFn = Callable[[int, int], None]
NoticeFn = Callable[[str], None]
#: How long a client that has reached the hub keeps retrying through an outage.
DEFAULT_OUTAGE_TOLERANCE_S = 600.0
#: How long the very first request retries a refused connection before blaming the URL.
FIRST_CONTACT_S = 3.0


def outage_tolerance_s() -> float:
    """``$FEDPACT_OUTAGE_TOLERANCE_S`` or 10 minutes: a setting, so tests and operators can change it."""
    raw = os.environ.get("FEDPACT_OUTAGE_TOLERANCE_S")
    if not raw:
        return DEFAULT_OUTAGE_TOLERANCE_S
    try:
        value = float(raw)
    except ValueError:
        raise FedpactError(f"FEDPACT_OUTAGE_TOLERANCE_S must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise FedpactError(f"FEDPACT_OUTAGE_TOLERANCE_S must be >= 0, got {raw!r}")
    return value


def normalise_hub_url(url: str) -> str:
    """The hub's base URL from what a user typed: ``host:port`` gains ``http://``, a pasted
    ``.../api/v1`` loses its suffix (the client adds it), trailing slashes go."""
    url = url.strip()
    if not url:
        raise FedpactError("the hub URL is empty; set --hub or FEDPACT_HUB (e.g. http://127.0.0.1:8470)")
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    if url.endswith(API):
        url = url[: -len(API)].rstrip("/")
    return url


def _stderr_notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class HubError(FedpactError):
    """The hub refused a request; ``status`` is the HTTP status, ``detail`` its reason."""

    def __init__(self, status: int, detail: Any, method: str = "", path: str = ""):
        self.status = status
        self.detail = detail
        super().__init__(f"{_format_detail(detail)} (HTTP {status} on {method} {path})".strip())


class BlobGone(HubError):
    """A download found no blob (HTTP 404): the task no longer holds it, or never did.

    A hub reclaims a running task's finished rounds as new rounds open (``hub.blobgc``),
    so a reader that comes to a finished round's message late finds its body gone; the
    runtime skips such a message instead of failing.
    """


class HubUnreachable(FedpactError):
    """No connection to the hub could be made within the retry window.

    ``budget_s`` is the retry window that applied and ``waited_s`` the back-off actually
    slept, so callers (and tests) can tell a first-contact failure from an outage.
    """

    def __init__(self, message: str, *, budget_s: float = 0.0, waited_s: float = 0.0) -> None:
        super().__init__(message)
        self.budget_s = budget_s
        self.waited_s = waited_s


class HubCertificateError(HubUnreachable):
    """The hub's TLS certificate failed verification; retrying cannot help, so it is not retried."""


#: Where clients look for the CA that signed the hub's certificate (besides --ca-file).
CA_ENV = "FEDPACT_CA"


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    # One context per CA file: building one costs tens of milliseconds, and contexts are
    # safe to share between clients and threads.
    return ssl.create_default_context(cafile=ca_file)


def tls_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """Verification against ``ca_file``, else $FEDPACT_CA, else the system's trusted CAs."""
    chosen = str(ca_file) if ca_file else os.environ.get(CA_ENV) or None
    if chosen is not None and not Path(chosen).is_file():
        source = "--ca-file" if ca_file else f"${CA_ENV}"
        raise FedpactError(
            f"the CA file {chosen} ({source}) does not exist; give the PEM file of the CA that signed the hub's certificate"
        )
    return _tls_context(chosen)


def _certificate_problem(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen)
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _hub_was_there(exc: httpx.TransportError, has_token: bool) -> bool:
    """Whether a failed request reached a listening hub (it timed out or was cut after connecting).

    A refused or unroutable connection says nothing is listening at the URL; a read that
    timed out, or a connection the hub closed mid-answer, means it is there but busy. A
    connection that timed out is ambiguous (a black-holed address, or a load balancer too
    busy to accept); a client holding a token got it from this hub, so for it that too is
    a busy hub, not a wrong URL.
    """
    if isinstance(exc, httpx.ConnectTimeout):
        return has_token
    return not isinstance(exc, (httpx.ConnectError, httpx.UnsupportedProtocol))


def _format_detail(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body",))
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _error(status: int, body: bytes, method: str, path: str, reason: str = "") -> HubError:
    """The hub's refusal as a :class:`HubError`, with its JSON ``detail`` where it gave one."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body)
        detail = parsed.get("detail", text) if isinstance(parsed, dict) else text
    except ValueError:
        detail = text or reason
    return HubError(status, detail, method, path)


#: Bytes a download reads at a time: large enough that a model arrives in a few reads,
#: small enough that progress moves and the hash keeps pace with the socket.
DOWNLOAD_PIECE = 1024 * 1024


class _Download:
    """One download response, whichever library carries it."""

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        self.status = status
        self.location: str | None = headers.get("location")
        self.length = int(headers.get("content-length", 0) or 0)
        #: The checksum of the hub's verified copy, when it sent one (common/checksums.py).
        self.checksum = checksums.parse(headers.get(checksums.HEADER))

    def read_error(self) -> bytes:
        raise NotImplementedError

    def fill(self, sink: BinaryIO | TensorSink, h: Any) -> Iterator[int]:
        """Move the body into ``sink`` and ``h`` (a hash), yielding each piece's size."""
        raise NotImplementedError


class _BulkDownload(_Download):
    def __init__(self, resp: BulkResponse) -> None:
        super().__init__(resp.status, resp.headers)
        self._resp = resp

    def read_error(self) -> bytes:
        return self._resp.read()

    def fill(self, sink: BinaryIO | TensorSink, h: Any) -> Iterator[int]:
        return _fill(self._resp, sink, h)


def _fill(reader: Any, sink: BinaryIO | TensorSink, h: Any) -> Iterator[int]:
    """Read ``reader`` (a response or a file) into ``sink`` and ``h``, yielding each piece's size."""
    tensors = sink if isinstance(sink, TensorSink) else None
    while True:
        view = tensors.writable(DOWNLOAD_PIECE) if tensors is not None else None
        if view is not None:
            n = reader.readinto(view)
            if not n:
                return
            h.update(view[:n])
            cast(TensorSink, tensors).wrote(n)
        else:
            # The safetensors header (then the arrays, read into above), or a plain sink.
            chunk = reader.read(64 * 1024 if tensors is not None else DOWNLOAD_PIECE)
            if not chunk:
                return
            sink.write(chunk)
            h.update(chunk)
            n = len(chunk)
        yield n


class _HttpxDownload(_Download):
    def __init__(self, resp: httpx.Response) -> None:
        super().__init__(resp.status_code, resp.headers)
        self._resp = resp

    def read_error(self) -> bytes:
        return self._resp.read()

    def fill(self, sink: BinaryIO | TensorSink, h: Any) -> Iterator[int]:
        for chunk in self._resp.iter_bytes():  # as read (no re-chunking copy)
            sink.write(chunk)
            h.update(chunk)
            yield len(chunk)


def blob_ref(sha256: str, size: int) -> dict[str, Any]:
    return {"sha256": sha256, "size": size}


class HubClient:
    """A connection to one hub, as one user (after ``login`` or with a token)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retry_for_s: float | None = None,
        first_contact_s: float = FIRST_CONTACT_S,
        on_notice: NoticeFn | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        self.url = normalise_hub_url(url)
        self.token = token
        self._settings: dict[str, Any] = {"timeout": timeout, "retry_for_s": retry_for_s,
                                          "first_contact_s": first_contact_s, "on_notice": on_notice, "ca_file": ca_file}
        self.retry_for_s = outage_tolerance_s() if retry_for_s is None else retry_for_s
        self.first_contact_s = min(first_contact_s, self.retry_for_s)
        self.on_notice: NoticeFn = on_notice or _stderr_notice
        self._contacted = False
        self._http = httpx.Client(
            base_url=self.url + API, timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), verify=tls_context(ca_file)
        )
        # For presigned object-store URLs: no base URL, and never the hub's bearer token.
        self._direct = httpx.Client(timeout=timeout, verify=tls_context(ca_file))
        #: Downloads (models, updates): read into their arrays, from the hub or a presigned URL.
        self._bulk = BulkChannel(tls_context(ca_file), timeout)
        self._proxies = urllib.request.getproxies_environment()
        self.user: dict[str, Any] | None = None
        #: Whether the hub's blob store takes uploads directly (learnt from the first upload it starts).
        self.store_presigns: bool | None = None
        #: Tasks whose blobs this client reads from the hub's directory when it can
        #: (:meth:`read_blobs_locally`).
        self.local_blob_tasks: set[str] = set()
        self._local: LocalBlobs | None = None
        self._local_asked = False
        self._local_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()
        self._direct.close()
        self._bulk.close()

    def twin(self) -> HubClient:
        """Another client to the same hub as the same user, with its own connections.

        For a request that runs in a background thread and must be cut short by closing
        its client (the aggregator's read-ahead poll) without closing this one.
        """
        twin = HubClient(self.url, self.token, **self._settings)
        twin._contacted = self._contacted
        twin.user = self.user
        twin.store_presigns = self.store_presigns
        twin.local_blob_tasks, twin._local, twin._local_asked = set(self.local_blob_tasks), self._local, self._local_asked
        return twin

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if extra:
            h.update(extra)
        return h

    def _budget(self) -> float:
        return self.retry_for_s if self._contacted else self.first_contact_s

    def unreachable(self, exc: BaseException, waited_s: float) -> HubUnreachable:
        """The error for a hub that did not answer within the budget that applies now."""
        if not self._contacted:
            return HubUnreachable(
                f"cannot reach the hub at {self.url} ({exc.__class__.__name__}): is the hub running at "
                f"{self.url}? set --hub or FEDPACT_HUB",
                budget_s=self._budget(), waited_s=waited_s,
            )
        return HubUnreachable(
            f"the hub at {self.url} has been unreachable for {waited_s:.0f} s ({exc.__class__.__name__}); "
            f"giving up (FEDPACT_OUTAGE_TOLERANCE_S={self.retry_for_s:g})",
            budget_s=self._budget(), waited_s=waited_s,
        )

    def _outage_started(self, reason: str) -> None:
        if self._contacted:
            self.on_notice(f"hub unreachable at {self.url} ({reason}), retrying for up to {self.retry_for_s:g} s")

    def _outage_ended(self, waited_s: float) -> None:
        self.on_notice(f"hub reachable again at {self.url} after {waited_s:.0f} s; carrying on")

    def _send(self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        started = time.monotonic()
        budget = self._budget()
        deadline = started + budget
        delay = 0.2
        waited = 0.0
        announced = False
        while True:
            try:
                resp = self._http.request(method, path, headers=self._headers(headers), **kw)
            except httpx.TransportError as exc:
                problem = _certificate_problem(exc)
                if problem is not None:
                    raise HubCertificateError(
                        f"the hub at {self.url} presented a certificate this client does not trust ({problem}); "
                        f"if the hub uses its own CA, pass --ca-file or set ${CA_ENV} to that CA's PEM file"
                    ) from exc
                if not self._contacted and _hub_was_there(exc, self.token is not None):
                    # The hub accepted the connection and then was slow (a queue of a thousand
                    # hellos): it exists, so this is an outage to sit out, not a wrong URL.
                    self._contacted = True
                    budget = self._budget()
                    deadline = started + budget
                if time.monotonic() >= deadline or waited >= budget:
                    raise self.unreachable(exc, waited) from exc
                if not announced:
                    self._outage_started(exc.__class__.__name__)
                    announced = True
                # Jitter: a thousand clients cut off together must not come back together.
                pause = min(delay * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic()))
                time.sleep(pause)
                waited += pause
                delay = min(delay * 2, 5.0)
                continue
            # A hub that is restarting answers 503, or 500 for a long-poll it cut short while
            # shutting down; a read is safe to repeat, so wait for the hub to come back.
            transient = resp.status_code in (502, 503, 504) or (resp.status_code == 500 and method == "GET")
            if transient and not self._contacted:
                # Something answered at the URL (the hub, or its load balancer): the right
                # address, busy or restarting, so the outage budget applies, not the first contact's.
                self._contacted = True
                budget = self._budget()
                deadline = started + budget
            if transient and time.monotonic() < deadline:
                if not announced:
                    self._outage_started(f"HTTP {resp.status_code}")
                    announced = True
                pause = delay * random.uniform(0.5, 1.5)
                time.sleep(pause)
                waited += pause
                delay = min(delay * 2, 5.0)
                continue
            if announced and self._contacted:
                self._outage_ended(waited)
            self._contacted = True
            return resp

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._send(method, path, **kw)
        return self._result(resp, method, path)

    @staticmethod
    def _result(resp: httpx.Response, method: str, path: str) -> Any:
        if resp.status_code >= 400:
            raise _error(resp.status_code, resp.content, method, path, resp.reason_phrase)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    # -- users ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def algorithms(self) -> list[dict[str, Any]]:
        """The strategies the hub's definitions accept, with parameters and privacy modes."""
        result: list[dict[str, Any]] = self._call("GET", "/algorithms")
        return result

    def register(self, name: str, password: str, organisation: str) -> dict[str, Any]:
        return self._call("POST", "/users", json={"name": name, "password": password, "organisation": organisation})

    def login(self, name: str, password: str) -> str:
        out = self._call("POST", "/auth/login", json={"name": name, "password": password})
        self.token = out["token"]
        self.user = out["user"]
        return self.token

    def logout(self) -> None:
        self._call("POST", "/auth/logout")
        self.token = None
        self.user = None

    def me(self) -> dict[str, Any]:
        self.user = self._call("GET", "/users/me")
        return self.user

    # -- tasks ------------------------------------------------------------------------
    def create_task(self, name: str, definition: dict[str, Any], description: str = "") -> dict[str, Any]:
        return self._call("POST", "/tasks", json={"name": name, "description": description, "definition": definition})

    def list_tasks(
        self,
        *,
        status: str | None = None,
        creator: str | None = None,
        joined: bool | None = None,
        mine: bool | None = None,
        q: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        for k, v in (("status", status), ("creator", creator), ("q", q)):
            if v:
                params[k] = v
        if joined:
            params["joined"] = "true"
        if mine:
            params["mine"] = "true"
        return self._call("GET", "/tasks", params=params)["items"]

    def get_task(self, task: str | int) -> dict[str, Any]:
        return self._call("GET", f"/tasks/{task}")

    def cancel_task(self, task: str | int) -> dict[str, Any]:
        return self._call("POST", f"/tasks/{task}/cancel")

    def delete_task(self, task: str | int) -> None:
        self._call("DELETE", f"/tasks/{task}")

    def set_status(self, task: str | int, status: str, reason: str = "") -> dict[str, Any]:
        return self._call("POST", f"/tasks/{task}/status", json={"status": status, "reason": reason})

    def join(self, task: str | int) -> dict[str, Any]:
        """Join or ask to join; ``status`` in the answer is ADMITTED, or PENDING until the creator approves."""
        return self._call("POST", f"/tasks/{task}/join")

    def join_requests(self, task: str | int) -> list[dict[str, Any]]:
        """Pending join requests of a task you created, oldest first."""
        return self._call("GET", f"/tasks/{task}/requests")["items"]

    def members(self, task: str | int) -> list[dict[str, Any]]:
        """Everyone who asked to join a task you created, with their status."""
        return self._call("GET", f"/tasks/{task}/members")["items"]

    def approve(self, task: str | int, user: str) -> dict[str, Any]:
        return self._call("POST", f"/tasks/{task}/requests/{user}/approve")

    def decline(self, task: str | int, user: str) -> dict[str, Any]:
        return self._call("POST", f"/tasks/{task}/requests/{user}/decline")

    def remove_member(self, task: str | int, user: str) -> dict[str, Any]:
        """Take an admitted member out of a task you created, from its next round on."""
        return self._call("DELETE", f"/tasks/{task}/members/{user}")

    def leave(self, task: str | int) -> None:
        self._call("POST", f"/tasks/{task}/leave")

    def assignments(self) -> list[dict[str, Any]]:
        return self._call("GET", "/assignments")["items"]

    # -- relay ------------------------------------------------------------------------
    def send(
        self,
        task: str | int,
        *,
        sender: str,
        recipient: str,
        kind: str,
        round: int = 0,
        payload: bytes | bytearray | memoryview | Payload | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Post a message; payloads over INLINE_LIMIT are uploaded as a blob first.

        Up to ONE_SHOT_LIMIT the blob and the message go in one request; larger payloads
        use the chunked, resumable upload (straight to the object store where the hub's
        store presigns), so a broken connection costs one chunk, not the whole update.
        A :class:`Payload` (a model as the arrays it is made of) is streamed from those
        arrays either way, never joined into one buffer.
        """
        body: dict[str, Any] = {
            "sender": sender,
            "recipient": recipient,
            "kind": kind,
            "round": round,
            "headers": headers or {},
        }
        key = uuid.uuid4().hex
        size = 0 if payload is None else len(payload)
        direct = size >= PRESIGNED_MIN_BYTES and self.store_presigns is not False
        if payload is not None and (size > ONE_SHOT_LIMIT or direct):
            # A large update (a model) goes in resumable chunks, then the message names it. From
            # PRESIGNED_MIN_BYTES on, an upload asks the hub first: with an object store behind it the
            # bytes go there directly (and this client remembers it; with local disk it uses the
            # one-request path from then on).
            body["blob"] = self.upload_blob(task, payload)
            return self._call("POST", f"/tasks/{task}/messages", json=body, headers={"Idempotency-Key": key})
        if payload is not None and len(payload) > INLINE_LIMIT and not headers:
            # One request: the hub stores the raw body as a blob and posts the message.
            params = {"sender": sender, "recipient": recipient, "kind": kind, "round": round}
            return self._call("POST", f"/tasks/{task}/messages/raw", params=params,
                              content=payload if isinstance(payload, bytes) else _body(payload),
                              headers={"Idempotency-Key": key, "Content-Type": "application/octet-stream",
                                       "Content-Length": str(len(payload))})
        if payload is not None:
            if len(payload) > INLINE_LIMIT:
                body["blob"] = self.upload_blob(task, payload)
            else:
                small = payload.tobytes() if isinstance(payload, Payload) else payload
                body["payload"] = base64.b64encode(small).decode("ascii")
        return self._call("POST", f"/tasks/{task}/messages", json=body, headers={"Idempotency-Key": key})

    def poll(
        self,
        task: str | int,
        address: str,
        *,
        after: int | None = None,
        wait: float = 0,
        limit: int = 500,
        ack: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        """Messages after the cursor; ``ack`` also acknowledges ``after`` (everything before it was handled)."""
        out = self.read_mailbox(task, address, after=after, wait=wait, limit=limit, ack=ack)
        return out["messages"], out["cursor"]

    def read_mailbox(
        self,
        task: str | int,
        address: str,
        *,
        after: int | None = None,
        wait: float = 0,
        limit: int = 500,
        ack: bool = False,
    ) -> dict[str, Any]:
        """The whole poll answer: ``messages``, ``cursor``, ``task_status`` and ``more``.

        A reader waiting for work learns from ``task_status`` that its task ended, without
        a ``GET /tasks/{task}`` (whose answer grows with the number of members).
        """
        params: dict[str, Any] = {"wait": wait, "limit": limit}
        if after is not None:
            params["after"] = after
            if ack:
                params["ack"] = "true"
        out: dict[str, Any] = self._call("GET", f"/tasks/{task}/mailbox/{address}", params=params, timeout=wait + 30)
        return out

    def ack(self, task: str | int, address: str, cursor: int) -> int:
        return self._call("POST", f"/tasks/{task}/mailbox/{address}/ack", json={"cursor": cursor})["cursor"]

    def message_tensors(self, task: str | int, message: dict[str, Any]) -> tuple[dict[str, str], Weights] | None:
        """A message's safetensors body decoded: (string metadata, arrays); blobs are decoded as they arrive."""
        if message.get("blob"):
            ref = message["blob"]
            return self.download_tensors(task, ref["sha256"], ref.get("size"))
        data = self.message_payload(task, message)
        if data is None:
            return None
        sink = TensorSink(len(data))
        sink.write(data)
        return sink.result()

    def message_payload(self, task: str | int, message: dict[str, Any]) -> bytes | None:
        """The bytes a message carries, fetched from the blob store when needed."""
        if message.get("payload") is not None:
            return base64.b64decode(message["payload"])
        if message.get("blob"):
            return self.download_blob(task, message["blob"]["sha256"])
        return None

    # -- blobs ------------------------------------------------------------------------
    def upload_blob(
        self,
        task: str | int,
        data: bytes | bytearray | memoryview | Payload | str | Path,
        *,
        chunk_size: int = CHUNK_SIZE,
        progress: ProgressFn | None = None,
        private: bool = False,
    ) -> dict[str, Any]:
        """Upload bytes or a file in chunks; resumes from the hub's offset after a failure.

        A file is hashed and sent chunk by chunk, so a large model never sits whole in
        memory; in-memory data (bytes, or a :class:`Payload` over a model's arrays) is sent
        as slices, never copied whole. In-memory data up to ONE_SHOT_LIMIT goes in one
        request, except from PRESIGNED_MIN_BYTES on while the hub's store may presign: when the
        hub answers with presigned part URLs the chunks go straight to its object store.
        What the task's creator uploads is readable by the admitted participants (that is
        how the global model reaches them) unless ``private``, e.g. evaluation data.
        """
        if isinstance(data, (str, Path)):
            path = Path(data)
            size = path.stat().st_size
            sha = _sha256_file(path)
            opener = cast(Callable[[], BinaryIO], functools.partial(path.open, "rb"))
            parts: Payload | None = None
        else:
            parts = data if isinstance(data, Payload) else Payload([data])
            size = parts.size
            sha = parts.sha256()
            opener = cast(Callable[[], BinaryIO], functools.partial(_PayloadReader, parts))
        # One request when small enough to resend whole, unless the object store may take it directly.
        direct = size >= PRESIGNED_MIN_BYTES and self.store_presigns is not False
        if size <= ONE_SHOT_LIMIT and parts is not None and not direct:
            self._call(
                "PUT",
                f"/tasks/{task}/blobs/{sha}",
                params={"private": "true"} if private else None,
                content=data if isinstance(data, bytes) else _body(parts),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            if progress:
                progress(size, size)
            return blob_ref(sha, size)
        start = self._call("POST", f"/tasks/{task}/uploads", json={"sha256": sha, "size": size, "private": private})
        if not start["complete"] and size >= PRESIGNED_MIN_BYTES:
            self.store_presigns = bool(start.get("direct"))
        if start["complete"]:
            if progress:
                progress(size, size)
            return blob_ref(sha, size)
        upload_id = start["upload_id"]
        with opener() as fh:
            if start.get("direct"):
                self._send_direct(task, upload_id, start, fh, size, progress)
            else:
                self._send_chunks(task, upload_id, int(start["offset"]), fh, size, chunk_size, progress)
        self._call("POST", f"/tasks/{task}/uploads/{upload_id}/complete")
        return blob_ref(sha, size)

    def _send_chunks(
        self, task: str | int, upload_id: str, offset: int, fh: BinaryIO, size: int, chunk_size: int,
        progress: ProgressFn | None,
    ) -> None:  # fmt: skip
        deadline = time.monotonic() + self.retry_for_s
        while offset < size:
            n = min(chunk_size, size - offset)
            try:
                resp = self._http.put(
                    f"/tasks/{task}/uploads/{upload_id}",
                    params={"offset": offset},
                    content=_pieces(fh, offset, n),
                    headers=self._headers({"Content-Type": "application/octet-stream", "Content-Length": str(n)}),
                )
            except httpx.TransportError as exc:
                if time.monotonic() >= deadline:
                    raise HubUnreachable(f"upload to {self.url} kept failing: {exc}") from exc
                time.sleep(0.5)
                offset = int(self._call("GET", f"/tasks/{task}/uploads/{upload_id}")["offset"])
                continue
            if resp.status_code == 409:
                offset = int(self._call("GET", f"/tasks/{task}/uploads/{upload_id}")["offset"])
                continue
            offset = int(self._result(resp, "PUT", f"/tasks/{task}/uploads/{upload_id}")["offset"])
            deadline = time.monotonic() + self.retry_for_s
            if progress:
                progress(offset, size)

    def _send_direct(
        self, task: str | int, upload_id: str, status: dict[str, Any], fh: BinaryIO, size: int,
        progress: ProgressFn | None,
    ) -> None:  # fmt: skip
        """PUT each missing part to its presigned URL; after a failure ask the hub where to resume."""
        deadline = time.monotonic() + self.retry_for_s
        while True:
            offset = int(status["offset"])
            todo = [p for p in status["direct"]["parts"] if p["offset"] >= offset]
            try:
                for part in todo:
                    resp = self._direct.put(
                        part["url"],
                        content=_pieces(fh, part["offset"], part["size"]),
                        headers={"Content-Length": str(part["size"])},
                    )
                    if resp.status_code >= 400:
                        raise HubError(resp.status_code, resp.text[:300], "PUT", f"object store part {part['number']}")
                    deadline = time.monotonic() + self.retry_for_s
                    if progress:
                        progress(part["offset"] + part["size"], size)
                return
            except (httpx.TransportError, HubError) as exc:
                if time.monotonic() >= deadline:
                    raise HubUnreachable(f"upload to the object store kept failing: {exc}") from exc
                time.sleep(0.5)
                status = self._call("GET", f"/tasks/{task}/uploads/{upload_id}")

    def _stream_to(self, path: str, sink: BinaryIO | TensorSink, expected_sha: str | None, progress: ProgressFn | None) -> None:
        """Download into ``sink``; a dropped connection resumes with a Range request.

        A hub whose blob store presigns answers with a redirect to the object store; the
        bytes are then fetched from there, without the hub's token. The body is read by
        :class:`~fedpact.client.bulk.BulkChannel` straight into the sink's arrays where it
        can be (httpx when an environment proxy applies).
        """
        if expected_sha and self._read_local(path, expected_sha, sink, progress):
            return
        check = checksums.BodyCheck(expected_sha or "")
        received = 0
        deadline = time.monotonic() + self.retry_for_s
        direct: str | None = None
        waited = 0.0
        failures = 0
        while True:
            extra = {"Range": f"bytes={received}-"} if received else None
            url = direct if direct is not None else self.url + API + path
            headers = self._headers(extra) if direct is None else (extra or {})
            try:
                with self._open_download(url, headers) as resp:
                    if resp.status in (302, 303, 307) and direct is None and resp.location:
                        direct = resp.location
                        continue
                    if resp.status >= 400:
                        body = resp.read_error()
                        if direct is not None and resp.status == 403:
                            direct = None  # the presigned URL expired: ask the hub for a new one
                            continue
                        if resp.status in (502, 503, 504) and time.monotonic() < deadline:
                            # A restarting hub, or a load balancer with no replica up right now.
                            if not waited:
                                self._outage_started(f"HTTP {resp.status}")
                            pause = random.uniform(0.25, 0.75)
                            time.sleep(pause)
                            waited += pause
                            continue
                        err = _error(resp.status, body, "GET", path)
                        raise BlobGone(err.status, err.detail, "GET", path) if resp.status == 404 else err
                    if received and resp.status != 206:
                        raise HubError(resp.status, "the server ignored the Range request", "GET", path)
                    total = received + resp.length
                    if direct is None:
                        check.expect(resp.checksum)  # the hub's own copy; an object store's bytes get the sha256
                    for n in resp.fill(sink, check):
                        received += n
                        if progress:
                            progress(received, total)
                if waited:
                    self._outage_ended(waited)
                break
            except (httpx.TransportError, Urllib3Error) as exc:
                problem = _certificate_problem(exc)
                if problem is not None:
                    where = url.split("?")[0]
                    raise HubCertificateError(f"{where} presented a certificate this client does not trust ({problem})") from exc
                if time.monotonic() >= deadline:
                    raise HubUnreachable(f"download from {self.url} kept failing: {exc}") from exc
                failures += 1
                if failures == 1:
                    continue  # a kept-alive connection the server had just closed: try again at once
                if not waited:
                    self._outage_started(exc.__class__.__name__)
                time.sleep(0.5)
                waited += 0.5
        if (expected_sha or check.by_checksum) and not check.matches():
            what = "the checksum the hub sent with it" if check.by_checksum else f"sha256 {expected_sha}"
            raise FedpactError(f"downloaded data does not match {what}; try again")

    def read_blobs_locally(self, task: str | int) -> None:
        """Read ``task``'s blobs from the hub's directory when this process is on the hub's
        machine and can read it (``client.localblobs``); otherwise nothing changes.

        For the task's creator (its aggregator): the creator may read every blob of its
        task, so the files give the answers the hub would. Not for a participant, whose
        reads the hub restricts and the files would not.
        """
        self.local_blob_tasks.add(str(task))

    def _local_dir(self) -> LocalBlobs | None:
        """The hub's blob directory if this process can read it; asked once per client.

        Under a lock: the aggregator's first downloads start together, and one that found
        the question asked but not yet answered would go to the hub.
        """
        if self._local_asked:
            return self._local
        with self._local_lock:
            if not self._local_asked:
                if on_this_machine(self.url):
                    try:
                        answer = self._call("GET", "/blobstore/local")
                    except HubError:
                        answer = None  # a store elsewhere (S3), a remote caller, or an older hub
                    self._local = LocalBlobs.verify(answer) if isinstance(answer, dict) else None
                self._local_asked = True
        return self._local

    def _read_local(self, path: str, sha256: str, sink: BinaryIO | TensorSink, progress: ProgressFn | None) -> bool:
        """Read a task blob from the hub's directory; False when it has to come from the hub."""
        match = _TASK_BLOB_PATH.match(path)
        if match is None or match[1] not in self.local_blob_tasks:
            return False
        local = self._local_dir()
        f = local.open(sha256) if local is not None else None
        if f is None:
            return False
        check = checksums.BodyCheck(sha256)
        with f:
            check.expect(checksums.read_xattr(f.fileno()))  # the hub wrote it as it verified the file
            total, received = os.fstat(f.fileno()).st_size, 0
            for n in _fill(f, sink, check):
                received += n
                if progress:
                    progress(received, total)
        if not check.matches():
            what = "the checksum the hub attached to it" if check.by_checksum else "its sha256"
            raise FedpactError(f"the hub's file of blob {sha256} does not match {what}; the hub's disk needs checking")
        return True

    @contextlib.contextmanager
    def _open_download(self, url: str, headers: dict[str, str]) -> Iterator[_Download]:
        if proxied(url, self._proxies):
            client = self._http if url.startswith(self.url + API) else self._direct
            with client.stream("GET", url, headers=headers) as resp:
                yield _HttpxDownload(resp)
            return
        bulk = self._bulk.get(url, headers)
        try:
            yield _BulkDownload(bulk)
        finally:
            # A body left unread (a redirect's, or one abandoned mid-way) would be read as the
            # next answer on this connection: close it rather than put it back in the pool.
            if getattr(bulk, "length_remaining", None) != 0:
                bulk.close()
            bulk.release_conn()

    def download_tensors(
        self, task: str | int, sha256: str, size: int | None = None, *, progress: ProgressFn | None = None
    ) -> tuple[dict[str, str], Weights]:
        """A safetensors blob decoded as it arrives: each byte lands once, in its array.

        Holds the model once (the arrays) plus a chunk, where downloading the bytes and
        decoding them would hold it two or three times. ``size`` (the blob's declared
        size) bounds what a hostile header can make this allocate.
        """
        sink = TensorSink(size)
        self._stream_to(f"/tasks/{task}/blobs/{sha256}", sink, sha256, progress)
        return sink.result()

    def download_blob(self, task: str | int, sha256: str, *, progress: ProgressFn | None = None) -> bytes:
        buf = io.BytesIO()
        self._stream_to(f"/tasks/{task}/blobs/{sha256}", buf, sha256, progress)
        return buf.getvalue()

    # -- rounds, checkpoints ---------------------------------------------------------
    def put_round(self, task: str | int, number: int, **fields: Any) -> dict[str, Any]:
        return self._call("PUT", f"/tasks/{task}/rounds/{number}", json=fields)

    def list_rounds(self, task: str | int) -> list[dict[str, Any]]:
        return self._call("GET", f"/tasks/{task}/rounds")["items"]

    def put_checkpoint(self, task: str | int, round: int, blob: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/tasks/{task}/checkpoint", json={"round": round, "blob": blob, "state": state})

    def get_checkpoint(self, task: str | int) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"/tasks/{task}/checkpoint")
        except HubError as exc:
            if exc.status == 404:
                return None
            raise

    # -- models -----------------------------------------------------------------------
    def register_model(
        self,
        task: str | int,
        *,
        blob: dict[str, Any],
        metadata: dict[str, Any],
        contributors: list[str],
        rounds: int,
        metrics: dict[str, Any],
    ) -> dict[str, Any]:
        return self._call(
            "POST",
            f"/tasks/{task}/models",
            json={"blob": blob, "metadata": metadata, "contributors": contributors, "rounds": rounds, "metrics": metrics},
        )

    def list_models(self, task: str | int | None = None) -> list[dict[str, Any]]:
        params = {"task": task} if task is not None else None
        return self._call("GET", "/models", params=params)["items"]

    def get_model(self, model_id: int) -> dict[str, Any]:
        return self._call("GET", f"/models/{model_id}")

    def model_card(self, model_id: int) -> dict[str, Any]:
        """The model card: definition, data schema, per-round metrics and model hashes, terms."""
        return self._call("GET", f"/models/{model_id}/card")

    def set_model_card(self, model_id: int, *, description: str | None = None, licence: str | None = None) -> dict[str, Any]:
        """Set the description and licence of a model of your task (creator only)."""
        body = {k: v for k, v in {"description": description, "licence": licence}.items() if v is not None}
        return self._call("PUT", f"/models/{model_id}/card", json=body)

    def download_model(self, model_id: int, dest: str | Path, *, progress: ProgressFn | None = None) -> Path:
        """Stream the model's safetensors file to ``dest`` (written atomically, sha256 checked).

        ``dest`` is a directory when it exists as one or ends with a slash (``-o models/``,
        created if needed: ``Path`` would drop the slash and write a file named ``models``).
        """
        info = self.get_model(model_id)
        as_dir = str(dest).endswith(("/", os.sep))
        dest = Path(dest)
        if as_dir:
            dest.mkdir(parents=True, exist_ok=True)
        if dest.is_dir():
            dest = dest / f"{info['task_name']}-model-{model_id}.safetensors"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        with open(tmp, "wb") as fh:
            self._stream_to(f"/models/{model_id}/download", fh, info["sha256"], progress)
        os.replace(tmp, dest)
        return dest

    # -- hosted aggregator (run by the hub) ---------------------------------------------
    def start_hosted_aggregator(
        self, task: str | int, *, resume: bool = False, eval_data: dict[str, Any] | None = None,
        mlflow_uri: str | None = None,
    ) -> dict[str, Any]:
        """Ask the hub to run ``task``'s aggregator as its own worker process (creator only).

        ``eval_data`` is ``{"blob": {"sha256", "size"}, "format": "csv"|"npz", "label"?}``
        naming a blob already uploaded to the task (see :meth:`upload_blob`); ``mlflow_uri``
        has the hosted aggregator track the task as an MLflow run there.
        """
        body: dict[str, Any] = {"resume": resume}
        if eval_data is not None:
            body["eval_data"] = eval_data
        if mlflow_uri is not None:
            body["mlflow_uri"] = mlflow_uri
        return self._call("POST", f"/tasks/{task}/aggregator", json=body)

    def hosted_aggregator_status(self, task: str | int) -> dict[str, Any]:
        return self._call("GET", f"/tasks/{task}/aggregator")

    def hosted_aggregator_log(self, task: str | int, offset: int | None = None, limit: int = 64 * 1024) -> dict[str, Any]:
        """``{"offset", "next_offset", "size", "text"}``; without ``offset`` the tail of the log."""
        params: dict[str, Any] = {"limit": limit}
        if offset is not None:
            params["offset"] = offset
        return self._call("GET", f"/tasks/{task}/aggregator/log", params=params)

    def stop_hosted_aggregator(self, task: str | int) -> dict[str, Any]:
        return self._call("DELETE", f"/tasks/{task}/aggregator")


def _pieces(fh: BinaryIO, offset: int, n: int, piece: int = 1024 * 1024) -> Iterator[bytes]:
    """``n`` bytes of ``fh`` from ``offset``, read as they are sent.

    Streaming the chunk instead of passing it whole matters for memory: httpx keeps a
    request's body in a reference cycle until the garbage collector runs, so whole
    chunks piled up (four 8 MiB chunks while sending a 56 MiB update).
    """
    fh.seek(offset)
    while n > 0:
        block = fh.read(min(piece, n))
        if not block:
            raise FedpactError(f"the data to upload ended {n} bytes early; was the file changed meanwhile?")
        n -= len(block)
        yield block


class _PayloadReader(io.RawIOBase):
    """A seekable reader over a :class:`Payload` whose reads are slices, not a copy of the whole."""

    def __init__(self, payload: Payload) -> None:
        self._payload = payload
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._payload.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self._payload.size if n is None or n < 0 else min(self._payload.size, self._pos + n)
        if end <= self._pos:
            return b""
        chunk = b"".join(self._payload.pieces(self._pos, end - self._pos, end - self._pos))
        self._pos = end
        return chunk


class _Body:
    """A request body streamed from a payload's pieces; iterable again when a request is retried."""

    def __init__(self, payload: Payload) -> None:
        self._payload = payload

    def __iter__(self) -> Iterator[bytes]:
        return cast(Iterator[bytes], self._payload.pieces(0, None, 1024 * 1024))


def _body(payload: bytes | bytearray | memoryview | Payload) -> _Body:
    return _Body(payload if isinstance(payload, Payload) else Payload([payload]))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_SIZE), b""):
            h.update(block)
    return h.hexdigest()

