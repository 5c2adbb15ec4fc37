"""The MNIST reference workload: a CNN trained by 2 participants over 5 rounds.

MUSKETEER's published demo reached about 98.9% test accuracy on MNIST with a CNN,
2 participants, 5 rounds and 2 local epochs. This script reproduces that setting on the
10,000-image MNIST test set that ships in ``../shared/data/mnist-t10k``: 8,000 images are
split between two participants, 2,000 are held out for the aggregator's evaluation.

    python examples/mnist_cnn.py --mnist ../shared/data/mnist-t10k

It runs an embedded hub in this process, the two participants in threads and the
aggregator in the main thread; every step still goes through the hub over HTTP.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import fedpact
from fedpact.data.loaders import load_idx
from fedpact.data.partition import split_iid
from fedpact.runtime import DataParticipant, Progress

DEFINITION = {
    "model": {"name": "cnn", "params": {"channels": [16, 32], "hidden": 64, "dropout": 0.1}},
    "algorithm": {"name": "fedavg"},
    "rounds": 5,
    "local_epochs": 2,
    "batch_size": 32,
    "learning_rate": 0.001,
    "optimizer": "adam",
    "quorum": 2,
    "min_participants": 2,
    "round_timeout_s": 600,
    "data": {"kind": "image", "shape": [1, 28, 28], "label": "label", "classes": list(range(10))},
    "evaluation": {"holdout": 0.0},
    "admission": {"mode": "invite", "users": ["bob", "carol"]},  # the two sites alice works with
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mnist", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist-t10k")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-accuracy", type=float, default=0.97, help="exit 1 below this test accuracy")
    args = ap.parse_args(argv)

    images = args.mnist / "t10k-images-idx3-ubyte.gz"
    labels = args.mnist / "t10k-labels-idx1-ubyte.gz"
    data = load_idx(images, labels)
    order = np.random.default_rng(0).permutation(len(data))
    train, test = data.subset(order[:8000]), data.subset(order[8000:])
    shards = split_iid(train, 2, seed=0)
    print(f"MNIST: {len(train)} training images over 2 participants ({[len(s) for s in shards]}), {len(test)} test images")

    t0 = time.monotonic()
    with fedpact.Client.embedded(tempfile.mkdtemp(prefix="fedpact-mnist-")) as alice:
        users = {}
        for name in ("alice", "bob", "carol"):
            c = alice if name == "alice" else fedpact.Client(alice.url)
            c.register(name, "mnist-example-pw", f"{name.title()} Org")
            c.login(name, "mnist-example-pw")
            users[name] = c
        alice.create_task("mnist-cnn", {**DEFINITION, "rounds": args.rounds}, "MNIST digits, CNN, 2 sites")
        errors: list[BaseException] = []

        def participate(name: str, shard: fedpact.Dataset) -> None:
            try:
                users[name].run_participant("mnist-cnn", DataParticipant(shard), progress=Progress(quiet=True))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=participate, args=(n, s)) for n, s in zip(("bob", "carol"), shards)]
        for t in threads:
            t.start()
        result = alice.run_aggregator("mnist-cnn", eval_data=test, progress=Progress(stream=sys.stdout))
        for t in threads:
            t.join(60)
        for name in ("bob", "carol"):
            users[name].close()
    if errors:
        print(f"participant failed: {errors[0]}")
        return 1
    acc = result.metrics["eval_accuracy"]
    print(f"final test accuracy after {result.rounds_completed} rounds: {acc:.4f} ({time.monotonic() - t0:.1f} s)")
    return 0 if acc >= args.min_accuracy else 1


if __name__ == "__main__":
    sys.exit(main())
