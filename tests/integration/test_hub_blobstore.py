"""A hub on each blob store backend: direct transfers, garbage collection, chunked updates."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedpact.client.hub import CHUNK_SIZE, ONE_SHOT_LIMIT, BlobGone, HubClient, HubError
from fedpact.hub import EmbeddedHub
from fedpact.hub.blobgc import collect, reclaim_finished_rounds
from fedpact.hub.blobstore import BlobStore, open_blob_store
from fedpact.hub.config import HubConfig
from fedpact.hub.db import Database
from fedpact.hub.routes.blobs import DIRECT_MIN_BYTES, DIRECT_PART_BYTES
from hub_fixtures import Api, User, fast_config, sha
from seaweedfs import SeaweedFS, blob_store_url, seaweedfs  # noqa: F401
from support import wait_for
from tcp_relay import TcpRelay

MIB = 1024 * 1024


class Env:
    """A hub on one backend, a second view of its database and store (as another replica has)."""

    def __init__(self, hub: EmbeddedHub, config: HubConfig) -> None:
        self.hub = hub
        self.config = config
        self.api = Api(hub.url)
        assert config.database_url is not None
        self.db = Database(config.database_url)
        self.store: BlobStore = open_blob_store(config.blob_store, config.data_dir)
        self.clients: list[HubClient] = []

    def client(self, user: User) -> HubClient:
        c = HubClient(self.hub.url, user.token, retry_for_s=10)
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.api.close()
        self.db.dispose()


@pytest.fixture
def env(blob_store_url: str | None, tmp_path: Path) -> Iterator[Env]:  # noqa: F811
    # gc_interval_s is long: passes run when a task ends, or when a test runs one; and
    # the hub's own reclaiming of finished rounds waits an hour, so only the tests' run.
    config = fast_config(tmp_path / "hub", blob_store=blob_store_url, gc_grace_s=0, gc_interval_s=3600,
                         gc_round_grace_s=3600)
    with EmbeddedHub(config=config) as hub:
        e = Env(hub, config)
        yield e
        e.close()


def members(env: Env) -> tuple[User, User, dict[str, Any]]:
    alice, bob = env.api.user("alice"), env.api.user("bob")
    task = alice.create_task()
    bob.join(task["name"])
    return alice, bob, task


def test_the_blob_directory_is_offered_for_a_local_store_only(env: Env) -> None:
    alice, _bob, _task = members(env)
    r = env.api.client(alice.token).get("/blobstore/local")
    if env.config.blob_store is None:
        assert r.status_code == 200 and Path(r.json()["blobs_dir"]) == (env.config.data_dir / "blobs").resolve(), r.text
    else:
        assert r.status_code == 404 and "s3 store" in r.json()["detail"], r.text


def test_large_upload_and_download_round_trip(env: Env, tmp_path: Path) -> None:
    alice, bob, task = members(env)
    data = os.urandom(DIRECT_MIN_BYTES + DIRECT_PART_BYTES + 4321)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    seen: list[int] = []
    ref = env.client(alice).upload_blob(task["name"], src, progress=lambda done, total: seen.append(done))
    assert ref == {"sha256": sha(data), "size": len(data)}
    assert seen[-1] == len(data)
    assert env.store.size(sha(data)) == len(data)
    assert list(env.store.uploads_dir.iterdir()) == [], "nothing is left staged"
    assert env.client(bob).download_blob(task["name"], sha(data)) == data
    raw = bob.http.get(f"/tasks/{task['name']}/blobs/{sha(data)}")
    if env.store.presigns:
        # The hub hands out a signed URL to the object store; the bytes never pass through it.
        assert raw.status_code == 307
        endpoint = str(env.config.blob_store).split("endpoint=")[1].split("&")[0]
        assert raw.headers["location"].startswith(endpoint)
    else:
        assert raw.status_code == 200 and raw.content == data


def test_direct_upload_goes_to_the_object_store_and_resumes(env: Env) -> None:
    alice, _, task = members(env)
    name = task["name"]
    data = os.urandom(DIRECT_PART_BYTES + 1000)
    r = alice.http.post(f"/tasks/{name}/uploads", json={"sha256": sha(data), "size": len(data)})
    assert r.status_code == 201, r.text
    start = r.json()
    uid = start["upload_id"]
    if not env.store.presigns:
        assert "direct" not in start, "a local store takes uploads through the hub"
        return
    parts = start["direct"]["parts"]
    assert [(p["offset"], p["size"]) for p in parts] == [(0, DIRECT_PART_BYTES), (DIRECT_PART_BYTES, 1000)]
    # The hub refuses bytes for a direct upload, and keeps nothing of them.
    r = alice.http.put(f"/tasks/{name}/uploads/{uid}", params={"offset": 0}, content=b"x" * 10,
                       headers={"content-type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 409 and "straight to the object store" in r.json()["detail"]
    assert list(env.store.uploads_dir.iterdir()) == []
    assert httpx.put(parts[0]["url"], content=data[:DIRECT_PART_BYTES]).status_code == 200
    r = alice.http.post(f"/tasks/{name}/uploads/{uid}/complete")
    assert r.status_code == 409 and "1000 bytes are missing" in r.json()["detail"]
    status = alice.http.get(f"/tasks/{name}/uploads/{uid}").json()
    assert status["offset"] == DIRECT_PART_BYTES and len(status["direct"]["parts"]) == 2
    # HubClient picks up where the first part left off.
    ref = env.client(alice).upload_blob(name, data)
    assert ref["sha256"] == sha(data)
    assert b"".join(env.store.read_range(sha(data))) == data


def test_a_direct_upload_whose_bytes_do_not_match_is_discarded(env: Env) -> None:
    alice, _, task = members(env)
    name = task["name"]
    data = os.urandom(DIRECT_PART_BYTES + 10)
    start = alice.http.post(f"/tasks/{name}/uploads", json={"sha256": sha(data), "size": len(data)}).json()
    if not env.store.presigns:
        assert "direct" not in start
        return
    parts = start["direct"]["parts"]
    assert httpx.put(parts[0]["url"], content=data[:DIRECT_PART_BYTES]).status_code == 200
    assert httpx.put(parts[1]["url"], content=b"y" * 10).status_code == 200
    r = alice.http.post(f"/tasks/{name}/uploads/{start['upload_id']}/complete")
    assert r.status_code == 422 and "sha256 mismatch" in r.json()["detail"]
    assert alice.http.get(f"/tasks/{name}/blobs/{sha(data)}").status_code == 404
    assert alice.http.get(f"/tasks/{name}/uploads/{start['upload_id']}").status_code == 404
    assert list(env.store.iter_blobs()) == []


def _put_round(c: HubClient, task: str, number: int, status: str) -> None:
    c.put_round(task, number, status=status, participants=[], started_at=datetime.now(UTC).isoformat(), metrics={})


def running_task(env: Env) -> tuple[User, User, dict[str, Any], HubClient, HubClient]:
    """Alice's task, running, with Bob admitted; and a HubClient for each."""
    alice, bob, task = members(env)
    r = alice.http.post(f"/tasks/{task['name']}/status", json={"status": "RUNNING", "reason": "test"})
    assert r.status_code == 200, r.text
    return alice, bob, task, env.client(alice), env.client(bob)


