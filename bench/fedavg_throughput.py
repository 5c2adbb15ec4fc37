"""Throughput of FedAvg's sample-weighted average against the machine's memory bandwidth.

What runs (every repetition runs each variant once, interleaved, so that load from other
processes on the machine hits all of them alike):

* ``weighted_average``: ``fedpact.algorithms.fedavg.weighted_average`` over U updates of
  E float32 each (default 10 x 10M = 10 x 40 MB), unequal weights 1..U. Throughput is
  *update bytes consumed per second*: U * E * 4 bytes / seconds (the 40 MB output is not
  counted, so this slightly understates the memory traffic).
* ``naive``: ``sum(c_i * x_i)`` over the same arrays with the same normalised weights, the
  obvious NumPy code (allocates a temporary per multiply and per add).
* ``wavg_blas1`` (diagnostic): ``weighted_average`` again, unchanged, but called inside
  ``threadpoolctl.threadpool_limits(1, user_api="blas")``: the same code with BLAS limited
  to one thread, to show what the per-block BLAS threading costs.
* ``read_sum`` baseline: ``a.sum()`` over one float32 array of B MB (default 400 MB):
  B MB read per call, nothing written (single-threaded NumPy, pairwise summation).
* ``add`` baseline: ``np.add(a, b, out=c)`` over three float32 arrays of B MB each, counted
  as 3 * B MB (2 read + 1 written) per call (single-threaded NumPy).

GB means 10^9 bytes. The target (weighted_average >= 50% of the baseline) is checked
against the *higher* of the two baselines' medians, the stricter reading; the ratio to each
baseline is printed and stored.

    .venv/bin/python bench/fedavg_throughput.py            # default: 11 repetitions
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python bench/fedavg_throughput.py --tag blas-env-unset
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import blas_info, machine_facts, print_machine, stats, table, write_result  # noqa: E402

from fedpact.algorithms.fedavg import BLOCK_ELEMENTS, weighted_average  # noqa: E402

GB = 1e9
TARGET_RATIO = 0.5


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=11, help="repetitions of every variant [11]")
    p.add_argument("--updates", type=int, default=10, help="number of updates U [10]")
    p.add_argument("--elements", type=int, default=10_000_000, help="float32 elements per update E [10M]")
    p.add_argument("--baseline-mb", type=int, default=400, help="size B of each baseline array in MB [400]")
    p.add_argument("--tag", default="", help="suffix for the result file name (e.g. blas-env-unset)")
    p.add_argument("--no-diagnostic", action="store_true", help="skip the BLAS-one-thread diagnostic variant")
    a = p.parse_args(argv)

    facts = machine_facts()
    print("== fedavg_throughput: weighted_average vs. NumPy memory bandwidth ==")
    print_machine(facts)

    rng = np.random.default_rng(0)
    updates = [{"w": rng.standard_normal(a.elements, dtype=np.float32)} for _ in range(a.updates)]
    weights = [float(i + 1) for i in range(a.updates)]
    coef = [w / sum(weights) for w in weights]
    update_bytes = a.updates * a.elements * 4

    n_base = a.baseline_mb * 1_000_000 // 4
    base_a = rng.random(n_base, dtype=np.float32)
    base_b = rng.random(n_base, dtype=np.float32)
    base_c = np.empty_like(base_a)
    base_bytes = n_base * 4

    # Correctness first (and the first call loads SciPy's BLAS, so threadpoolctl sees it).
    out = weighted_average(updates, weights)["w"]
    ref = np.zeros(a.elements, dtype=np.float64)
    for c, u in zip(coef, updates):
        ref += c * u["w"].astype(np.float64)
    max_err = float(np.max(np.abs(out - ref)))
    del ref, out
    blas = blas_info()
    print("BLAS libraries (threadpoolctl):")
    for lib in blas:
        print(f"  {lib.get('prefix')} {lib.get('version')}: kernel/architecture={lib.get('architecture')}, "
              f"threads={lib.get('num_threads')}, {os.path.basename(str(lib.get('filepath')))}")
    try:
        import scipy.linalg.blas as sblas

        axpy_lib = os.path.basename(sblas._fblas.__file__)
    except Exception:  # noqa: BLE001
        axpy_lib = "unknown"
    print(f"weighted_average: blocks of {BLOCK_ELEMENTS} elements, axpy from SciPy ({axpy_lib}); "
          f"max |error| vs float64 reference = {max_err:.2e}")

    def naive() -> np.ndarray:
        return sum(c * u["w"] for c, u in zip(coef, updates))  # type: ignore[return-value]

    def wavg_blas1() -> None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            weighted_average(updates, weights)

    variants: dict[str, tuple[Callable[[], Any], int]] = {
        "read_sum": (lambda: base_a.sum(), base_bytes),
        "add": (lambda: np.add(base_a, base_b, out=base_c), 3 * base_bytes),
        "weighted_average": (lambda: weighted_average(updates, weights), update_bytes),
        "naive": (naive, update_bytes),
    }
    if not a.no_diagnostic:
        variants["wavg_blas1"] = (wavg_blas1, update_bytes)

    for fn, _ in variants.values():  # warm-up: page in outputs, load libraries
        fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    t_start = time.perf_counter()
    for _ in range(a.reps):
        for name, (fn, _) in variants.items():
            gc.collect()
            samples[name].append(timed(fn))
    elapsed = time.perf_counter() - t_start

    res: dict[str, Any] = {}
    for name, (_, nbytes) in variants.items():
        s = stats(samples[name])
        gbps = sorted(nbytes / GB / t for t in samples[name])
        res[name] = {
            "bytes_per_call": nbytes,
            "seconds": s,
            "gbps_best": nbytes / GB / s["min"],
            "gbps_median": nbytes / GB / s["median"],
            "gbps_worst": nbytes / GB / s["max"],
            "gbps_all": gbps,
        }

    base_name = max(("read_sum", "add"), key=lambda k: res[k]["gbps_median"])
    base = res[base_name]["gbps_median"]
    rows = []
    what = {
        "read_sum": f"a.sum(), {a.baseline_mb} MB read",
        "add": f"np.add(a,b,out=c), 3x{a.baseline_mb} MB r+w",
        "weighted_average": f"{a.updates} x {a.elements * 4 / 1e6:.0f} MB updates consumed",
        "naive": "sum(c_i * x_i), same bytes",
        "wavg_blas1": "weighted_average, BLAS 1 thread",
    }
    for name, r in res.items():
        rows.append([
            name, what[name], f"{r['gbps_best']:.2f}", f"{r['gbps_median']:.2f}", f"{r['gbps_worst']:.2f}",
            f"{r['seconds']['median'] * 1e3:.1f}",
            f"{r['gbps_median'] / res['read_sum']['gbps_median']:.0%}", f"{r['gbps_median'] / res['add']['gbps_median']:.0%}",
        ])
    print()
    print(f"{a.reps} repetitions, interleaved, {elapsed:.1f} s; GB = 1e9 bytes")
    print(table(["variant", "what is counted", "best GB/s", "median GB/s", "worst GB/s", "median ms",
                 "vs read_sum", "vs add"], rows))

    wa = res["weighted_average"]
    ratio = wa["gbps_median"] / base
    ratio_best = wa["gbps_best"] / res[base_name]["gbps_best"]
    met = ratio >= TARGET_RATIO
    print()
    print(f"weighted_average: {wa['gbps_median']:.2f} GB/s median ({wa['gbps_best']:.2f} best) = "
          f"{ratio:.0%} of the {base_name} baseline ({base:.2f} GB/s median) measured in the same run "
          f"(best vs best: {ratio_best:.0%}); naive is {res['naive']['gbps_median']:.2f} GB/s; "
          f"speed-up over naive x{wa['gbps_median'] / res['naive']['gbps_median']:.2f}")
    if "wavg_blas1" in res:
        w1 = res["wavg_blas1"]
        print(f"diagnostic: the same weighted_average with BLAS limited to 1 thread: {w1['gbps_median']:.2f} GB/s "
              f"median = {w1['gbps_median'] / base:.0%} of the baseline")
    print(f"target weighted_average >= {TARGET_RATIO:.0%} of the baseline: {'MET' if met else 'NOT MET'}")

    try:
        load_end = os.getloadavg()
    except OSError:
        load_end = None
    result = {
        "benchmark": "fedavg_throughput",
        "machine": facts,
        "loadavg_at_end": load_end,
        "blas_threadpoolctl": blas,
        "scipy_axpy_library": axpy_lib,
        "parameters": {"reps": a.reps, "updates": a.updates, "elements": a.elements, "dtype": "float32",
                       "baseline_mb": a.baseline_mb, "block_elements": BLOCK_ELEMENTS, "tag": a.tag},
        "max_abs_error_vs_float64": max_err,
        "variants": res,
        "baseline_for_target": base_name,
        "ratio_median": ratio,
        "ratio_best": ratio_best,
        "target_ratio": TARGET_RATIO,
        "target_met": met,
    }
    path = write_result("fedavg_throughput" + (f"-{a.tag}" if a.tag else ""), result)
    print(f"result written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
