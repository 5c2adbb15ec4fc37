"""The reference workloads under examples/ run as a user would run them."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, SHARED_DATA

pytestmark = pytest.mark.e2e


def test_mnist_cnn_reaches_97_percent_in_5_rounds() -> None:
    mnist = SHARED_DATA / "mnist-t10k"
    assert (mnist / "t10k-images-idx3-ubyte.gz").exists(), f"reference data missing at {mnist}"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "mnist_cnn.py"), "--mnist", str(mnist)],
        capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout + proc.stderr
    match = re.search(r"final test accuracy after 5 rounds: ([0-9.]+)", out)
    assert match, out
    assert float(match.group(1)) >= 0.97, out
    assert proc.returncode == 0, out


def test_heart_disease_four_hospitals() -> None:
    folder = SHARED_DATA / "heart-disease"
    assert (folder / "processed.cleveland.data").exists(), f"reference data missing at {folder}"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "heart_disease.py"), "--data", str(folder)],
        capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    match = re.search(r"hold-out accuracy across the four sites ([0-9.]+) after 20 rounds", out)
    assert match, out
    assert float(match.group(1)) >= 0.70, out
    assert proc.returncode == 0, out
    for site in ("Cleveland Clinic", "Hungarian Institute", "Zurich and Basel", "Long Beach"):
        assert site in out
