"""A participant process holds one copy of the model plus a chunk, on each blob store.

The participant runs as its own OS process with tracemalloc on (NumPy reports its array
buffers to tracemalloc), takes part in two rounds of a 64 MB model and reports its peak
traced allocation and the request bytes it sent to the hub and to the object store. Its
``fit`` changes the received arrays in place, so everything above one model is the
runtime's own: downloading, decoding, packing and uploading.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedpact.client.hub import CHUNK_SIZE, HubClient
from fedpact.hub import EmbeddedHub
from fedpact.runtime import Progress, run_aggregator
from hub_fixtures import Api, fast_config
from seaweedfs import blob_store_url, seaweedfs  # noqa: F401

pytestmark = pytest.mark.e2e

FEATURES = 1_599_999
CLASSES = 10
MODEL_BYTES = (FEATURES * CLASSES + CLASSES) * 4  # 64,000,000: above the one-request limit, so chunked

WORKER = r"""
import json, sys, tracemalloc
from fedpact.client.hub import HubClient
from fedpact.runtime import Participant, Progress, run_participant

url, token, task = sys.argv[1:4]
sent = {"hub": 0, "direct": 0}

def counter(where):
    def hook(request):
        sent[where] += int(request.headers.get("content-length", 0) or 0)
    return hook

class InPlace(Participant):
    def num_samples(self):
        return 10

    def fit(self, weights, config, progress):
        for w in weights.values():
            w += w.dtype.type(1.0)  # in place: the model is held once by the participant's own code
        return weights, 10, {}

with HubClient(url, token, retry_for_s=60, timeout=120) as client:
    client._http.event_hooks["request"].append(counter("hub"))
    client._direct.event_hooks["request"].append(counter("direct"))
    client.me()
    tracemalloc.start()
    result = run_participant(client, task, InPlace(), progress=Progress(quiet=True), poll_wait=1.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
print("RESULT " + json.dumps({"status": result.status, "rounds": result.rounds_trained, "peak": peak, **sent}))
"""


def definition() -> dict[str, Any]:
    return {
        "model": {"name": "softmax_regression"},
        "algorithm": {"name": "fedavg"},
        "rounds": 2,
        "local_epochs": 1,
        "batch_size": 32,
        "learning_rate": 0.1,
        "quorum": 1,
        "min_participants": 1,
        "round_timeout_s": 120,
        "admission": "open",
        "data": {"kind": "tabular", "features": FEATURES, "label": "label", "classes": list(range(CLASSES))},
    }


def test_a_participant_process_holds_one_model_plus_a_chunk(
    blob_store_url: str | None, tmp_path: Path  # noqa: F811
) -> None:
    config = fast_config(tmp_path / "hub", blob_store=blob_store_url)
    with EmbeddedHub(config=config) as hub:
        api = Api(hub.url)
        alice, bob = api.user("alice"), api.user("bob")
        task = alice.create_task(definition=definition())
        worker = subprocess.Popen([sys.executable, "-c", WORKER, hub.url, bob.token, task["name"]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            with HubClient(hub.url, alice.token, retry_for_s=60, timeout=120) as a:
                result = run_aggregator(a, task["name"], progress=Progress(quiet=True), poll_wait=0.5,
                                        quorum_timeout_s=120)  # fmt: skip
                out, err = worker.communicate(timeout=180)
                model = a.list_models(task["name"])[-1]
                metadata, weights = a.download_tensors(task["name"], model["sha256"], model["size"])
        finally:
            if worker.poll() is None:
                worker.kill()
            api.close()
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, err[-3000:]
    report = json.loads(line[len("RESULT ") :])
    assert result.status == "COMPLETE" and report["status"] == "COMPLETE"
    assert report["rounds"] == [1, 2]
    # The model the aggregator stored is the participant's work: the initial weights + 1 per round.
    assert weights["weight"].shape == (CLASSES, FEATURES) and "fedpact" in metadata
    assert np.allclose(weights["bias"], 2.0)
    # The measurement sees the model (the one copy the participant must hold) ...
    assert report["peak"] >= MODEL_BYTES, report
    # ... and nothing like a second one: downloading, decoding, packing and uploading add chunks.
    assert report["peak"] <= MODEL_BYTES + 2 * CHUNK_SIZE, report
    uploaded = report["hub"] + report["direct"]
    assert uploaded >= 2 * MODEL_BYTES, report  # two updates went out
    if blob_store_url is not None:
        # S3: the updates went straight to the object store; the hub saw only small requests.
        assert report["direct"] >= 2 * MODEL_BYTES and report["hub"] < 1024 * 1024, report
    else:
        assert report["direct"] == 0, report
