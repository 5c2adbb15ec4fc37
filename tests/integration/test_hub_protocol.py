"""The hub's HTTP protocol (hub/protocol.py): uvicorn's httptools protocol handing request
bodies to the application without copying them; every byte still arrives, however the
socket cuts the body."""

from __future__ import annotations

import hashlib
import random
import socket
import time
from pathlib import Path

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from fedpact.client.hub import HubClient
from fedpact.hub.protocol import _cycle_keeps_body_as_expected, lean_protocol
from fedpact.hub.server import EmbeddedHub
from hub_fixtures import Api, fast_config


def test_the_hub_serves_with_the_lean_protocol(tmp_path: Path) -> None:
    protocol = lean_protocol()
    assert isinstance(protocol, type) and issubclass(protocol, HttpToolsProtocol)
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as hub:
        assert hub._server is not None
        assert hub._server.config.http_protocol_class.__name__ == "LeanHttpToolsProtocol"


def test_a_uvicorn_whose_request_cycle_differs_gets_its_own_protocol() -> None:
    class OtherCycle:
        def __init__(self) -> None:
            self.body = b""

        async def receive(self) -> dict[str, object]:
            return {"type": "http.request", "body": self.body, "more_body": False}

    assert _cycle_keeps_body_as_expected(RequestResponseCycle)
    assert not _cycle_keeps_body_as_expected(OtherCycle)


def _post_in_pieces(port: int, path: str, token: str, body: bytes, seed: int) -> bytes:
    """POST ``body`` over a plain socket in pieces of random size, with pauses between some."""
    rng = random.Random(seed)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        at = 0
        while at < len(body):
            n = rng.choice((1, 7, 1000, 65_536, 300_000))
            sock.sendall(body[at:at + n])
            at += n
            if rng.random() < 0.05:
                time.sleep(0.01)
        answer = b""
        while chunk := sock.recv(65_536):
            answer += chunk
    return answer


@pytest.mark.parametrize("seed", [1, 2])
def test_a_body_cut_in_any_pieces_arrives_whole(tmp_path: Path, seed: int) -> None:
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as hub:
        api = Api(hub.url)
        alice, bob = api.user("alice"), api.user("bob")
        task = alice.create_task()
        bob.join(task["name"])
        body = random.Random(seed).randbytes(3_000_000)
        path = (f"/api/v1/tasks/{task['name']}/messages/raw?sender=participant%2F{bob.name}"
                "&recipient=aggregator&kind=update&round=1")
        answer = _post_in_pieces(hub.port, path, bob.token, body, seed)
        assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
        with HubClient(hub.url, alice.token) as c:
            (message,), _cursor = c.poll(task["name"], "aggregator", after=0, wait=0)
            assert message["blob"]["sha256"] == hashlib.sha256(body).hexdigest()
            assert c.download_blob(task["name"], message["blob"]["sha256"]) == body
        api.close()