def test_gc_keeps_what_is_referenced_and_reclaims_the_rest(env: Env) -> None:
    alice, bob, task, a, b = running_task(env)
    name = task["name"]
    blobs = {k: os.urandom(300_000) for k in ("eval", "update1", "ckpt1", "ckpt2", "model", "update2")}
    digest = {k: sha(v) for k, v in blobs.items()}
    a.upload_blob(name, blobs["eval"])
    _put_round(a, name, 1, "running")
    b.send(name, sender=f"participant/{bob.name}", recipient="aggregator", kind="update", round=1,
           payload=blobs["update1"])  # fmt: skip
    a.put_checkpoint(name, 1, a.upload_blob(name, blobs["ckpt1"]), {})
    _put_round(a, name, 1, "complete")
    _put_round(a, name, 2, "running")
    b.send(name, sender=f"participant/{bob.name}", recipient="aggregator", kind="update", round=2,
           payload=blobs["update2"])  # fmt: skip
    a.put_checkpoint(name, 2, a.upload_blob(name, blobs["ckpt2"]), {})
    a.register_model(name, blob=a.upload_blob(name, blobs["model"]), metadata={}, contributors=[bob.name],
                     rounds=2, metrics={})  # fmt: skip
    # The same content as round 1's update, held by another task: its bytes must stay.
    other = alice.create_task()
    a.upload_blob(other["name"], blobs["update1"])

    report = collect(env.db, env.store, grace_s=0, upload_ttl_s=3600)
    assert report.task_refs == 2 and report.blobs == [digest["ckpt1"]]

    def held(key: str) -> int:
        return alice.http.get(f"/tasks/{name}/blobs/{digest[key]}").status_code

    assert held("update1") == 404 and env.store.exists(digest["update1"]), "only the reference of task 1 went"
    assert held("ckpt1") == 404 and not env.store.exists(digest["ckpt1"])
    for key in ("eval", "ckpt2", "model", "update2"):
        assert held(key) in (200, 307) and env.store.exists(digest[key]), key
    again = collect(env.db, env.store, grace_s=0, upload_ttl_s=3600)
    assert again.task_refs == 0 and again.blobs == [], "a second pass finds nothing more"

    # Ending the task triggers the hub's own pass: only the checkpoint and the model stay.
    r = alice.http.post(f"/tasks/{name}/status", json={"status": "COMPLETE", "reason": "done"})
    assert r.status_code == 200, r.text
    wait_for(lambda: not env.store.exists(digest["eval"]), 30, "the pass on task end")
    assert not env.store.exists(digest["update2"])
    assert env.store.exists(digest["ckpt2"]) and env.store.exists(digest["model"])
    model_id = a.list_models(name)[0]["id"]
    assert a.download_model(model_id, env.config.data_dir / "m.safetensors").read_bytes() == blobs["model"]
    checkpoint = a.get_checkpoint(name)
    assert checkpoint is not None and checkpoint["blob"]["sha256"] == digest["ckpt2"]


