"""What keeps a hub's cost per participant flat (issue 8, point 8), checked on a real hub.

A waiting participant asks the hub for its mailbox and nothing else; small global models
reach participants inline in the round's request, byte for byte the blob; a hub that
accepts connections but answers late does not make a participant quit; an aggregator
waiting for hellos gives up after its bound and says how far it got.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from federation_helpers import Runner, digits_definition, start_aggregator, start_participant

from fedpact.client.hub import HubClient, HubUnreachable
from fedpact.common.errors import FedpactError
from fedpact.common.tensors import decode_stream
from fedpact.data.builtin import digits_federation
from fedpact.data.dataset import Dataset
from fedpact.hub.server import EmbeddedHub
from fedpact.runtime import DataParticipant, Events, Progress, run_aggregator, run_participant
from fedpact.runtime import messages as m
from fedpact.runtime.participant import TaskEnded
from fedpact.runtime.rounds.participant import HubParticipantTransport
from support import wait_for


@pytest.fixture(scope="module")
def shards() -> tuple[list[Dataset], Dataset]:
    return digits_federation(2, test_fraction=0.25, seed=0)


def requests_served(url: str, method: str, route: str) -> int:
    """How many ``method route`` requests the hub answered, from its Prometheus counters."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    labels = f'method="{re.escape(method)}",route="{re.escape(route)}"'
    pattern = re.compile(r"^fedpact_http_requests_total\{" + labels + r',status="\d+"\} ([0-9.e+]+)$', re.M)
    return int(sum(float(v) for v in pattern.findall(text)))


def test_a_waiting_participant_polls_only_its_mailbox_and_learns_the_end_from_the_poll(
    hub: EmbeddedHub, make_user, shards
) -> None:
    parts, _ = shards
    alice, bob = make_user("alice"), make_user("bob")
    alice.create_task("waiting", digits_definition(quorum=2, min_participants=2))
    outcome: dict[str, BaseException | object] = {}

    def participate() -> None:
        try:
            outcome["result"] = run_participant(bob, "waiting", DataParticipant(parts[0]), progress=Progress(quiet=True),
                                                poll_wait=0.2)
        except BaseException as exc:  # noqa: BLE001 - examined below
            outcome["error"] = exc

    thread = threading.Thread(target=participate, daemon=True)
    thread.start()
    wait_for(lambda: any(msg["kind"] == m.HELLO for msg in alice.poll("waiting", "aggregator", after=0)[0]), 30,
             "bob's hello")
    task_reads = requests_served(hub.url, "GET", "/tasks/{task}")
    polls = requests_served(hub.url, "GET", "/tasks/{task}/mailbox/{address:path}")
    time.sleep(2.0)  # about ten empty polls: nobody aggregates yet
    assert requests_served(hub.url, "GET", "/tasks/{task}/mailbox/{address:path}") >= polls + 5
    # No GET /tasks/{task} per empty poll: that answer lists every member (O(N) each, O(N^2) in all).
    assert requests_served(hub.url, "GET", "/tasks/{task}") == task_reads
    alice.cancel_task("waiting")
    thread.join(30)
    assert not thread.is_alive(), "the participant did not notice that its task was cancelled"
    error = outcome.get("error")
    assert isinstance(error, TaskEnded) and error.status == "CANCELLED", outcome


def test_small_models_travel_inline_byte_for_byte_and_participants_download_no_blob(
    hub: EmbeddedHub, make_user, shards, tmp_path: Path
) -> None:
    parts, test = shards
    alice = make_user("alice")
    users = {name: make_user(name) for name in ("bob", "carol")}
    alice.create_task("inline", digits_definition(rounds=2, quorum=2, min_participants=2))
    run = Runner()
    for (name, user), data in zip(users.items(), parts):
        start_participant(run, user, "inline", DataParticipant(data), name)
    start_aggregator(run, alice, "inline", eval_data=test)
    run.join()
    assert not run.errors, run.errors
    assert run.results["aggregator"].status == "COMPLETE"
    # Neither participant fetched a blob: the model of each request came inline.
    assert requests_served(hub.url, "GET", "/tasks/{task}/blobs/{sha256}") == 0

    requests = [msg for msg in alice.poll("inline", "participants", after=0)[0]
                if msg["kind"] in (m.ROUND_START, m.FINAL_EVALUATE)]
    assert [msg["kind"] for msg in requests] == [m.ROUND_START, m.ROUND_START, m.FINAL_EVALUATE]
    shas = set()
    for msg in requests:
        meta, tensors = m.unpack(alice.message_payload("inline", msg) or b"")
        inline = tensors[m.INLINE_WEIGHTS]
        assert inline.dtype == np.uint8
        assert inline.tobytes() == alice.download_blob("inline", meta["weights"]["sha256"])
        shas.add(meta["weights"]["sha256"])
    assert len(shas) == 3  # the model of each round and the final one, each exactly its blob

    # Bytes that are not the named blob are refused; the blob is then downloaded.
    tid = int(alice.get_task("inline")["id"])
    sha = next(iter(shas))
    blob = alice.download_blob("inline", sha)
    expected = decode_stream(blob)
    transport = HubParticipantTransport(users["bob"], tid, m.participant_address("bob"))
    assert transport.offer(sha, blob[:-1] + bytes([blob[-1] ^ 1])) is False
    _same_tensors(transport.download_tensors(sha, len(blob)), expected)
    assert requests_served(hub.url, "GET", "/tasks/{task}/blobs/{sha256}") == 2 + len(shas)
    assert transport.offer(sha, blob) is True
    _same_tensors(transport.download_tensors(sha, len(blob)), expected)
    assert requests_served(hub.url, "GET", "/tasks/{task}/blobs/{sha256}") == 2 + len(shas)


