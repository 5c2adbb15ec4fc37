"""A client on the hub's machine reads its task's blobs from the hub's directory
(client/localblobs.py, hub/routes/localstore.py): not one byte through the hub, the same
arrays, every byte still checked (by the checksum the hub attached to the file as it
verified it, else by the sha256), and the hub asked as before whenever the file is not
there or the directory cannot be shown to be the hub's."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from sqlalchemy import delete

from fedpact.client.hub import BlobGone, HubClient
from fedpact.client.localblobs import LocalBlobs, on_this_machine
from fedpact.common import checksums
from fedpact.common.errors import FedpactError
from fedpact.common.tensors import encode_parts
from fedpact.hub.blobstore_local import TOKEN_FILE
from fedpact.hub.server import EmbeddedHub
from fedpact.hub.tables import Blob
from hub_fixtures import Api, User, fast_config

WEIGHTS = {
    "weight": np.random.default_rng(7).standard_normal((10, 20_000)).astype(np.float32),
    "bias": np.arange(10, dtype=np.float32),
}


class Stored:
    """A hub holding WEIGHTS as a blob of alice's task, which bob joined."""

    def __init__(self, hub: EmbeddedHub, api: Api, alice: User, bob: User, task: dict[str, Any], ref: dict[str, Any]):
        self.hub, self.api, self.alice, self.bob, self.task, self.ref = hub, api, alice, bob, task, ref
        self.clients: list[HubClient] = []

    def client(self, user: User) -> tuple[HubClient, list[str]]:
        """A client of ``user`` and the URLs of the downloads the hub served it."""
        c = HubClient(self.hub.url, user.token, retry_for_s=5)
        served: list[str] = []
        c._bulk.hooks.append(lambda method, url, headers: served.append(url))
        self.clients.append(c)
        return c, served

    @property
    def blobs_dir(self) -> Path:
        return self.hub.config.data_dir / "blobs"

    def file(self) -> Path:
        sha = self.ref["sha256"]
        return self.blobs_dir / sha[:2] / sha


@pytest.fixture()
def stored(tmp_path: Path) -> Iterator[Stored]:
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as hub:
        api = Api(hub.url)
        alice, bob = api.user("alice"), api.user("bob")
        task = alice.create_task()
        bob.join(task["name"])
        with HubClient(hub.url, alice.token) as c:
            ref = c.upload_blob(task["name"], encode_parts(WEIGHTS))
        s = Stored(hub, api, alice, bob, task, ref)
        yield s
        for c in s.clients:
            c.close()
        api.close()


def same(arrays: dict[str, np.ndarray]) -> bool:
    return set(arrays) == set(WEIGHTS) and all(np.array_equal(arrays[k], v) for k, v in WEIGHTS.items())


def test_the_creator_reads_its_tasks_blobs_from_the_hubs_directory(stored: Stored) -> None:
    c, served = stored.client(stored.alice)
    c.read_blobs_locally(stored.task["name"])
    progress: list[tuple[int, int]] = []
    _meta, arrays = c.download_tensors(stored.task["name"], stored.ref["sha256"], stored.ref["size"],
                                       progress=lambda done, total: progress.append((done, total)))
    assert same(arrays)
    assert served == [], "the bytes came from the file, not from the hub"
    assert progress[-1] == (stored.ref["size"], stored.ref["size"])
    assert c.download_blob(stored.task["name"], stored.ref["sha256"]) == stored.file().read_bytes()
    assert served == []
    twin = c.twin()
    stored.clients.append(twin)
    assert same(twin.download_tensors(stored.task["name"], stored.ref["sha256"], stored.ref["size"])[1])


def test_without_asking_for_it_a_client_downloads_through_the_hub(stored: Stored) -> None:
    c, served = stored.client(stored.alice)
    assert same(c.download_tensors(stored.task["name"], stored.ref["sha256"], stored.ref["size"])[1])
    assert len(served) == 1
    # Another task's blobs are not read from the files because one task's are.
    c.read_blobs_locally("some-other-task")
    assert same(c.download_tensors(stored.task["name"], stored.ref["sha256"], stored.ref["size"])[1])
    assert len(served) == 2


