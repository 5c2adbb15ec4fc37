"""Which optional install (``pip install 'fedpact[...]'``) a feature needs, and checks for it.

``pip install fedpact`` carries the hub, the CLI, the SDK and the NumPy models. PyTorch,
TenSEAL, dp-accounting and scikit-learn are extras, so a hub or a NumPy participant stays
small. Each check looks for the module with ``importlib.util.find_spec`` (nothing is
imported), so a participant can be told what to install *before* it joins a task.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from fedpact.common.errors import FedpactError

#: extra name -> (module that proves it is installed, what it provides).
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "PyTorch"),
    "he": ("tenseal", "TenSEAL (homomorphic encryption)"),
    "dp": ("dp_accounting", "dp-accounting (the differential-privacy accountant)"),
    "data": ("sklearn", "scikit-learn (the bundled digits data)"),
    "mlflow": ("mlflow", "MLflow"),
    "onnx": ("onnx", "ONNX"),
}

#: Built-in model name -> the extra it needs; NumPy models need none. Plugin models bring
#: their own dependencies through the package that registers them.
MODEL_EXTRAS: dict[str, str] = {"mlp": "torch", "cnn": "torch"}

#: Privacy mode -> the extra it needs on a participant and the aggregator.
PRIVACY_EXTRAS: dict[str, str] = {"dp": "dp", "secure+dp": "dp", "encrypted": "he"}


class MissingExtra(FedpactError, ImportError):
    """A feature needs an optional dependency that is not installed here."""

    def __init__(self, extra: str, needed_for: str) -> None:
        self.extra = extra
        what = EXTRAS[extra][1] if extra in EXTRAS else extra
        super().__init__(f"{needed_for} needs {what}, which is not installed: pip install 'fedpact[{extra}]'")


def installed(extra: str) -> bool:
    """Whether the extra's module can be imported here (without importing it)."""
    module = EXTRAS[extra][0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, needed_for: str) -> None:
    """Raise :class:`MissingExtra` naming the pip command when ``extra`` is not installed."""
    if not installed(extra):
        raise MissingExtra(extra, needed_for)


def needed_by(definition: Mapping[str, Any], *, model: bool = True) -> dict[str, str]:
    """Extra -> the reason a task with this definition (a plain dict) needs it.

    ``model=False`` leaves out the model's extra, for a participant that brings its own code.
    """
    needs: dict[str, str] = {}
    name = str((definition.get("model") or {}).get("name", ""))
    if model and name in MODEL_EXTRAS:
        needs.setdefault(MODEL_EXTRAS[name], f"model {name!r}")
    mode = str((definition.get("privacy") or {}).get("mode", "open"))
    if mode in PRIVACY_EXTRAS:
        needs.setdefault(PRIVACY_EXTRAS[mode], f"privacy mode {mode!r}")
    return needs


def missing_for(definition: Mapping[str, Any], *, model: bool = True) -> list[MissingExtra]:
    """One error per extra the definition needs that is not installed here."""
    needs = needed_by(definition, model=model)
    return [MissingExtra(extra, why) for extra, why in needs.items() if not installed(extra)]


def check_task(definition: Mapping[str, Any], task: str, *, model: bool = True) -> None:
    """Refuse, before joining, a task this installation could not train; names every pip command."""
    problems = missing_for(definition, model=model)
    if not problems:
        return
    if len(problems) == 1:
        why = needed_by(definition, model=model)[problems[0].extra]
        raise MissingExtra(problems[0].extra, f"task {task!r} ({why})")
    extras = ",".join(p.extra for p in problems)
    reasons = "; ".join(str(p) for p in problems)
    raise FedpactError(f"task {task!r} cannot run here: {reasons}. Install all at once: pip install 'fedpact[{extras}]'")
