"""What the aggregator's parts share: how a run fails, and the time stamps rounds carry."""

from __future__ import annotations

from datetime import UTC, datetime

from fedpact.common.errors import FedpactError


class AggregationFailed(FedpactError):
    """The task could not go on; the reason is recorded on the hub too."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