def test_a_blob_whose_file_is_gone_is_asked_of_the_hub_which_says_so(stored: Stored) -> None:
    c, served = stored.client(stored.alice)
    c.read_blobs_locally(stored.task["name"])
    state = stored.hub.app.state.hub
    with state.db.session() as s:  # reclaimed, as a pass over finished rounds does
        s.execute(delete(Blob).where(Blob.sha256 == stored.ref["sha256"]))
        s.commit()
    state.blob_cache.discard(stored.ref["sha256"])
    stored.file().unlink()
    with pytest.raises(BlobGone):
        c.download_tensors(stored.task["name"], stored.ref["sha256"], stored.ref["size"])
    assert len(served) == 1, "the client asked the hub once the file was not there"


def test_the_hubs_file_carries_the_checksum_it_took_as_it_verified_the_bytes(stored: Stored) -> None:
    data = stored.file().read_bytes()
    assert hashlib.sha256(data).hexdigest() == stored.ref["sha256"]
    attached = os.getxattr(stored.file(), checksums.XATTR).decode()
    assert attached == f"xxh128:{xxhash.xxh3_128_hexdigest(data)}"


def test_a_file_changed_since_the_hub_verified_it_is_refused_by_its_checksum(stored: Stored) -> None:
    c, _served = stored.client(stored.alice)
    c.read_blobs_locally(stored.task["name"])
    data = bytearray(stored.file().read_bytes())
    data[-5] ^= 0xFF
    stored.file().write_bytes(bytes(data))  # the same file: its attribute stays
    with pytest.raises(FedpactError, match="does not match the checksum the hub attached to it"):
        c.download_blob(stored.task["name"], stored.ref["sha256"])


def test_a_file_without_the_checksum_is_checked_by_its_sha256(stored: Stored) -> None:
    """A file restored from a backup that kept no attributes, say: the sha256 decides."""
    c, served = stored.client(stored.alice)
    c.read_blobs_locally(stored.task["name"])
    good = stored.file().read_bytes()
    restore(stored.file(), good)
    with pytest.raises(OSError):
        os.getxattr(stored.file(), checksums.XATTR)
    assert same(c.download_tensors(stored.task["name"], stored.ref["sha256"], stored.ref["size"])[1])
    bad = bytearray(good)
    bad[-5] ^= 0xFF
    restore(stored.file(), bytes(bad))
    with pytest.raises(FedpactError, match="does not match its sha256"):
        c.download_blob(stored.task["name"], stored.ref["sha256"])
    assert served == [], "both reads were of the file"


