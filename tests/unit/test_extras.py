"""Which extra a task needs, and the refusal that names the pip command (the real absence is
exercised in tests/e2e/test_base_install.py, in a venv without the extras)."""

from __future__ import annotations

import pytest

from fedpact.common import extras
from fedpact.common.extras import MissingExtra, check_task, installed, needed_by


def test_models_and_privacy_modes_map_to_their_extras() -> None:
    assert needed_by({"model": {"name": "softmax_regression"}}) == {}
    assert needed_by({"model": {"name": "mlp"}, "privacy": {"mode": "dp"}}) == {
        "torch": "model 'mlp'", "dp": "privacy mode 'dp'"}
    assert needed_by({"model": {"name": "cnn"}, "privacy": {"mode": "encrypted"}}) == {
        "torch": "model 'cnn'", "he": "privacy mode 'encrypted'"}
    assert needed_by({"model": {"name": "cnn"}, "privacy": {"mode": "secure+dp"}}, model=False) == {
        "dp": "privacy mode 'secure+dp'"}
    assert needed_by({"model": {"name": "mlp"}, "privacy": {"mode": "secure"}}, model=False) == {}


def test_the_test_environment_has_every_extra() -> None:
    assert all(installed(name) for name in ("torch", "he", "dp", "data", "onnx", "mlflow"))
    check_task({"model": {"name": "mlp"}, "privacy": {"mode": "encrypted"}}, "t")  # nothing missing: no error


def test_a_missing_extra_is_named_with_its_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # An extra whose module does not exist anywhere stands in for one this machine lacks.
    monkeypatch.setitem(extras.EXTRAS, "absent", ("fedpact_no_such_module", "Nothing"))
    monkeypatch.setitem(extras.MODEL_EXTRAS, "needs-absent", "absent")
    monkeypatch.setitem(extras.PRIVACY_EXTRAS, "absent-mode", "absent")
    with pytest.raises(MissingExtra) as one:
        check_task({"model": {"name": "needs-absent"}}, "heart")
    assert str(one.value) == (
        "task 'heart' (model 'needs-absent') needs Nothing, which is not installed: pip install 'fedpact[absent]'")
    monkeypatch.setitem(extras.EXTRAS, "gone", ("fedpact_no_such_module_2", "Gone"))
    monkeypatch.setitem(extras.PRIVACY_EXTRAS, "absent-mode", "gone")
    with pytest.raises(Exception, match=r"Install all at once: pip install 'fedpact\[absent,gone\]'"):
        check_task({"model": {"name": "needs-absent"}, "privacy": {"mode": "absent-mode"}}, "heart")