def test_gc_keeps_the_blobs_the_latest_checkpoint_state_names(env: Env) -> None:
    """A strategy's optimiser moments travel as a blob named in the checkpoint state: the
    latest checkpoint's stay for --resume, a superseded checkpoint's go with it."""
    alice, _, task = members(env)
    name = task["name"]
    a = env.client(alice)
    r = alice.http.post(f"/tasks/{name}/status", json={"status": "RUNNING", "reason": "test"})
    assert r.status_code == 200, r.text
    blobs = {k: os.urandom(200_000) for k in ("ckpt1", "moments1", "ckpt2", "moments2")}
    digest = {k: sha(v) for k, v in blobs.items()}
    for n in (1, 2):
        _put_round(a, name, n, "running")
        moments = a.upload_blob(name, blobs[f"moments{n}"])
        a.put_checkpoint(name, n, a.upload_blob(name, blobs[f"ckpt{n}"]), {"strategy": {"blob": moments}})
        _put_round(a, name, n, "complete")

    collect(env.db, env.store, grace_s=0, upload_ttl_s=3600)
    assert env.store.exists(digest["ckpt2"]) and env.store.exists(digest["moments2"])
    assert not env.store.exists(digest["ckpt1"]) and not env.store.exists(digest["moments1"])
    state = a.get_checkpoint(name)["state"]
    assert state["strategy"]["blob"]["sha256"] == digest["moments2"]
    assert a.download_blob(name, digest["moments2"]) == blobs["moments2"]

    r = alice.http.post(f"/tasks/{name}/status", json={"status": "FAILED", "reason": "ended"})
    assert r.status_code == 200, r.text
    collect(env.db, env.store, grace_s=0, upload_ttl_s=3600)
    assert env.store.exists(digest["moments2"]), "the latest checkpoint keeps what it names after the task ends"


def test_a_new_round_reclaims_what_only_finished_rounds_name(env: Env) -> None:
    alice, bob, task, a, b = running_task(env)
    name, tid = task["name"], int(task["id"])
    blobs = {k: os.urandom(300_000) for k in ("eval", "update1", "model1", "update2", "model2")}
    digest = {k: sha(v) for k, v in blobs.items()}
    a.upload_blob(name, blobs["eval"], private=True)  # named by nothing: stays while the task runs
    for n in (1, 2):
        _put_round(a, name, n, "running")
        b.send(name, sender=f"participant/{bob.name}", recipient="aggregator", kind="update", round=n,
               payload=blobs[f"update{n}"])  # fmt: skip
        a.put_checkpoint(name, n, a.upload_blob(name, blobs[f"model{n}"]), {})
    before = {b.sha256 for b in env.store.iter_blobs()}

    report = reclaim_finished_rounds(env.db, env.store, tid, datetime.now(UTC))
    assert sorted(report.blobs) == sorted([digest["update1"], digest["model1"]])
    assert report.task_refs == 2 and report.bytes == 600_000
    assert {b.sha256 for b in env.store.iter_blobs()} == before - set(report.blobs)
    for key in ("eval", "update2", "model2"):
        assert alice.http.get(f"/tasks/{name}/blobs/{digest[key]}").status_code in (200, 307), key
    with pytest.raises(BlobGone) as gone:
        a.download_blob(name, digest["update1"])
    assert gone.value.status == 404
    again = reclaim_finished_rounds(env.db, env.store, tid, datetime.now(UTC))
    assert again.blobs == [] and again.task_refs == 0, "a second pass finds nothing more"


