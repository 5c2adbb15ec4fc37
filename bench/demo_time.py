"""How long ``fedpact demo`` takes, as ``make demo`` runs it (moved here from the e2e test).

The e2e test checks what the demo does; this script measures how long it takes, so a busy
machine makes a slow figure, not a failed test. Usage: ``python bench/demo_time.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from _common import machine_facts, print_machine, stats, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    facts = machine_facts()
    print_machine(facts)
    samples = []
    for i in range(a.repeat):
        with tempfile.TemporaryDirectory(prefix="fedpact-demo-bench-") as d:
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "fedpact", "demo", "--data-dir", d],
                                  capture_output=True, text=True, check=False)
            elapsed = time.monotonic() - t0
        if proc.returncode != 0:
            sys.exit(f"demo failed:\n{proc.stdout}\n{proc.stderr}")
        samples.append(elapsed)
        print(f"run {i + 1}: {elapsed:.1f} s")
    result = {"machine": facts, "demo_seconds": stats(samples), "samples": samples}
    path = write_result("demo_time" + (f"-{a.tag}" if a.tag else ""), result)
    print(f"median {stats(samples)['median']:.1f} s; result in {path}")


if __name__ == "__main__":
    main()
