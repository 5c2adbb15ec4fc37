"""Per-privacy-mode round objects (docs/architecture.md): one class per mode, chosen once.

A new mode is one new module with a :class:`PrivacyRound` subclass plus its line in
:data:`ROUNDS`.
"""

from __future__ import annotations

from fedpact.runtime.rounds.base import (
    PrivacyRound,
    RoundFailed,
    RoundHost,
    RoundOutcome,
    RoundPlan,
    SumOutcome,
    Transport,
)
from fedpact.runtime.rounds.dp import DpRound
from fedpact.runtime.rounds.encrypted import EncryptedRound
from fedpact.runtime.rounds.open import OpenRound
from fedpact.runtime.rounds.secure import SecureDpRound, SecureRound

#: The round object of each privacy mode.
ROUNDS: dict[str, type[PrivacyRound]] = {
    "open": OpenRound,
    "dp": DpRound,
    "secure": SecureRound,
    "secure+dp": SecureDpRound,
    "encrypted": EncryptedRound,
}


def round_for(host: RoundHost, transport: Transport) -> PrivacyRound:
    """The round object of the host's privacy mode."""
    return ROUNDS[host.definition.privacy.mode](host, transport)


__all__ = ["ROUNDS", "PrivacyRound", "RoundFailed", "RoundHost", "RoundOutcome", "RoundPlan", "SumOutcome", "Transport", "round_for"]
