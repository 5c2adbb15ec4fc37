"""``pip install fedpact`` without extras: hub, CLI and a NumPy participant, no heavy stack.

A real venv is made under test-artifacts/ with the base package only (its dependencies come
from the package index like a user's install; the venv is reused while pyproject.toml is
unchanged, and fedpact itself is reinstalled each session). ``python -X importtime`` then
shows every module each process imported: torch, TenSEAL, scikit-learn, SciPy and
dp-accounting must be absent, not merely unused.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedpact.client.hub import HubClient
from fedpact.data.builtin import digits_federation
from fedpact.data.loaders import save_csv
from fedpact.hub.server import free_port
from integration.federation_helpers import Runner, digits_definition, start_aggregator
from support import PASSWORD, REPO_ROOT, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HEAVY = ("torch", "tenseal", "sklearn", "scipy", "dp_accounting")
_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", re.MULTILINE)


def heavy_imports(importtime_log: str) -> list[str]:
    names = {m.split(".")[0].strip() for m in _IMPORTED.findall(importtime_log)}
    return sorted(names & set(HEAVY))


@pytest.fixture(scope="module")
def base_venv() -> Iterator[Path]:
    root = REPO_ROOT / "test-artifacts" / "base-venv"
    stamp = hashlib.sha256((REPO_ROOT / "pyproject.toml").read_bytes()).hexdigest()
    marker = root / ".pyproject-sha256"
    py = root / "bin" / "python"
    if not (marker.exists() and marker.read_text() == stamp and py.exists()):
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(REPO_ROOT)], check=True, timeout=900)
        marker.write_text(stamp)
    else:  # same dependencies: refresh fedpact's own code only
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(REPO_ROOT)],
                       check=True, timeout=300)
    yield root


def run_base(venv: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "python"), "-X", "importtime", *args], capture_output=True, text=True,
                          check=False, timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})}, cwd=venv)


def test_the_extras_are_really_absent_from_the_base_venv(base_venv: Path) -> None:
    probe = run_base(base_venv, "-c", f"import importlib.util as u; print([m for m in {HEAVY!r} if u.find_spec(m)])")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]", "the base install pulled in an extra: " + probe.stdout


def test_import_and_help_load_no_heavy_stack(base_venv: Path) -> None:
    code = "import fedpact, fedpact.sdk, fedpact.client, fedpact.inference; fedpact.Client; fedpact.load_model"
    imported = run_base(base_venv, "-c", code)
    assert imported.returncode == 0, imported.stderr
    assert heavy_imports(imported.stderr) == []
    helped = run_base(base_venv, "-m", "fedpact", "--help")
    assert helped.returncode == 0 and "participate" in helped.stdout, helped.stdout + helped.stderr
    assert heavy_imports(helped.stderr) == []


def test_hub_and_numpy_participant_run_without_extras_and_torch_tasks_are_refused_before_joining(
    base_venv: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "hub.log", "w") as hub_log:  # the child keeps its own copy of the descriptor
        hub = subprocess.Popen([str(base_venv / "bin" / "python"), "-X", "importtime", "-m", "fedpact", "hub",
                                "--port", str(port), "--data-dir", str(tmp_path / "hub")],
                               stdout=hub_log, stderr=subprocess.STDOUT, cwd=base_venv)
    runner = Runner()
    try:
        alice = HubClient(url, retry_for_s=5, first_contact_s=5)
        wait_for(lambda: _healthy(alice), 60, "the base-install hub")
        alice.register("alice", PASSWORD, "Acme")
        alice.login("alice", PASSWORD)
        bob = HubClient(url, retry_for_s=5)
        bob.register("bob", PASSWORD, "Bob Labs")
        token = bob.login("bob", PASSWORD)
        alice.create_task("numpy-task", digits_definition(quorum=1, min_participants=1, rounds=2))
        alice.create_task("torch-task", digits_definition(model={"name": "mlp"}, quorum=1, min_participants=1))
        shards, _ = digits_federation(1, seed=3)
        data = save_csv(tmp_path / "bob.csv", shards[0])
        env = {"FEDPACT_HUB": url, "FEDPACT_TOKEN": token, "FEDPACT_HOME": str(tmp_path / "home")}

        refused = run_base(base_venv, "-m", "fedpact", "join", "torch-task", env=env)
        assert refused.returncode == 1
        assert "pip install 'fedpact[torch]'" in refused.stderr and "model 'mlp'" in refused.stderr
        assert alice.get_task("torch-task")["participants"] == []  # refused before joining
        refused = run_base(base_venv, "-m", "fedpact", "participate", "torch-task", "--data", str(data), env=env)
        assert refused.returncode == 1 and "pip install 'fedpact[torch]'" in refused.stderr
        assert alice.get_task("torch-task")["participants"] == []
        sdk = run_base(base_venv, "-c", "import fedpact, sys; c = fedpact.Client(sys.argv[1], sys.argv[2])\n"
                       "try:\n    c.join('torch-task')\nexcept fedpact.FedpactError as e:\n    print('refused:', e)",
                       url, token)
        assert sdk.returncode == 0 and "refused: task 'torch-task' (model 'mlp') needs PyTorch" in sdk.stdout, sdk.stderr
        assert "pip install 'fedpact[torch]'" in sdk.stdout
        assert alice.get_task("torch-task")["participants"] == []

        start_aggregator(runner, alice, "numpy-task")
        took_part = run_base(base_venv, "-m", "fedpact", "participate", "numpy-task", "--data", str(data),
                             "--threads", "1", "--model-dir", str(tmp_path / "models"), env=env, timeout=240)
        runner.join(120)
        assert not runner.errors, runner.errors
        assert took_part.returncode == 0, took_part.stdout + took_part.stderr
        assert alice.get_task("numpy-task")["status"] == "COMPLETE"
        assert heavy_imports(took_part.stderr) == []
        alice.close(), bob.close()
    finally:
        hub.terminate()
        hub.wait(30)
    hub_text = (tmp_path / "hub.log").read_text()
    assert "import time:" in hub_text  # the hub's own imports were recorded
    assert heavy_imports(hub_text) == []


def _healthy(c: HubClient) -> bool:
    try:
        return c.health().get("status") == "ok"
    except Exception:  # noqa: BLE001 - not up yet
        return False
