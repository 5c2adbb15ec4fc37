"""Model downloads read straight into their arrays (client/bulk.py): resumed after a cut, and
left to httpx, through the proxy, when the environment names one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedpact.client.bulk import proxied
from fedpact.client.hub import HubClient
from fedpact.common.errors import FedpactError
from fedpact.common.tensors import TensorFormatError, encode_parts
from fedpact.hub.server import EmbeddedHub
from hub_fixtures import Api, fast_config
from tcp_relay import TcpRelay

WEIGHTS = {
    "weight": np.random.default_rng(5).standard_normal((10, 50_000)).astype(np.float32),  # 2 MB
    "bias": np.arange(10, dtype=np.float32),
}


@pytest.fixture()
def stored(tmp_path: Path) -> Any:
    """A hub holding WEIGHTS as a blob of a task alice created: (hub, alice's token, task, blob ref)."""
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as hub:
        api = Api(hub.url)
        alice = api.user("alice")
        task = alice.create_task()
        with HubClient(hub.url, alice.token) as client:
            ref = client.upload_blob(task["name"], encode_parts(WEIGHTS))
        yield hub, alice.token, task["name"], ref
        api.close()


def test_a_download_cut_mid_body_resumes_with_a_range_and_decodes_the_arrays(stored: Any) -> None:
    hub, token, task, ref = stored
    relay = TcpRelay(hub.port, cut_down_after=700_000)
    seen: list[tuple[str, dict[str, str]]] = []
    try:
        with HubClient(f"http://127.0.0.1:{relay.port}", token, on_notice=lambda _t: None) as client:
            client._bulk.hooks.append(lambda method, url, headers: seen.append((method, dict(headers))))
            meta, arrays = client.download_tensors(task, ref["sha256"], ref["size"])
    finally:
        relay.close()
    assert set(arrays) == set(WEIGHTS)
    for name, arr in WEIGHTS.items():
        assert np.array_equal(arrays[name], arr), name
    assert [m for m, _ in seen] == ["GET", "GET"], seen
    assert "Range" not in seen[0][1]
    resumed_at = int(seen[1][1]["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at < ref["size"], "the second request asks for the rest only, not the whole blob again"


def test_bytes_changed_on_the_way_are_refused(stored: Any) -> None:
    hub, token, task, ref = stored
    relay = TcpRelay(hub.port, corrupt_down_at=1_000_000)  # well inside the weights, after the response headers
    try:
        with HubClient(f"http://127.0.0.1:{relay.port}", token) as client:
            # The hub serves its verified copy from memory, with its checksum: that is what fails.
            with pytest.raises(FedpactError, match="does not match the checksum the hub sent with it"):
                client.download_tensors(task, ref["sha256"], ref["size"])
    finally:
        relay.close()


def test_with_a_proxy_in_the_environment_downloads_go_through_it(stored: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hub, token, task, ref = stored
    proxy = TcpRelay(hub.port)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
    bulk: list[str] = []
    try:
        with HubClient(hub.url, token) as client:
            client._bulk.hooks.append(lambda method, url, headers: bulk.append(url))
            _, arrays = client.download_tensors(task, ref["sha256"], ref["size"])
    finally:
        proxy.close()
    assert np.array_equal(arrays["weight"], WEIGHTS["weight"])
    assert bulk == [], "the bulk channel does not know proxies: httpx carries the download"
    assert proxy.down >= ref["size"], "and it went through the proxy"


def test_which_urls_a_proxy_applies_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "hub.internal,127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "hub.internal,127.0.0.1")
    proxies = {"http": "http://proxy:3128"}
    assert proxied("http://hub.example:8470/api/v1/x", proxies)
    assert not proxied("http://hub.internal:8470/api/v1/x", proxies)
    assert not proxied("http://127.0.0.1:8470/api/v1/x", proxies)
    assert not proxied("https://hub.example/api/v1/x", proxies), "no proxy for https"
    assert proxied("https://hub.example/api/v1/x", {"all": "http://proxy:3128"})
    assert not proxied("http://hub.example/api/v1/x", {})


def test_a_download_abandoned_mid_body_leaves_the_next_one_a_clean_connection(stored: Any) -> None:
    hub, token, task, ref = stored
    with HubClient(hub.url, token) as client:
        junk = client.upload_blob(task, os.urandom(3_000_000))  # not safetensors: refused at its first bytes
        for _ in range(3):
            with pytest.raises(TensorFormatError):
                client.download_tensors(task, junk["sha256"], junk["size"])
            _, arrays = client.download_tensors(task, ref["sha256"], ref["size"])
            assert np.array_equal(arrays["weight"], WEIGHTS["weight"])
