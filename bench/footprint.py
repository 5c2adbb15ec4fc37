"""Footprint of a base install: venv size and participant start-up, fedpact against Flower.

Both are installed the way a data owner would (``pip install fedpact`` from this checkout,
``pip install flwr`` from the package index), each into its own fresh venv, in the same
run on the same machine. Start-up is the wall time of a fresh interpreter importing what a
participant needs before it can talk to its server (fedpact: the participant runtime, the
hub client and the NumPy model; Flower: its client API), median of ``--repeat`` runs, with
the interpreter's bare start-up reported alongside so it can be subtracted.

Usage: ``python bench/footprint.py [--repeat 15] [--keep DIR] [--tag TAG]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_facts, print_machine, stats, table, write_result

REPO = Path(__file__).resolve().parents[1]
PROBES = {
    "fedpact": "import fedpact.runtime.participant, fedpact.client.hub, fedpact.models.softmax",
    "flwr": "import flwr.client",
}
HEAVY = ("torch", "tenseal", "sklearn", "scipy", "dp_accounting", "tensorflow")


def du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def make_venv(where: Path, requirement: str) -> tuple[Path, float]:
    if where.exists():
        shutil.rmtree(where)
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    py = where / "bin" / "python"
    t0 = time.monotonic()
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-cache-dir", requirement], check=True)
    return py, time.monotonic() - t0


def start_up(py: Path, code: str, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([str(py), "-c", code], check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def loaded_heavy(py: Path, code: str) -> list[str]:
    probe = f"{code}; import sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    res = subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True)
    return [m for m in res.stdout.strip().split(",") if m]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--keep", type=Path, default=None, help="make the venvs here and keep them")
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    facts = machine_facts()
    print_machine(facts)
    root = a.keep or Path(tempfile.mkdtemp(prefix="fedpact-footprint-"))
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, object]] = {}
    try:
        for name, requirement in (("fedpact", str(REPO)), ("flwr", "flwr")):
            venv = root / name
            print(f"installing {requirement} into {venv} ...", flush=True)
            py, install_s = make_venv(venv, requirement)
            version = subprocess.run([str(py), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
                                     check=True, capture_output=True, text=True).stdout.strip()
            bare = start_up(py, "pass", a.repeat)
            times = start_up(py, PROBES[name], a.repeat)
            results[name] = {
                "version": version,
                "venv_bytes": du(venv),
                "site_packages_bytes": du(next((venv / "lib").glob("python*/site-packages"))),
                "install_seconds": install_s,
                "start_up_seconds": stats(times),
                "bare_interpreter_seconds": stats(bare),
                "probe": PROBES[name],
                "heavy_modules_loaded": loaded_heavy(py, PROBES[name]),
            }
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    rows = []
    for name, r in results.items():
        su = r["start_up_seconds"]
        bare = r["bare_interpreter_seconds"]
        assert isinstance(su, dict) and isinstance(bare, dict)
        rows.append([f"{name} {r['version']}", f"{int(r['venv_bytes']) / 1e6:.0f} MB",  # type: ignore[call-overload]
                     f"{su['median']:.3f} s", f"{su['median'] - bare['median']:.3f} s",
                     ", ".join(r["heavy_modules_loaded"]) or "none"])  # type: ignore[arg-type]
    print(table(["install", "venv size", "start-up (median)", "minus bare python", "heavy modules"], rows))
    path = write_result("footprint" + (f"-{a.tag}" if a.tag else ""), {"machine": facts, "results": results,
                                                                     "repeat": a.repeat})
    print(f"result in {path}")


if __name__ == "__main__":
    main()