def test_reclaiming_finished_rounds_spares_what_is_sent_again_or_named_elsewhere(env: Env) -> None:
    alice, bob, task, a, b = running_task(env)
    name, tid = task["name"], int(task["id"])
    blobs = {k: os.urandom(300_000) for k in ("resent", "shared")}  # over the inline limit: blobs
    digest = {k: sha(v) for k, v in blobs.items()}
    _put_round(a, name, 1, "running")
    for key in blobs:
        b.send(name, sender=f"participant/{bob.name}", recipient="aggregator", kind="update", round=1,
               payload=blobs[key])  # fmt: skip
    other = alice.create_task()
    a.upload_blob(other["name"], blobs["shared"])  # another task holds the same bytes
    _put_round(a, name, 2, "running")
    cutoff = datetime.now(UTC)
    a.upload_blob(name, blobs["resent"])  # recorded again after the cutoff: renewed, kept

    report = reclaim_finished_rounds(env.db, env.store, tid, cutoff)
    assert report.task_refs == 1 and report.blobs == [], "only task 1's reference to the shared bytes went"
    assert env.store.exists(digest["shared"]) and env.store.exists(digest["resent"])
    assert alice.http.get(f"/tasks/{name}/blobs/{digest['shared']}").status_code == 404
    assert alice.http.get(f"/tasks/{name}/blobs/{digest['resent']}").status_code in (200, 307)
    later = reclaim_finished_rounds(env.db, env.store, tid, datetime.now(UTC))
    assert later.blobs == [digest["resent"]], "once older than the next cutoff, it goes too"

    # An ended task is the periodic pass's business: nothing is reclaimed here.
    r = alice.http.post(f"/tasks/{name}/status", json={"status": "FAILED", "reason": "ended"})
    assert r.status_code == 200, r.text
    assert reclaim_finished_rounds(env.db, env.store, tid, datetime.now(UTC)).task_refs == 0


def test_the_hub_reclaims_finished_rounds_as_rounds_open(blob_store_url: str | None, tmp_path: Path) -> None:  # noqa: F811
    """With no grace, what a round recorded goes when the round after next opens; content
    recorded again meanwhile waits one more round."""
    config = fast_config(tmp_path / "hub", blob_store=blob_store_url, gc_interval_s=3600, gc_round_grace_s=0,
                         gc_round_every_s=0)
    with EmbeddedHub(config=config) as hub:
        api = Api(hub.url)
        alice, bob = api.user("alice"), api.user("bob")
        task = alice.create_task()
        name = task["name"]
        bob.join(name)
        r = alice.http.post(f"/tasks/{name}/status", json={"status": "RUNNING", "reason": "test"})
        assert r.status_code == 200, r.text
        store = open_blob_store(blob_store_url, config.data_dir)
        with HubClient(hub.url, alice.token) as a, HubClient(hub.url, bob.token) as b:
            updates = {n: os.urandom(300_000) for n in range(1, 6)}  # over the inline limit: blobs
            resent = os.urandom(300_000)

            def round_(n: int) -> None:
                _put_round(a, name, n, "running")
                b.send(name, sender=f"participant/{bob.name}", recipient="aggregator", kind="update", round=n,
                       payload=updates[n])  # fmt: skip

            round_(1)
            round_(2)
            b.send(name, sender=f"participant/{bob.name}", recipient="aggregator", kind="update", round=2,
                   payload=resent)  # fmt: skip
            round_(3)
            wait_for(lambda: not store.exists(sha(updates[1])), 30, "round 1's update to go when round 3 opens")
            a.upload_blob(name, resent)  # round 2's bytes, recorded again in round 3
            round_(4)
            wait_for(lambda: not store.exists(sha(updates[2])), 30, "round 2's update to go when round 4 opens")
            assert store.exists(sha(resent)), "recorded again since round 3 opened: kept"
            assert store.exists(sha(updates[3])) and store.exists(sha(updates[4]))
            round_(5)
            wait_for(lambda: not store.exists(sha(resent)), 30, "the bytes recorded again to go when round 5 opens")
            assert not store.exists(sha(updates[3])) and store.exists(sha(updates[4]))
        api.close()


