"""The definition's ``admission`` field: its two spellings, its defaults and its refusals."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from fedpact.common.definition import AdmissionSpec, parse_definition

BASE: dict[str, Any] = {"model": {"name": "mlp"}, "data": {"features": 4, "classes": [0, 1]}}


def test_default_is_approval_and_the_mode_alone_is_shorthand() -> None:
    assert parse_definition(BASE).admission == AdmissionSpec(mode="approval")
    assert parse_definition({**BASE, "admission": "open"}).admission.mode == "open"
    stored = parse_definition({**BASE, "admission": "open"}).model_dump(mode="json")["admission"]
    assert stored == {"mode": "open", "users": [], "organisations": []}
    assert parse_definition({**BASE, "admission": stored}).admission.mode == "open"  # round-trips


def test_invitations_match_user_names_or_organisations_exactly() -> None:
    spec = AdmissionSpec(mode="invite", users=["bob"], organisations=["Hospital B"])
    assert spec.invites("bob", "Elsewhere") and spec.invites("carol", "Hospital B")
    assert not spec.invites("carol", "hospital b") and not spec.invites("bobby", "Hospital")


@pytest.mark.parametrize(
    ("admission", "message"),
    [
        ("anyone", "admission 'anyone' is not a mode"),
        ({"mode": "invite"}, "needs at least one entry in 'users' or 'organisations'"),
        ({"mode": "open", "organisations": ["A"]}, "admission mode 'open' takes no invitation list"),
        ({"mode": "invite", "users": ["x"]}, "'x' are not user names"),
        ({"mode": "invite", "organisations": ["A", "A"]}, "invited organisations must not repeat"),
        ({"mode": "invite", "organisations": [""]}, "1-200 characters"),
        ({"mode": "invite", "users": ["bob"], "teams": ["x"]}, "teams"),
    ],
)
def test_bad_admission_is_refused_with_a_precise_reason(admission: Any, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_definition({**BASE, "admission": admission})
    assert message in str(err.value)
    assert all(e["loc"][0] == "admission" for e in err.value.errors())
