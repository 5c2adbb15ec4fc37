"""Server-side checks on a participant's update before it can touch the global model.

One malformed or poisoned update (wrong tensor, wrong shape, NaN) would otherwise corrupt
every participant's model in the next round, so it is refused with a reason precise enough
for the sender to find the bug.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedpact.common.errors import UpdateRejected

_MAX_LISTED = 10


def _names(names: list[str]) -> str:
    more = len(names) - _MAX_LISTED
    return ", ".join(map(repr, names[:_MAX_LISTED])) + (f" and {more} more" if more > 0 else "")


def _non_finite(name: str, arr: np.ndarray) -> str | None:
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return None
    # Any NaN or inf makes the sum non-finite; the sum is one read pass without temporaries.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(arr.sum()):
            return None
    n_nan = int(np.count_nonzero(np.isnan(arr)))
    n_inf = int(np.count_nonzero(np.isinf(arr)))
    if not n_nan and not n_inf:
        return None
    return f"{name!r}: non-finite values ({n_nan} NaN, {n_inf} inf of {arr.size})"


def validate_update(reference: Mapping[str, np.ndarray], update: Mapping[str, np.ndarray]) -> None:
    """Raise UpdateRejected listing every way ``update`` differs from ``reference``."""
    problems = []
    missing = [k for k in reference if k not in update]
    unexpected = [k for k in update if k not in reference]
    if missing:
        problems.append(f"missing tensor(s) {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s) {_names(unexpected)}")
    for name, ref in reference.items():
        if name not in update:
            continue
        arr = update[name]
        if not isinstance(arr, np.ndarray):
            problems.append(f"{name!r}: not an array but {type(arr).__name__}")
            continue
        ref = np.asarray(ref)
        if arr.shape != ref.shape:
            problems.append(f"{name!r}: shape mismatch: expected {tuple(ref.shape)}, got {tuple(arr.shape)}")
        elif arr.dtype != ref.dtype:
            problems.append(f"{name!r}: dtype mismatch: expected {ref.dtype}, got {arr.dtype}")
        else:
            problem = _non_finite(name, arr)
            if problem:
                problems.append(problem)
    if problems:
        raise UpdateRejected("update rejected: " + "; ".join(problems))
