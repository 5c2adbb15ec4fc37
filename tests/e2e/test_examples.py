"""The reference workloads under examples/ run as a user would run them."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from support import REPO_ROOT, SHARED_DATA

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


def _run_example(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / name), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT.parent, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def test_heart_disease_four_hospitals_all_13_features_with_federated_imputation() -> None:
    """Runs on a fresh clone: the four UCI files ship in examples/data; every patient is kept."""
    out = _run_example("heart_disease.py")
    match = re.search(r"hold-out accuracy across the four sites ([0-9.]+) after 20 rounds", out)
    assert match, out
    assert float(match.group(1)) >= 0.75, out
    for site, n in (("Cleveland Clinic", 303), ("Hungarian Institute", 294), ("Zurich and Basel", 123),
                    ("Long Beach", 200)):
        assert re.search(rf"{site}.*\s{n} patients", out), out
    assert re.search(r"federated medians filled in: age [0-9.]+, .*ca [0-9.]+", out), out


def test_heart_disease_example_reads_the_shared_copy_too() -> None:
    folder = SHARED_DATA / "heart-disease"
    if not (folder / "processed.cleveland.data").exists():
        folder = REPO_ROOT / "examples" / "data" / "heart-disease"
    out = _run_example("heart_disease.py", "--data", str(folder), "--min-accuracy", "0.75")
    assert "after 20 rounds" in out


def test_diabetes_regression_example_matches_the_centralised_fit() -> None:
    out = _run_example("diabetes_regression.py")
    fed = re.search(r"final model: pooled hold-out R2 ([0-9.]+)", out)
    central = re.search(r"centralised least squares on the pooled training data: hold-out R2 ([0-9.]+)", out)
    assert fed and central, out
    assert float(fed.group(1)) >= float(central.group(1)) - 0.05, out


def test_iris_clustering_example_matches_pooled_kmeans() -> None:
    out = _run_example("iris_clustering.py")
    fed = re.search(r"federated inertia ([0-9.]+)", out)
    ref = re.search(r"scikit-learn KMeans on the pooled data: inertia ([0-9.]+)", out)
    assert fed and ref, out
    assert float(fed.group(1)) <= 1.05 * float(ref.group(1)), out