def restore(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` as a new file (no attributes), as a restore from a backup would."""
    tmp = path.with_name(path.name + ".restored")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_a_directory_the_client_cannot_prove_is_the_hubs_is_not_read(stored: Stored) -> None:
    c, served = stored.client(stored.alice)
    c.read_blobs_locally(stored.task["name"])
    answer = c._call("GET", "/blobstore/local")
    assert LocalBlobs.verify(answer) is not None
    # What a client sees when the path names another directory than the hub's (a hub on
    # another machine behind a port forward): a token file that holds something else.
    (stored.blobs_dir / TOKEN_FILE).write_text("another directory's token")
    assert LocalBlobs.verify(answer) is None
    assert same(c.download_tensors(stored.task["name"], stored.ref["sha256"], stored.ref["size"])[1])
    assert len(served) == 1, "a token that does not match: the hub sends the bytes"
    for bad in ({}, {"blobs_dir": str(stored.blobs_dir), "token_file": "../x", "token": "t"},
                {"blobs_dir": str(stored.blobs_dir), "token_file": TOKEN_FILE, "token": ""}):
        assert LocalBlobs.verify(bad) is None, bad


def test_the_directory_is_told_only_to_logged_in_callers_on_the_hubs_machine(stored: Stored) -> None:
    own = stored.api.client(stored.bob.token)
    r = own.get("/blobstore/local")
    assert r.status_code == 200, r.text
    body = r.json()
    assert Path(body["blobs_dir"]) == stored.blobs_dir.resolve() and body["token_file"] == TOKEN_FILE
    assert (Path(body["blobs_dir"]) / TOKEN_FILE).read_text().strip() == body["token"]
    assert own.get("/blobstore/local").json()["token"] == body["token"], "one token per directory"
    # A caller behind a proxy on this machine is where the proxy says it is (uvicorn trusts
    # forwarded headers from 127.0.0.1).
    far = own.get("/blobstore/local", headers={"X-Forwarded-For": "203.0.113.7"})
    assert far.status_code == 404 and "own machine" in far.json()["detail"]
    assert stored.api.anonymous().get("/blobstore/local").status_code == 401


def test_only_hubs_on_a_loopback_address_are_asked() -> None:
    assert on_this_machine("http://127.0.0.1:8470") and on_this_machine("http://localhost:1")
    assert on_this_machine("https://[::1]:8470")
    assert not on_this_machine("https://hub.example.org") and not on_this_machine("http://10.0.0.5:8470")


def test_an_aggregator_beside_the_hub_reads_every_update_from_the_files(tmp_path: Path) -> None:
    """A whole federation: the participants download through the hub as remote machines
    would; the aggregator, on the hub's machine, reads the updates from the directory."""
    from federation_helpers import Runner, digits_definition, start_aggregator, start_participant

    from fedpact.data.builtin import digits_federation
    from fedpact.runtime import DataParticipant

    parts, test = digits_federation(2, test_fraction=0.25, seed=1)
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as hub:
        api = Api(hub.url)
        users = {name: api.user(name) for name in ("alice", "bob", "carol")}
        served: dict[str, list[str]] = {}
        clients: dict[str, HubClient] = {}
        for name, user in users.items():
            c = HubClient(hub.url, user.token, retry_for_s=10)
            served[name] = []
            c._bulk.hooks.append(lambda method, url, headers, seen=served[name]: seen.append(url))
            clients[name] = c
        # An MLP big enough (about 600 kB) that weights and updates travel as blobs.
        definition = digits_definition(rounds=2, quorum=2, model={"name": "mlp", "params": {"hidden": [2048]}})
        clients["alice"].create_task("digits", definition)
        run = Runner()
        for name, data in zip(("bob", "carol"), parts):
            start_participant(run, clients[name], "digits", DataParticipant(data), name, model_dir=tmp_path / name)
        start_aggregator(run, clients["alice"], "digits", eval_data=test)
        run.join(240)
        assert not run.errors, run.errors
        result = run.results["aggregator"]
        assert result.status == "COMPLETE" and result.rounds_completed == 2
        assert not [u for u in served["alice"] if "/blobs/" in u], "the aggregator read no update through the hub"
        for name in ("bob", "carol"):
            assert any("/blobs/" in u for u in served[name]), f"{name} downloads the global model from the hub"
        for c in clients.values():
            c.close()
        api.close()


def test_the_directorys_token_is_made_once_by_whoever_comes_first(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from fedpact.hub.blobstore_local import RETIRED_DIR, LocalBlobStore

    blobs = tmp_path / "blobs"
    stores = [LocalBlobStore(blobs, tmp_path / f"uploads-{i}") for i in range(8)]  # replicas sharing one directory
    with ThreadPoolExecutor(8) as pool:
        tokens = set(pool.map(lambda store: store.local_token(), stores))
    assert len(tokens) == 1 and (blobs / TOKEN_FILE).read_text() == tokens.pop()
    assert sorted(p.name for p in blobs.iterdir()) == [TOKEN_FILE, RETIRED_DIR], "no temporary file is left behind"
