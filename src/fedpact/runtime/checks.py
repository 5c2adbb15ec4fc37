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


def statistics_reply(tensors: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], *,
                     counts: tuple[str, ...] = (), nonnegative: tuple[str, ...] = (), infinite_ok: tuple[str, ...] = (),
                     max_rows: int | None = None) -> dict[str, Any]:
    """A reply to a statistics request (imputation, k-means seed, analytics) with exactly the
    expected tensors, shapes and value ranges, so merging it can neither fail nor be skewed
    by an impossible figure.

    ``shapes`` maps each tensor name to its shape (``-1`` in the first place: any row count up
    to ``max_rows``); ``counts`` are integer-valued and within [0, MAX_SAMPLES];
    ``nonnegative`` must be >= 0; ``infinite_ok`` may hold +-inf (an empty column's range).
    """
    import numpy as np

    if set(tensors) != set(shapes):
        raise MessageRejected(f"statistics reply must hold the tensors {sorted(shapes)}, got {sorted(tensors)[:20]}")
    out: dict[str, Any] = {}
    for k, want in shapes.items():
        t = np.asarray(tensors[k])
        rows_ok = want[0] == -1 and t.ndim == len(want) and t.shape[1:] == want[1:] and (
            max_rows is None or t.shape[0] <= max_rows)
        if not (rows_ok or t.shape == want) or t.dtype.kind not in "fiu":
            raise MessageRejected(f"statistics reply {k!r} must be numbers of shape {want}, got {t.dtype}{t.shape}")
        v = t.astype(np.float64)
        if np.isnan(v).any() or (k not in infinite_ok and not np.isfinite(v).all()):
            raise MessageRejected(f"statistics reply {k!r} holds NaN or infinite values")
        if (k in counts or k.startswith("hist.")) and ((v < 0).any() or (v > MAX_SAMPLES).any()
                                                       or (v != np.round(v)).any()):
            raise MessageRejected(f"statistics reply {k!r} must be whole counts in [0, {MAX_SAMPLES}]")
        if k in nonnegative and (v < 0).any():
            raise MessageRejected(f"statistics reply {k!r} must be >= 0")
        out[k] = v
    return out


def kind_report(task: str, value: Mapping[str, float]) -> dict[str, float]:
    """An evaluation report of a regression or clustering task: the sums its pooled figure needs.

    An empty report (no hold-out rows) passes; a partial one or impossible sums are refused,
    since one wrong sum would move the pooled MSE, R2 or inertia of everyone.
    """
    if not value or task not in ("regression", "clustering"):
        return dict(value)
    need = {"regression": ("n", "sse", "sae", "sum_y", "sum_y2", "num_samples"),
            "clustering": ("inertia", "silhouette", "num_samples")}.get(task, ())
    absent = [k for k in need if k not in value]
    if absent:
        raise MessageRejected(f"a {task} evaluation must report {', '.join(need)}; missing {', '.join(absent)}")
    n = value.get("n", value["num_samples"])
    if n < 0 or value["num_samples"] < 0 or n != round(n):
        raise MessageRejected(f"{task} evaluation: the sample count must be a whole number >= 0, got {n}")
    if task == "regression":
        if value["sse"] < 0 or value["sae"] < 0 or value["sum_y2"] < 0 or value["n"] != value["num_samples"]:
            raise MessageRejected("regression evaluation: sse, sae and sum_y2 must be >= 0 and n equal num_samples")
    if task == "clustering" and (value["inertia"] < 0 or not -1.0 <= value["silhouette"] <= 1.0):
        raise MessageRejected("clustering evaluation: inertia must be >= 0 and silhouette within [-1, 1]")
    return dict(value)