def test_round_passes_are_spaced_by_what_they_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task opening rounds back to back gets a pass at once, then passes that take at most
    ROUND_PASS_SHARE of the time: after a pass of d seconds the next waits d / share - d."""
    import time

    from fedpact.hub import blobgc

    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    spans: list[tuple[float, float]] = []

    def slow_pass(*_args: Any) -> blobgc.GcReport:  # a pass over a slow disk: the cost is what matters here
        started = time.monotonic()
        time.sleep(0.05)
        spans.append((started, time.monotonic()))
        return blobgc.GcReport()

    monkeypatch.setattr(blobgc, "reclaim_finished_rounds", slow_pass)
    gc = blobgc.Collector(db, open_blob_store(None, tmp_path), interval_s=3600, grace_s=3600, upload_ttl_s=3600)
    gc.start()
    try:
        deadline = time.monotonic() + 30
        while len(spans) < 3 and time.monotonic() < deadline:
            gc.round_opened(7)  # a round every 10 ms
            time.sleep(0.01)
    finally:
        gc.stop()
        db.dispose()
    assert len(spans) >= 3, spans
    assert gc.round_passes == len(spans) and gc.round_pass_seconds >= 0.05 * len(spans)
    for (start, end), (later, _) in zip(spans, spans[1:]):
        assert later - end >= (end - start) * (1 / blobgc.ROUND_PASS_SHARE - 1), spans


def test_gc_leaves_young_blobs_alone(env: Env) -> None:
    orphan = os.urandom(1000)
    env.store.put_stream(sha(orphan), io.BytesIO(orphan))
    assert collect(env.db, env.store, grace_s=3600, upload_ttl_s=3600).blobs == []
    assert env.store.exists(sha(orphan))
    assert collect(env.db, env.store, grace_s=0, upload_ttl_s=3600).blobs == [sha(orphan)]
    assert not env.store.exists(sha(orphan))


def test_abandoned_uploads_expire_with_their_bytes(env: Env) -> None:
    alice, _, task = members(env)
    name = task["name"]
    data = os.urandom(DIRECT_PART_BYTES + 5)
    start = alice.http.post(f"/tasks/{name}/uploads", json={"sha256": sha(data), "size": len(data)}).json()
    uid = start["upload_id"]
    if start.get("direct"):
        assert httpx.put(start["direct"]["parts"][0]["url"], content=data[:DIRECT_PART_BYTES]).status_code == 200
    else:
        r = alice.http.put(f"/tasks/{name}/uploads/{uid}", params={"offset": 0}, content=data[:1000],
                           headers={"content-type": "application/octet-stream"})  # fmt: skip
        assert r.status_code == 200
    assert collect(env.db, env.store, grace_s=0, upload_ttl_s=3600).uploads == 0
    assert alice.http.get(f"/tasks/{name}/uploads/{uid}").status_code == 200
    assert collect(env.db, env.store, grace_s=0, upload_ttl_s=0).uploads == 1
    assert alice.http.get(f"/tasks/{name}/uploads/{uid}").status_code == 404
    assert not env.store.partial_path(uid).exists()
    assert list(env.store.stale_direct_uploads(datetime.now(UTC).timestamp() + 60)) == []


def test_a_large_update_goes_in_chunks_holding_one_copy(env: Env) -> None:
    alice, bob, task = members(env)
    name = task["name"]
    payload = bytearray(os.urandom(ONE_SHOT_LIMIT + 3 * CHUNK_SIZE))
    b = env.client(bob)
    requests: list[str] = []
    b._http.event_hooks["request"].append(lambda req: requests.append(f"{req.method} {req.url.path}"))
    b._direct.event_hooks["request"].append(lambda req: requests.append(f"{req.method} direct"))
    tracemalloc.start()
    try:
        msg = b.send(name, sender=f"participant/{bob.name}", recipient="aggregator", kind="update", round=1,
                     payload=payload)  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One copy (the caller's) plus about a chunk in flight, not a second copy of the model.
    assert peak < len(payload) // 2, f"peak {peak} bytes while sending {len(payload)}"
    assert not any("/messages/raw" in r for r in requests)
    pieces = [r for r in requests if r.startswith("PUT") and ("/uploads/" in r or r.endswith("direct"))]
    assert len(pieces) >= 3, requests
    assert msg["blob"]["sha256"] == sha(bytes(payload))
    got = env.client(alice).message_payload(name, msg)
    assert got == bytes(payload)


def test_hub_refuses_an_unknown_blob_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no known backend"):
        EmbeddedHub(config=fast_config(tmp_path / "hub", blob_store="gopher://x")).start()


def test_upload_errors_from_hub_client_are_precise(env: Env) -> None:
    _, _, task = members(env)
    outsider = env.client(env.api.user("eve"))
    with pytest.raises(HubError) as exc:
        outsider.upload_blob(task["name"], os.urandom(ONE_SHOT_LIMIT + 1))
    assert exc.value.status == 403
    assert list(env.store.iter_blobs()) == []


def _serve(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fedpact", "hub", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_fedpact_hub_takes_its_blob_store_from_the_flag_or_the_variable(
    seaweedfs: SeaweedFS, tmp_path: Path, how: str  # noqa: F811
) -> None:
    prefix = f"cli{how}"
    url = seaweedfs.url("fedpact-tests", prefix)
    args = ["--data-dir", str(tmp_path / "hub")]
    env = {**os.environ}
    if how == "flag":
        args += ["--blob-store", url]
    else:
        env["FEDPACT_BLOB_STORE"] = url
    proc, hub_url = _serve(args, env)
    try:
        wait_for(lambda: _healthy(hub_url), 30, "the hub")
        api = Api(hub_url)
        alice = api.user("alice")
        task = alice.create_task()
        data = os.urandom(DIRECT_MIN_BYTES)
        with HubClient(hub_url, alice.token) as c:
            c.upload_blob(task["name"], data)
        bucket = open_blob_store(url, tmp_path / "view")
        assert b"".join(bucket.read_range(sha(data))) == data
        assert not (tmp_path / "hub" / "blobs" / sha(data)[:2]).exists()
        api.close()
    finally:
        proc.terminate()
        proc.wait(15)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_fedpact_hub_stops_on_a_bad_blob_store_url(tmp_path: Path) -> None:
    proc, _ = _serve(["--data-dir", str(tmp_path / "hub"), "--blob-store", "s3://bucket?endpiont=x"], {**os.environ})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"unknown S3 blob store option(s) ['endpiont']" in out
    assert not (tmp_path / "hub" / "hub.db").exists(), "nothing was created"


def test_a_direct_upload_whose_parts_expired_starts_over(env: Env) -> None:
    alice, _, task = members(env)
    name = task["name"]
    data = os.urandom(DIRECT_MIN_BYTES + 3)
    start = alice.http.post(f"/tasks/{name}/uploads", json={"sha256": sha(data), "size": len(data)}).json()
    if not env.store.presigns:
        assert "direct" not in start
        return
    env.store.direct_upload_abort(start["upload_id"])
    r = alice.http.get(f"/tasks/{name}/uploads/{start['upload_id']}")
    assert r.status_code == 409 and "gone from the object store" in r.json()["detail"]
    r = alice.http.post(f"/tasks/{name}/uploads/{start['upload_id']}/complete")
    assert r.status_code == 409 and alice.http.get(f"/tasks/{name}/blobs/{sha(data)}").status_code == 404
    assert env.client(alice).upload_blob(name, data)["sha256"] == sha(data)
    assert b"".join(env.store.read_range(sha(data))) == data


def test_a_federation_completes_while_gc_runs_constantly(blob_store_url: str | None, tmp_path: Path) -> None:  # noqa: F811
    """GC every 0.2 s with no grace period must not take anything a running round needs."""
    from federation_helpers import (
        Runner,
        digits_definition,
        start_aggregator,
        start_participant,
    )

    from fedpact.data.builtin import digits_federation
    from fedpact.runtime import DataParticipant

    parts, test = digits_federation(3, test_fraction=0.25, seed=0)
    config = fast_config(tmp_path / "hub", blob_store=blob_store_url, gc_grace_s=0, gc_interval_s=0.2)
    with EmbeddedHub(config=config) as hub:
        clients = {}
        for name in ("alice", "bob", "carol", "dave"):
            c = HubClient(hub.url, retry_for_s=10)
            c.register(name, "correct horse battery", "Org")
            c.login(name, "correct horse battery")
            clients[name] = c
        # An MLP big enough (about 600 kB) that weights and updates travel as blobs.
        definition = digits_definition(rounds=3, model={"name": "mlp", "params": {"hidden": [2048]}})
        clients["alice"].create_task("digits", definition)
        run = Runner()
        for name, data in zip(("bob", "carol", "dave"), parts):
            start_participant(run, clients[name], "digits", DataParticipant(data), name, model_dir=tmp_path / name)
        start_aggregator(run, clients["alice"], "digits", eval_data=test)
        run.join(240)
        assert not run.errors, run.errors
        assert run.results["aggregator"].status == "COMPLETE" and run.results["aggregator"].rounds_completed == 3
        model = clients["alice"].list_models("digits")[0]
        checkpoint = clients["alice"].get_checkpoint("digits")
        assert checkpoint is not None
        store = open_blob_store(blob_store_url, config.data_dir)
        keep = {model["sha256"], checkpoint["blob"]["sha256"]}
        wait_for(lambda: {b.sha256 for b in store.iter_blobs()} == keep, 30, "GC to leave only the checkpoint and model")
        path = clients["bob"].download_model(model["id"], tmp_path / "m.safetensors")
        assert path.stat().st_size == model["size"]
        for c in clients.values():
            c.close()


def test_fedpact_hub_stops_when_the_object_store_refuses_it(seaweedfs: SeaweedFS, tmp_path: Path) -> None:  # noqa: F811
    url = f"s3://fedpact-tests?endpoint={seaweedfs.endpoint}&access_key=fedpact-test&secret_key=not-the-secret"
    proc, _ = _serve(["--data-dir", str(tmp_path / "hub"), "--blob-store", url], {**os.environ})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert b"cannot open it" in out and b"not-the-secret" not in out, out
    assert not (tmp_path / "hub" / "hub.db").exists()


def test_a_large_update_resumes_after_the_connection_breaks(tmp_path: Path) -> None:
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as hub:
        api = Api(hub.url)
        alice, bob = api.user("alice"), api.user("bob")
        task = alice.create_task()
        bob.join(task["name"])
        payload = os.urandom(ONE_SHOT_LIMIT + 8 * MIB)
        port = hub.port
        proxy = TcpRelay(port, cut_up_after=28 * MIB)
        try:
            with HubClient(f"http://127.0.0.1:{proxy.port}", bob.token, retry_for_s=20) as b:
                msg = b.send(task["name"], sender=f"participant/{bob.name}", recipient="aggregator", kind="update",
                             round=1, payload=payload)  # fmt: skip
        finally:
            proxy.close()
        assert proxy.cut, "the connection was cut mid-upload"
        # Resumed from the hub's offset: at most the chunk in flight is sent twice, not everything.
        assert proxy.up < len(payload) + CHUNK_SIZE + MIB, proxy.up
        with HubClient(hub.url, alice.token) as a:
            assert a.message_payload(task["name"], msg) == payload
        api.close()


def test_health_names_the_blob_store_backend(env: Env) -> None:
    body = httpx.get(f"{env.hub.url}/api/v1/health").json()
    expected = "s3" if env.config.blob_store else "local"
    assert body["backends"]["blob_store"] == {"kind": expected, "status": "ok", "detail": ""}
    assert body["status"] == "ok"


def test_health_says_degraded_when_the_object_store_goes_away(tmp_path: Path) -> None:
    from seaweedfs import start_seaweedfs

    server = start_seaweedfs(tmp_path / "weed")
    try:
        config = fast_config(tmp_path / "hub", blob_store=server.url("fedpact-health"))
        with EmbeddedHub(config=config) as hub:
            assert httpx.get(f"{hub.url}/api/v1/health").json()["backends"]["blob_store"]["status"] == "ok"
            server.stop()
            body = httpx.get(f"{hub.url}/api/v1/health", timeout=30).json()
            assert body["status"] == "degraded"
            assert body["backends"]["blob_store"]["kind"] == "s3"
            assert body["backends"]["blob_store"]["status"] == "down"
            assert "bucket 'fedpact-health' unreachable" in body["backends"]["blob_store"]["detail"]
            assert body["backends"]["database"]["status"] == "ok"
    finally:
        server.stop()


def test_a_small_upload_session_may_cross_replicas_on_s3(seaweedfs: SeaweedFS, tmp_path: Path) -> None:  # noqa: F811
    """Behind a load balancer the start, the parts and the completion may each reach another replica."""
    from services import postgres_database

    url = seaweedfs.url("fedpact-tests", f"x{os.urandom(4).hex()}")
    with postgres_database() as db_url:
        a_config = fast_config(tmp_path / "a", database_url=db_url, blob_store=url)
        b_config = fast_config(tmp_path / "b", database_url=db_url, blob_store=url)
        with EmbeddedHub(config=a_config) as a, EmbeddedHub(config=b_config) as b:
            api = Api(a.url)
            alice = api.user("alice")
            auth = {"Authorization": f"Bearer {alice.token}"}
            task = alice.create_task()["name"]
            data = os.urandom(300_000)
            body = {"sha256": sha(data), "size": len(data)}
            start = httpx.post(f"{a.url}/api/v1/tasks/{task}/uploads", json=body, headers=auth).json()
            (part,) = start["direct"]["parts"]
            assert httpx.put(part["url"], content=data).status_code == 200
            status = httpx.get(f"{b.url}/api/v1/tasks/{task}/uploads/{start['upload_id']}", headers=auth)
            assert status.json()["offset"] == len(data)
            done = httpx.post(f"{b.url}/api/v1/tasks/{task}/uploads/{start['upload_id']}/complete", headers=auth)
            assert done.status_code == 201, done.text
            for hub in (a, b):
                got = httpx.get(f"{hub.url}/api/v1/tasks/{task}/blobs/{sha(data)}", headers=auth,
                                follow_redirects=True)
                assert got.content == data
            assert not any((tmp_path / "a" / "uploads").iterdir()) and not any((tmp_path / "b" / "uploads").iterdir())

            empty = {"sha256": sha(b""), "size": 0}
            start = httpx.post(f"{a.url}/api/v1/tasks/{task}/uploads", json=empty, headers=auth).json()
            done = httpx.post(f"{b.url}/api/v1/tasks/{task}/uploads/{start['upload_id']}/complete", headers=auth)
            assert done.status_code == 201, done.text
            api.close()


def test_a_streamed_model_update_resumes_after_the_connection_breaks(tmp_path: Path) -> None:
    """The participant's own path: an update streamed from its arrays (no packed copy) resumes too."""
    import numpy as np

    from fedpact.runtime import messages as m

    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as hub:
        api = Api(hub.url)
        alice, bob = api.user("alice"), api.user("bob")
        task = alice.create_task()
        bob.join(task["name"])
        weights = {"w.weight": np.random.default_rng(5).standard_normal((10, 1_100_000)).astype(np.float32)}
        payload = m.pack_parts({"round_id": "r1", "num_samples": 3}, weights)
        assert len(payload) > ONE_SHOT_LIMIT
        port = hub.port
        proxy = TcpRelay(port, cut_up_after=20 * MIB)
        try:
            with HubClient(f"http://127.0.0.1:{proxy.port}", bob.token, retry_for_s=20) as b:
                msg = b.send(task["name"], sender=f"participant/{bob.name}", recipient="aggregator", kind="update",
                             round=1, payload=payload)  # fmt: skip
        finally:
            proxy.close()
        assert proxy.cut, "the connection was cut mid-upload"
        assert proxy.up < len(payload) + CHUNK_SIZE + MIB, proxy.up
        assert msg["blob"] == {"sha256": payload.sha256(), "size": len(payload)}
        with HubClient(hub.url, alice.token) as a:
            decoded = a.message_tensors(task["name"], msg)
        assert decoded is not None
        assert m.meta_of(decoded[0]) == {"round_id": "r1", "num_samples": 3}
        assert np.array_equal(decoded[1]["w.weight"], weights["w.weight"])
        api.close()


