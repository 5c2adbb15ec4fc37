"""``fedpact simulate`` as a user runs it: a real process, a definition file, files written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from federation_helpers import digits_definition

import fedpact


def fedpact_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedpact", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_simulate_prints_the_history_and_saves_model_and_history(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(digits_definition(rounds=5)))
    p = fedpact_cli("simulate", "task.yaml", "--participants", "50", "--partition", "dirichlet:0.3", "--data",
                    "builtin:digits", "--rounds", "3", "--seed", "1", "--workers", "2", "--fraction", "0.5",
                    "--model-out", "out/model.safetensors", "--history-out", "out/history.csv", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "simulation complete: 3 rounds done" in p.stdout and "eval_accuracy" in p.stdout
    h = pd.read_csv(tmp_path / "out" / "history.csv")
    assert list(h["round"]) == [1, 2, 3] and (h["selected"] == 25).all()
    model = fedpact.load_model(tmp_path / "out" / "model.safetensors")
    assert model.metadata["simulation"]["participants"] == 50 and model.metadata["rounds"] == 3


def test_simulate_compare_prints_one_table_and_writes_one_png(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(digits_definition(rounds=2)))
    p = fedpact_cli("simulate", "task.yaml", "--participants", "12", "--partition", "dirichlet:0.3", "--seed", "1",
                    "--backend", "inline", "--compare", "fedavg,fedadam,median", "--plot", "cmp.png", "--quiet",
                    cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for name in ("fedavg", "fedadam", "median"):
        assert name in p.stdout
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


def test_simulate_refuses_bad_options_precisely_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(digits_definition()))
    before = sorted(tmp_path.iterdir())
    cases = [
        (["--partition", "dirichlet:0"], "the Dirichlet alpha must be a finite number > 0"),
        (["--backend", "gpu"], "unknown simulation backend 'gpu'"),
        (["--dropout", "-0.1"], "dropout must be a probability"),
        (["--compare", "fedavg,nosuch"], "nosuch"),
    ]
    for extra, message in cases:
        p = fedpact_cli("simulate", "task.yaml", "--participants", "10", "--quiet", "--model-out", "m.safetensors",
                        *extra, cwd=tmp_path)
        assert p.returncode == 1, p.stdout
        assert message in " ".join(p.stderr.split()), p.stderr
    p = fedpact_cli("simulate", "missing.yaml", "--participants", "10", cwd=tmp_path)
    assert p.returncode == 1 and "cannot read the definition file missing.yaml" in " ".join(p.stderr.split())
    assert sorted(tmp_path.iterdir()) == before
