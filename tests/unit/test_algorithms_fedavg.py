import numpy as np
import pytest

from fedpact.algorithms import weighted_average
from fedpact.algorithms.fedavg import BLOCK_ELEMENTS


def _reference(updates, weights):
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    return {k: sum(wi * u[k].astype(np.float64) for wi, u in zip(w, updates)) for k in updates[0]}


def _updates(rng, shapes, k, dtype=np.float32):
    return [{name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()} for _ in range(k)]


def test_matches_float64_reference_across_block_boundaries():
    rng = np.random.default_rng(0)
    shapes = {"big": (BLOCK_ELEMENTS * 2 + 17,), "mat": (33, 65), "scalar": (), "vec": (1,)}
    updates = _updates(rng, shapes, 7)
    weights = [10, 250, 3, 0, 77, 1, 1000]
    out = weighted_average(updates, weights)
    ref = _reference(updates, weights)
    assert list(out) == list(shapes)
    for name, shape in shapes.items():
        assert out[name].dtype == np.float32 and out[name].shape == shape
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-5, atol=1e-6)


def test_keeps_float64_and_handles_non_contiguous_inputs():
    rng = np.random.default_rng(1)
    base = [rng.standard_normal((40, 30)) for _ in range(3)]
    updates = [{"w": b.T} for b in base]
    out = weighted_average(updates, [1.0, 2.0, 3.0])
    assert out["w"].dtype == np.float64 and out["w"].shape == (30, 40)
    np.testing.assert_allclose(out["w"], _reference(updates, [1, 2, 3])["w"], rtol=1e-12)


def test_inputs_untouched_and_single_update_is_copied():
    rng = np.random.default_rng(2)
    updates = _updates(rng, {"w": (1000,)}, 2)
    before = [u["w"].copy() for u in updates]
    out = weighted_average(updates, [1, 1])
    assert all(np.array_equal(u["w"], b) for u, b in zip(updates, before))
    single = weighted_average(updates[:1], [5])
    assert np.array_equal(single["w"], updates[0]["w"]) and single["w"] is not updates[0]["w"]
    np.testing.assert_allclose(out["w"], (before[0] + before[1]) / 2, rtol=1e-6)


def test_integer_tensors_are_rounded_back():
    updates = [{"steps": np.array([10], dtype=np.int64)}, {"steps": np.array([20], dtype=np.int64)}]
    out = weighted_average(updates, [1, 3])
    assert out["steps"].dtype == np.int64 and out["steps"].tolist() == [18]


@pytest.mark.parametrize(
    "updates,weights,message",
    [
        ([], [], "no updates"),
        ([{"w": np.zeros(2, np.float32)}], [1, 2], "1 updates but 2 weights"),
        ([{"w": np.zeros(2, np.float32)}] * 2, [0, 0], "not all zero"),
        ([{"w": np.zeros(2, np.float32)}] * 2, [1, -1], ">= 0"),
        ([{"w": np.zeros(2, np.float32)}, {"v": np.zeros(2, np.float32)}], [1, 1], "update 1 has tensors"),
        ([{"w": np.zeros(2, np.float32)}, {"w": np.zeros(3, np.float32)}], [1, 1], r"update 1 has float32\(3,\)"),
        ([{"w": np.zeros(2, np.float32)}, {"w": np.zeros(2, np.float64)}], [1, 1], "update 1 has float64"),
    ],
)
def test_rejects_inconsistent_inputs(updates, weights, message):
    with pytest.raises(ValueError, match=message):
        weighted_average(updates, weights)


def test_weighted_average_runs_blas_single_threaded() -> None:
    """Multi-threaded BLAS stalls on every block when the other core is busy (see fedavg)."""
    import json
    import subprocess
    import sys

    code = (
        "import json, numpy as np, threadpoolctl\n"
        "from fedpact.algorithms import fedavg\n"
        "seen = []\n"
        "real = fedavg._average\n"
        "def spy(*a):\n"
        "    seen.append([i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'])\n"
        "    return real(*a)\n"
        "fedavg._average = spy\n"
        "u = [{'w': np.ones(300_000, np.float32)}, {'w': np.zeros(300_000, np.float32)}]\n"
        "fedavg.weighted_average(u, [1, 3])\n"
        "fedavg.weighted_average(u, [1, 3])\n"
        "print(json.dumps(seen[-1]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    threads = json.loads(out)
    assert threads and all(n == 1 for n in threads), threads