def _same_tensors(got: tuple[dict[str, str], dict[str, np.ndarray]], want: tuple[dict[str, str], dict[str, np.ndarray]]) -> None:
    assert got[0] == want[0]
    assert got[1].keys() == want[1].keys()
    for k in want[1]:
        assert np.array_equal(got[1][k], want[1][k])


class StallingProxy:
    """A TCP proxy to the hub that accepts connections at once but forwards nothing until released.

    That is what a hub with a thousand queued requests looks like to a client: connected,
    then silent past the client's read timeout.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.released = threading.Event()
        self.stalled = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if not self.released.is_set():
            self.stalled += 1
            self.released.wait()
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            client.close()
            return
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._closing = True
        self.released.set()
        self._server.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def stalling_proxy(hub: EmbeddedHub) -> Iterator[StallingProxy]:
    port = hub.port
    proxy = StallingProxy(port)
    yield proxy
    proxy.close()


def test_a_participant_outlasts_a_hub_that_accepts_but_answers_late(
    hub: EmbeddedHub, make_user, shards, stalling_proxy: StallingProxy
) -> None:
    parts, test = shards
    alice, bob = make_user("alice"), make_user("bob")
    alice.create_task("slow-start", digits_definition(rounds=1, quorum=1, min_participants=1))
    # The participant's very first request goes to a hub that says nothing for 8 s, with a
    # 1 s read timeout: the old client counted that as a wrong URL (3 s first-contact budget).
    late = HubClient(f"http://127.0.0.1:{stalling_proxy.port}", bob.token, timeout=1.0, on_notice=lambda _t: None)
    assert late.first_contact_s == 3.0
    run = Runner()
    run.start("bob", lambda: run_participant(late, "slow-start", DataParticipant(parts[0]), progress=Events(),
                                             poll_wait=0.5))
    time.sleep(8.0)
    assert "bob" not in run.errors, run.errors.get("bob")
    assert stalling_proxy.stalled >= 3  # it kept retrying (each attempt timed out after 1 s)
    stalling_proxy.released.set()
    start_aggregator(run, alice, "slow-start", eval_data=test)
    run.join()
    late.close()
    assert not run.errors, run.errors
    assert run.results["bob"].status == "COMPLETE" and run.results["bob"].rounds_trained == [1]


def test_a_hub_that_refuses_connections_is_still_a_wrong_url_within_seconds() -> None:
    """A refused connection gets the first-contact budget, not the outage budget (checked by budget, not by clock)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    client = HubClient(f"http://127.0.0.1:{port}", "token", retry_for_s=600)
    with pytest.raises(HubUnreachable, match="is the hub running") as refused:
        client.me()
    assert refused.value.budget_s == client.first_contact_s < client.retry_for_s
    assert refused.value.waited_s <= client.first_contact_s


def test_an_aggregator_waiting_for_hellos_gives_up_after_its_bound_and_says_how_far_it_got(
    make_user, shards
) -> None:
    parts, _ = shards
    alice, bob = make_user("alice"), make_user("bob")
    alice.create_task("short", digits_definition(quorum=2, min_participants=2))
    run = Runner()
    start_participant(run, bob, "short", DataParticipant(parts[0]), "bob")
    events = Events()
    run.start("aggregator", lambda: run_aggregator(alice, "short", progress=events, poll_wait=0.3, quorum_timeout_s=3.0))
    run.threads["aggregator"].join(60)
    error = run.errors.get("aggregator")
    assert isinstance(error, FedpactError) and "quorum not reached within 3 s: 1 of 2 participants ready" in str(error)
    assert alice.get_task("short")["status"] == "CREATED"  # nothing was changed
    alice.cancel_task("short")
    run.threads["bob"].join(30)
    assert isinstance(run.errors.get("bob"), TaskEnded)


class _BusyThenReady(BaseHTTPRequestHandler):
    """A load balancer in front of a hub that is still starting: 503 until ``ready_at``."""

    ready_at = 0.0
    answered_503 = 0

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if time.monotonic() < type(self).ready_at:
            type(self).answered_503 += 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
        pass


def test_a_first_request_answered_503_for_longer_than_the_first_contact_budget_is_retried() -> None:
    _BusyThenReady.ready_at = time.monotonic() + 5.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BusyThenReady)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = HubClient(f"http://127.0.0.1:{server.server_address[1]}", on_notice=lambda _t: None)
        assert client.first_contact_s == 3.0
        # Something answered at the URL: the right address, busy; the outage budget applies.
        assert client.health() == {"status": "ok"}
        assert _BusyThenReady.answered_503 >= 3
        client.close()
    finally:
        server.shutdown()
        server.server_close()


BLOB = b"the final model, as a participant downloads it"


class _BlobBehindBusyBalancer(BaseHTTPRequestHandler):
    """haproxy with every replica marked down for a moment ("No server is available"), then the blob."""

    ready_at = 0.0
    answered_503 = 0

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if time.monotonic() < type(self).ready_at:
            type(self).answered_503 += 1
            body = b"<html><body><h1>503 Service Unavailable</h1>No server is available.</body></html>"
            self.send_response(503)
        else:
            body = BLOB
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
        pass


def test_a_download_answered_503_by_the_load_balancer_is_retried() -> None:
    _BlobBehindBusyBalancer.ready_at = time.monotonic() + 2.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BlobBehindBusyBalancer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with HubClient(f"http://127.0.0.1:{server.server_address[1]}", "token", on_notice=lambda _t: None) as client:
            assert client.download_blob("task", hashlib.sha256(BLOB).hexdigest()) == BLOB
        assert _BlobBehindBusyBalancer.answered_503 >= 2
    finally:
        server.shutdown()
        server.server_close()
