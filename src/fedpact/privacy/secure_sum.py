"""Exact secure sums of statistics (counts, sums, sums of squares, histogram bins).

The model updates of ``secure`` are quantised against a declared clip (:mod:`.quantize`),
which suits deltas but not statistics: a sum of squares has no useful a-priori bound, and a
count must come out exact. A statistic therefore enters secure aggregation as fixed-point
integers split into limbs:

- a ``count`` entry (whole, non-negative: row counts, missing cells, histogram bins) is one
  coordinate of the ring Z_{2^64}; the sum of ``n`` of them is exact while it stays below
  2^63;
- a ``real`` entry ``v`` (a sum, a sum of squares) becomes the integer
  ``V = round(v * 2^FRACTION_BITS)``, written in two's complement over ``LIMBS`` limbs of
  ``LIMB_BITS`` bits, each limb one coordinate of Z_{2^64}. Limbs are added without carries
  (``n`` limbs of 32 bits cannot wrap 64 bits), and the unmasked limb sums rebuild the exact
  integer total, so the only error is each site's rounding to 2^-FRACTION_BITS (about
  1e-12 per site) and values up to about 1.5e26 are carried.

Masking, dropout recovery and the unmasking are the SecAgg protocol of :mod:`.secagg`
(the same one the model updates use); this module only decides the vector. The
aggregator learns the totals and nothing else: no site's figure, no per-site minimum or
maximum (the callers never put those in the vector).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fedpact.privacy.secagg import SecAggParams

#: Fixed-point fraction of a real entry: a resolution of 2^-40 (about 9e-13).
FRACTION_BITS = 40
#: Limbs per real entry and bits per limb: 128-bit two's complement integers.
LIMBS, LIMB_BITS = 4, 32
#: The ring of every statistics sum (limb sums need 64 bits).
SUM_BITS = 64

Entry = Literal["count", "real"]
#: What the vector holds: (tensor name, shape, kind), in this order.
SumLayout = list[tuple[str, tuple[int, ...], Entry]]

_TOTAL_BITS = LIMBS * LIMB_BITS
_LIMB_MASK = (1 << LIMB_BITS) - 1


class SecureSumError(ValueError):
    """A statistic that does not fit the secure-sum plan (a wrong tensor, a negative count, a huge value)."""


@dataclass(frozen=True)
class SumPlan:
    """What every party of one secure statistics sum agrees on, announced by the aggregator."""

    secagg: SecAggParams
    layout: tuple[tuple[str, tuple[int, ...], Entry], ...]

    @property
    def vector_length(self) -> int:
        return sum(_width(shape, kind) for _, shape, kind in self.layout)

    def to_dict(self) -> dict[str, Any]:
        return {"secagg": self.secagg.to_dict(),
                "layout": [[name, list(shape), kind] for name, shape, kind in self.layout]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SumPlan:
        try:
            layout = tuple((str(name), tuple(int(s) for s in shape), _entry(kind)) for name, shape, kind in d["layout"])
            plan = cls(SecAggParams.from_dict(d["secagg"]), layout)
        except (KeyError, TypeError, ValueError) as exc:
            raise SecureSumError(f"malformed secure-sum plan: {exc}") from exc
        if plan.secagg.bits != SUM_BITS or plan.secagg.vector_length != plan.vector_length:
            raise SecureSumError("the secure-sum plan's ring or vector length does not match its layout")
        return plan


def _entry(kind: Any) -> Entry:
    if kind not in ("count", "real"):
        raise SecureSumError(f"a secure-sum entry is 'count' or 'real', not {kind!r}")
    return "count" if kind == "count" else "real"


def _width(shape: Sequence[int], kind: Entry) -> int:
    return math.prod(shape) * (LIMBS if kind == "real" else 1)


def sum_round_id(request_id: str) -> str:
    """The SecAgg round id of a statistics request: its own namespace, so the masks of a
    secure sum and of a training round never derive from the same id."""
    return f"stats.{request_id}"


def make_sum_plan(*, task: str, request_id: str, participants: Sequence[str], threshold: int, layout: SumLayout,
                  sparse: bool = False, degree: int | None = None) -> SumPlan:
    """The plan of one secure statistics sum among ``participants``."""
    entries = tuple((name, tuple(int(s) for s in shape), _entry(kind)) for name, shape, kind in layout)
    length = sum(_width(shape, kind) for _, shape, kind in entries)
    params = SecAggParams(task=task, round_id=sum_round_id(request_id), participants=tuple(participants), threshold=threshold,
                          vector_length=max(1, length), bits=SUM_BITS, sparse=sparse, degree=degree)
    return SumPlan(params, entries)


def encode_sums(plan: SumPlan, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    """One site's statistics as its ring vector (uint64), exactly the plan's tensors and shapes."""
    names = [name for name, _, _ in plan.layout]
    if sorted(tensors) != sorted(names):
        raise SecureSumError(f"the statistics must be exactly {sorted(names)}, got {sorted(tensors)}")
    n = plan.secagg.n
    count_limit = (2**63 - 1) // n
    real_limit = (2 ** (_TOTAL_BITS - 1) - 1) // n
    out: list[int] = []
    for name, shape, kind in plan.layout:
        arr = np.asarray(tensors[name], dtype=np.float64)
        if arr.shape != shape:
            raise SecureSumError(f"{name!r} must have shape {shape}, got {arr.shape}")
        if not np.isfinite(arr).all():
            raise SecureSumError(f"{name!r} holds NaN or infinite values")
        if kind == "count":
            if (arr < 0).any() or (arr != np.round(arr)).any() or (arr > count_limit).any():
                raise SecureSumError(f"{name!r} must hold whole counts in [0, {count_limit}]")
            out.extend(int(v) for v in arr.reshape(-1))
            continue
        for v in arr.reshape(-1).tolist():
            big = round(math.ldexp(v, FRACTION_BITS)) if v else 0  # exact: a power-of-two scaling
            if abs(big) > real_limit:
                raise SecureSumError(f"{name!r} holds {v:g}, beyond what a secure sum of {n} sites carries "
                                     f"(about {math.ldexp(real_limit, -FRACTION_BITS):.3g})")
            u = big % (1 << _TOTAL_BITS)
            out.extend((u >> (LIMB_BITS * i)) & _LIMB_MASK for i in range(LIMBS))
    vector = np.array(out, dtype=np.uint64) if out else np.zeros(1, dtype=np.uint64)
    if vector.size != plan.secagg.vector_length:
        raise SecureSumError(f"the statistics fill {vector.size} values, the plan {plan.secagg.vector_length}")
    return vector


def decode_sums(plan: SumPlan, ring_sum: np.ndarray) -> dict[str, np.ndarray]:
    """The totals the unmasked ring sum stands for, as float64 tensors of the plan's shapes."""
    y = np.asarray(ring_sum)
    if y.dtype != np.uint64 or y.shape != (plan.secagg.vector_length,):
        raise SecureSumError(f"the unmasked sum must be a uint64 vector of length {plan.secagg.vector_length}")
    values = [int(v) for v in y.tolist()]
    out: dict[str, np.ndarray] = {}
    pos = 0
    for name, shape, kind in plan.layout:
        size = math.prod(shape)
        if kind == "count":
            totals = values[pos:pos + size]
            if any(t >= 2**63 for t in totals):
                raise SecureSumError(f"the total of {name!r} is negative: the masks did not cancel")
            out[name] = np.array(totals, dtype=np.float64).reshape(shape)
            pos += size
            continue
        reals = []
        for _ in range(size):
            big = sum(values[pos + i] << (LIMB_BITS * i) for i in range(LIMBS)) % (1 << _TOTAL_BITS)
            if big >= 1 << (_TOTAL_BITS - 1):
                big -= 1 << _TOTAL_BITS
            reals.append(math.ldexp(big, -FRACTION_BITS) if big else 0.0)
            pos += LIMBS
        out[name] = np.array(reals, dtype=np.float64).reshape(shape)
    return out


__all__ = ["FRACTION_BITS", "LIMBS", "LIMB_BITS", "SUM_BITS", "SecureSumError", "SumLayout", "SumPlan",
           "decode_sums", "encode_sums", "make_sum_plan", "sum_round_id"]
