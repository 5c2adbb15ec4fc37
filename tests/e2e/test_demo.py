"""`fedpact demo`, as `make demo` runs it: a whole federation of OS processes.

How long it takes is measured by bench/demo_time.py, never asserted here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_trains_digits_to_95_percent(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fedpact", "demo", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # progress while the participant processes start, before the first round
    assert "starting 3 participant processes and the aggregator" in out, out
    assert re.search(r"participants connected: 3/3 \((bob|carol|dave), ", out), out
    assert out.index("participants connected: 3/3") < out.index("round 1/10"), out
    rounds = re.findall(r"round (\d+)/10: test accuracy ([0-9.]+)", out)
    assert [int(r) for r, _ in rounds] == list(range(1, 11)), out
    final = float(re.search(r"accuracy on the \d+ held-out digits: ([0-9.]+)", out).group(1))
    assert final >= 0.95, out
    assert (tmp_path / "model.safetensors").exists()
    for name in ("bob", "carol", "dave"):
        assert list((tmp_path / "models" / name).glob("*.safetensors")), f"{name} did not receive the model"