def test_a_mid_sized_update_bypasses_the_hub_only_when_the_store_presigns(env: Env) -> None:
    """Payloads from PRESIGNED_MIN_BYTES to ONE_SHOT_LIMIT: straight to S3; through the hub in one request on local disk."""
    from fedpact.client.hub import PRESIGNED_MIN_BYTES

    alice, bob, task = members(env)
    name = task["name"]
    b = env.client(bob)
    to_hub: list[tuple[str, int]] = []
    to_store: list[int] = []
    b._http.event_hooks["request"].append(
        lambda req: to_hub.append((f"{req.method} {req.url.path}", int(req.headers.get("content-length", 0) or 0))))
    b._direct.event_hooks["request"].append(lambda req: to_store.append(int(req.headers.get("content-length", 0))))
    sent = []
    for k in range(2):
        payload = os.urandom(PRESIGNED_MIN_BYTES + 1000 + k)
        msg = b.send(name, sender=f"participant/{bob.name}", recipient="aggregator", kind="update", round=1,
                     payload=payload)  # fmt: skip
        sent.append((msg, payload))
    through_hub = sum(n for _, n in to_hub)
    if env.store.presigns:
        assert b.store_presigns is True
        assert sum(to_store) == sum(len(p) for _, p in sent)
        assert through_hub < 64 * 1024, to_hub
        assert not any("/messages/raw" in r for r, _ in to_hub)
    else:
        # The first send learns that the store does not presign (a chunked upload through the
        # hub); from then on such payloads take the one-request path.
        assert b.store_presigns is False and to_store == []
        assert [r for r, _ in to_hub if "/messages/raw" in r] == [f"POST /api/v1/tasks/{name}/messages/raw"]
    a = env.client(alice)
    for msg, payload in sent:
        assert a.message_payload(name, msg) == payload
