"""Checks on every value the aggregator takes from a participant's message.

An admitted participant is not trusted: a loss of 1e308 or ``num_samples = 10**400`` once
overflowed the weighted mean, the round record could not be serialised and the task stayed
RUNNING. Each check here either returns a clean value or raises :class:`MessageRejected`
with a reason precise enough to put in the round record; the aggregator then drops that
participant's contribution and goes on with the others.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from fedpact.common.definition import MAX_SAMPLES
from fedpact.common.errors import UpdateRejected

#: Metrics one message may carry, and the largest magnitude a metric may have.
MAX_METRICS = 32
MAX_METRIC_VALUE = 1e12
_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
#: Longest free-text field (ids, public keys) accepted from a participant.
MAX_TEXT = 4096


class MessageRejected(UpdateRejected):
    """A participant's message that the aggregator will not use; the text says why."""


def num_samples(value: Any, cap: int | None) -> tuple[int, str | None]:
    """A positive integer claim, clipped to the definition's cap: ``(count, note or None)``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageRejected(f"num_samples must be a positive integer, got {_show(value)}")
    if not 1 <= value <= MAX_SAMPLES:
        raise MessageRejected(f"num_samples must be in [1, {MAX_SAMPLES}], got {_show(value)}")
    if cap is not None and value > cap:
        return cap, f"num_samples {value} clipped to max_samples_per_participant {cap}"
    return value, None


def metrics(value: Any, what: str = "metrics") -> dict[str, float]:
    """A mapping of at most MAX_METRICS sane names to finite numbers within +-MAX_METRIC_VALUE."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MessageRejected(f"{what} must be an object of numbers, got {type(value).__name__}")
    if len(value) > MAX_METRICS:
        raise MessageRejected(f"{what} has {len(value)} entries, at most {MAX_METRICS} are accepted")
    out: dict[str, float] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _METRIC_NAME.match(k):
            raise MessageRejected(f"{what}: {_show(k)} is not a metric name (letters, digits, '_', '.', '-'; "
                                  "at most 64, starting with a letter)")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MessageRejected(f"{what}.{k} must be a number, got {_show(v)}")
        try:
            f = float(v)
        except OverflowError:
            raise MessageRejected(f"{what}.{k} is out of range: {_show(v)}") from None
        if not math.isfinite(f) or abs(f) > MAX_METRIC_VALUE:
            raise MessageRejected(f"{what}.{k} must be finite and within +-{MAX_METRIC_VALUE:g}, got {_show(v)}")
        out[k] = f
    return out


def text(value: Any, field: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MessageRejected(f"{field} must be a non-empty string of at most {limit} characters, got {_show(value)}")
    return value


def weighted_means(per_participant: Mapping[str, tuple[int, Mapping[str, float]]], prefix: str) -> dict[str, float]:
    """Sample-weighted mean of each metric; inputs are checked values, so nothing can overflow.

    Weights are shares of the total (each <= 1) and values are bounded, so every partial sum
    stays within ``MAX_METRIC_VALUE`` times the participant count.
    """
    # A metric set that counts its own samples (a hold-out evaluation) is weighted by that count.
    weights = {name: _weight(n, ms) for name, (n, ms) in per_participant.items()}
    totals: dict[str, float] = {}
    for name, (_, ms) in per_participant.items():
        for k in ms:
            totals[k] = totals.get(k, 0.0) + weights[name]
    sums: dict[str, float] = {}
    for name, (_, ms) in per_participant.items():
        for k, v in ms.items():
            if k == "num_samples" or totals[k] <= 0:
                continue
            sums[k] = sums.get(k, 0.0) + (weights[name] / totals[k]) * v
    return {prefix + k: v for k, v in sums.items() if math.isfinite(v)}


def _weight(n: int, ms: Mapping[str, float]) -> float:
    own = ms.get("num_samples")
    if own is not None and 0 < own <= MAX_SAMPLES:
        return float(own)
    return float(n) if 0 < n <= MAX_SAMPLES else 0.0


def _show(value: Any) -> str:
    try:
        shown = repr(value)
    except ValueError:  # an int too long to print
        shown = f"an integer of {value.bit_length()} bits" if isinstance(value, int) else type(value).__name__
    return shown if len(shown) <= 80 else shown[:77] + "..."
