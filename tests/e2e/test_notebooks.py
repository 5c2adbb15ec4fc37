"""The example notebooks, executed cell by cell in real Jupyter kernels against a hub.

The creator and participant notebooks run at the same time, each in its own kernel (its
own process), as Alice and Bob would; the hub is an embedded one whose address reaches
the kernels through ``$FEDPACT_HUB``. Every cell must run without error, and the outputs
must show the workflow really happened: a COMPLETE task, a plot, predictions.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from fedpact.hub.server import EmbeddedHub
from support import REPO_ROOT

nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbclient and nbformat")
nbclient = pytest.importorskip("nbclient")
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NOTEBOOKS = REPO_ROOT / "examples" / "notebooks"


def execute(name: str, results: dict[str, Any], cwd: Path) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
        results[name] = nb
    except Exception as exc:  # noqa: BLE001 - reported with the notebook's name
        results[name] = exc


def outputs(nb: Any) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts.append(data.get("text/plain", ""))
            if "image/png" in data:
                parts.append("<image/png>")
    return "\n".join(parts)


def test_creator_and_participant_notebooks_run_a_federation(hub: EmbeddedHub, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDPACT_HUB", hub.url)
    monkeypatch.setenv("FEDPACT_NB_TASK", "digits-nb")
    monkeypatch.setenv("FEDPACT_NB_ROUNDS", "3")
    monkeypatch.setenv("FEDPACT_NB_WAIT_S", "240")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    results: dict[str, Any] = {}
    threads = [threading.Thread(target=execute, args=(n, results, tmp_path)) for n in ("creator.ipynb", "participant.ipynb")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(400)
    assert not any(t.is_alive() for t in threads), "a notebook did not finish"
    for name, nb in results.items():
        assert not isinstance(nb, Exception), f"{name}: {nb}"
    creator, participant = outputs(results["creator.ipynb"]), outputs(results["participant.ipynb"])
    assert "'COMPLETE'" in creator and "<image/png>" in creator, creator
    assert "accuracy on all 1,797 digits" in creator and "predicted [" in creator, creator
    assert "('COMPLETE', [1, 2, 3])" in participant and "<image/png>" in participant, participant
    assert "accuracy of the federated model on my own data" in participant, participant
