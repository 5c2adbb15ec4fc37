"""HTTPS: a hub serving TLS, clients that verify it, and a federation over it.

Certificates are made here with ``cryptography``: a private CA, a hub certificate it signs
(for 127.0.0.1 and localhost), and a second CA that did not sign it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from federation_helpers import (
    Runner,
    digits_definition,
    start_aggregator,
    start_participant,
)

from fedpact.client.hub import HubCertificateError, HubClient, HubError, tls_context
from fedpact.data.builtin import digits_federation
from fedpact.hub import EmbeddedHub
from fedpact.hub.server import free_port
from fedpact.runtime import DataParticipant
from hub_fixtures import fast_config
from support import PASSWORD, wait_for


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    ca: Path
    other_ca: Path
    chain: Path
    key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("fedpact test CA")
    _, other_cert = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("fedpact hub"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(ca=d / "ca.pem", other_ca=d / "other-ca.pem", chain=d / "hub-chain.pem", key=d / "hub-key.pem")
    pki.ca.write_bytes(_pem(ca_cert))
    pki.other_ca.write_bytes(_pem(other_cert))
    pki.chain.write_bytes(_pem(leaf) + _pem(ca_cert))
    pki.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


@pytest.fixture
def https_hub(tmp_path: Path, pki: Pki) -> Iterator[EmbeddedHub]:
    with EmbeddedHub(config=fast_config(tmp_path / "hub", tls_cert=pki.chain, tls_key=pki.key)) as h:
        yield h


def _user(url: str, name: str, ca: Path) -> HubClient:
    c = HubClient(url, retry_for_s=10, ca_file=ca)
    c.register(name, PASSWORD, f"{name} org")
    c.login(name, PASSWORD)
    return c


def test_the_hub_serves_https_and_clients_verify_it(https_hub: EmbeddedHub, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    assert https_hub.url.startswith("https://127.0.0.1:")
    alice = _user(https_hub.url, "alice", pki.ca)
    assert alice.me()["name"] == "alice"
    alice.close()
    # $FEDPACT_CA is the same as ca_file.
    monkeypatch.setenv("FEDPACT_CA", str(pki.ca))
    with HubClient(https_hub.url, retry_for_s=5) as c:
        c.login("alice", PASSWORD)
        assert c.me()["name"] == "alice"
    # Plain HTTP on the HTTPS port gets no answer.
    with pytest.raises(httpx.HTTPError):
        httpx.get(https_hub.url.replace("https:", "http:") + "/api/v1/health", timeout=5)


@pytest.mark.parametrize("trust", ["other CA", "system store"])
def test_a_certificate_the_client_does_not_trust_is_refused_clearly(
    https_hub: EmbeddedHub, pki: Pki, trust: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDPACT_CA", raising=False)
    ca = pki.other_ca if trust == "other CA" else None
    # A long retry window: a certificate problem must fail at once, not be retried.
    with HubClient(https_hub.url, retry_for_s=300, ca_file=ca) as c, pytest.raises(HubCertificateError) as exc:
        c.register("mallory", PASSWORD, "x")
    message = str(exc.value)
    assert "does not trust" in message and "--ca-file" in message and "FEDPACT_CA" in message
    assert "certificate" in message.lower()
    # Nothing reached the hub: the user does not exist.
    with HubClient(https_hub.url, retry_for_s=5, ca_file=pki.ca) as c:
        assert c._http.post("/auth/login", json={"name": "mallory", "password": PASSWORD}).status_code == 401


def test_a_missing_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    from fedpact.common.errors import FedpactError

    with pytest.raises(FedpactError, match="does not exist"):
        HubClient("https://127.0.0.1:1", ca_file=tmp_path / "nope.pem")


def test_a_federation_runs_over_https(https_hub: EmbeddedHub, pki: Pki, tmp_path: Path) -> None:
    parts, test = digits_federation(2, test_fraction=0.25, seed=1)
    alice = _user(https_hub.url, "alice", pki.ca)
    users = [_user(https_hub.url, n, pki.ca) for n in ("bob", "carol")]
    alice.create_task("digits-tls", digits_definition(rounds=2, quorum=2))
    run = Runner()
    for name, user, data in zip(("bob", "carol"), users, parts, strict=True):
        start_participant(run, user, "digits-tls", DataParticipant(data), name, model_dir=tmp_path / name)
    start_aggregator(run, alice, "digits-tls", eval_data=test)
    run.join()
    assert not run.errors, run.errors
    assert run.results["aggregator"].status == "COMPLETE"
    assert alice.get_task("digits-tls")["status"] == "COMPLETE"
    assert sorted(alice.list_models("digits-tls")[0]["contributors"]) == ["bob", "carol"]
    for c in (alice, *users):
        c.close()


def test_a_hosted_aggregator_trusts_the_hubs_certificate(https_hub: EmbeddedHub, pki: Pki, tmp_path: Path) -> None:
    parts, _ = digits_federation(2, test_fraction=0.25, seed=2)
    alice = _user(https_hub.url, "alice", pki.ca)
    users = [_user(https_hub.url, n, pki.ca) for n in ("bob", "carol")]
    alice.create_task("hosted-tls", digits_definition(rounds=2, quorum=2))
    run = Runner()
    for name, user, data in zip(("bob", "carol"), users, parts, strict=True):
        start_participant(run, user, "hosted-tls", DataParticipant(data), name, model_dir=tmp_path / name)
    r = alice._http.post("/tasks/hosted-tls/aggregator", json={}, headers=alice._headers())
    assert r.status_code == 202, r.text
    wait_for(lambda: alice.get_task("hosted-tls")["status"] == "COMPLETE", 120, "the hosted federation over HTTPS")
    run.join()
    assert not run.errors, run.errors
    log = alice._http.get("/tasks/hosted-tls/aggregator/log", headers=alice._headers()).json()["text"]
    assert "certificate" not in log.lower(), log
    for c in (alice, *users):
        c.close()


def test_the_cli_takes_ca_file(https_hub: EmbeddedHub, pki: Pki, tmp_path: Path) -> None:
    env = {**os.environ, "FEDPACT_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("FEDPACT_CA", None)

    def fedpact(ca: Path, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "fedpact", "--ca-file", str(ca), *args, "--hub", https_hub.url]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)

    refused = fedpact(pki.other_ca, "register", "erin", "--organisation", "o", "--password", PASSWORD)
    assert refused.returncode == 1 and "does not trust" in refused.stderr, refused.stderr
    done = fedpact(pki.ca, "register", "erin", "--organisation", "o", "--password", PASSWORD)
    assert done.returncode == 0, done.stderr
    done = fedpact(pki.ca, "login", "erin", "--password", PASSWORD)
    assert done.returncode == 0 and "logged in" in done.stdout + done.stderr


def test_fedpact_hub_command_serves_https_with_its_settings(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text("max_tasks_per_user = 5\nmax_pending_messages = 7\n")
    argv = [
        sys.executable, "-m", "fedpact", "hub", "--data-dir", str(tmp_path / "hub"), "--port", str(port),
        "--tls-cert", str(pki.chain), "--tls-key", str(pki.key), "--config", str(config),
        "--set", "max_tasks_per_user=1", "--set", "password_memory_kib=8192",
    ]  # fmt: skip
    log = tmp_path / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"https://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/api/v1/health", verify=tls_context(pki.ca), timeout=2).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, log.read_text()
                return False

        wait_for(healthy, 60, "fedpact hub over HTTPS")
        alice = _user(url, "alice", pki.ca)
        alice.create_task("first-task", digits_definition())
        with pytest.raises(HubError) as exc:
            alice.create_task("second-task", digits_definition())
        assert exc.value.status == 429 and "max_tasks_per_user = 1" in str(exc.value)  # --set wins over the file
        alice.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
