"""The privacy section of a task definition: modes, their parameters, precise refusals."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from fedpact.common.definition import parse_definition


def task(privacy: dict[str, Any], **kw: Any) -> Any:
    d = {"model": {"name": "mlp"}, "data": {"features": 4, "classes": [0, 1]}, "quorum": 5, "min_participants": 3,
         "privacy": privacy, **kw}
    return parse_definition(d)


def test_open_stays_the_default() -> None:
    d = parse_definition({"model": {"name": "mlp"}, "data": {"features": 4, "classes": [0, 1]}})
    assert d.privacy.mode == "open"


def test_each_mode_with_its_parameters() -> None:
    s = task({"mode": "secure", "clip": 2.0, "bits": 64, "threshold": 3, "sparse": True, "degree": 4}).privacy
    assert s.secure and s.effective_bits == 64 and s.threshold_for(5) == 3
    assert task({"mode": "secure", "threshold": 0.8}).privacy.threshold_for(5) == 4
    assert task({"mode": "secure"}).privacy.threshold_for(10) == 6  # default: a majority
    assert task({"mode": "secure", "threshold": 2}, min_participants=2).privacy.threshold_for(10) == 6  # never below
    dp = task({"mode": "dp", "clip_norm": 1.0, "noise_multiplier": 1.1, "placement": "central"}).privacy
    assert dp.effective_placement == "central" and dp.effective_delta == 1e-5 and dp.effective_accountant == "rdp"
    sdp = task({"mode": "secure+dp", "clip_norm": 1.0, "target_epsilon": 4.0, "epsilon_budget": 5.0}).privacy
    assert sdp.effective_placement == "distributed" and sdp.secure and sdp.differentially_private
    assert task({"mode": "encrypted", "he_poly_modulus_degree": 16384}).privacy.effective_he_degree == 16384


@pytest.mark.parametrize("privacy,kw,message", [
    ({"mode": "quantum"}, {}, "not available"),
    ({"mode": "secure", "threshold": 4}, {}, "needs min_participants >= threshold: threshold is 4, min_participants is 3"),
    ({"mode": "secure"}, {"min_participants": 1}, "needs min_participants >= 2"),
    ({"mode": "secure", "threshold": 0.5}, {}, "strict majority"),
    ({"mode": "secure", "threshold": 1}, {}, "count must be >= 2"),
    ({"mode": "secure", "degree": 4}, {}, "set sparse: true"),
    ({"mode": "secure", "sparse": True, "degree": 5}, {}, "degree must be even"),
    ({"mode": "secure", "noise_multiplier": 1.0}, {}, "'noise_multiplier' belongs to mode(s) dp, secure+dp"),
    ({"mode": "open", "clip": 1.0}, {}, "privacy mode 'open' takes no parameter(s) clip"),
    ({"mode": "dp", "noise_multiplier": 1.0}, {}, "needs clip_norm"),
    ({"mode": "dp", "clip_norm": 1.0}, {}, "exactly one of noise_multiplier"),
    ({"mode": "dp", "clip_norm": 1.0, "noise_multiplier": 1.0, "target_epsilon": 2.0}, {}, "exactly one"),
    ({"mode": "dp", "clip_norm": 1.0, "target_epsilon": 4.0, "epsilon_budget": 2.0}, {}, "below target_epsilon"),
    ({"mode": "secure+dp", "clip_norm": 1.0, "noise_multiplier": 1.0, "placement": "local"}, {}, "'placement' belongs to mode(s) dp"),
    ({"mode": "dp", "clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1.5}, {}, "less than 1"),
    ({"mode": "encrypted", "he_poly_modulus_degree": 1000}, {}, "he_poly_modulus_degree"),
    ({"mode": "encrypted"}, {"min_participants": 1}, "needs min_participants >= 2"),
    ({"mode": "secure"}, {"algorithm": {"name": "acme.robust_mean"}}, "plugin algorithm 'acme.robust_mean'"),
])
def test_precise_refusals(privacy: dict[str, Any], kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        task(privacy, **kw)
    assert message in str(exc.value)
