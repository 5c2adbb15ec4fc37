"""What each privacy mode does to an update, independent of how messages travel.

The runtime (``fedpact.runtime``) moves messages; this module decides what goes in them:

- ``secure`` / ``secure+dp``: :class:`SecurePlan` is what the aggregator announces at the start
  of a round (the secure-aggregation parameters and the quantisation bounds);
  :func:`encode_contribution` turns a participant's trained weights into the ring vector it
  feeds into secure aggregation, and :func:`decode_aggregate` turns the unmasked sum into
  the next global model and the round's (aggregate) training metrics.
- ``dp``: :func:`resolve_noise_multiplier` and :func:`budget_rounds` tie a task's declared
  privacy to the accountant of :mod:`fedpact.privacy.dp`.

What a participant contributes is its *delta* (trained weights minus the global model it
received), never its weights: deltas are small and bounded, which is what clipping and
quantisation need, and ``global + mean(delta)`` is the same FedAvg model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpact.common.definition import TaskDefinition
from fedpact.privacy.quantize import FixedPoint
from fedpact.privacy.secagg import SecAggParams

#: Aggregate training metrics carried inside the secure sum (weighted by sample count).
METRIC_NAMES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_weight")
#: Range of a metric value inside the secure sum (loss and accuracy are far inside it).
METRIC_CLIP = 1000.0
#: In secure+dp the per-coordinate quantisation range defaults to clip_norm plus this many
#: standard deviations of one participant's noise share, so clipping noise is negligible.
NOISE_SIGMAS = 8.0

Layout = list[tuple[str, tuple[int, ...], str]]


class PrivacyModeError(ValueError):
    """An update or aggregate that does not fit the round's privacy plan."""


def flatten(weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Layout]:
    """All tensors (sorted by name) as one float64 vector, and how to cut it back."""
    layout: Layout = []
    parts = []
    for name in sorted(weights):
        a = np.asarray(weights[name])
        layout.append((name, tuple(a.shape), a.dtype.name))
        parts.append(a.reshape(-1).astype(np.float64))
    return (np.concatenate(parts) if parts else np.zeros(0)), layout


def unflatten(flat: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    out, offset = {}, 0
    for name, shape, dtype in layout:
        n = math.prod(shape)
        out[name] = flat[offset : offset + n].reshape(shape).astype(dtype)
        offset += n
    if offset != flat.size:
        raise PrivacyModeError(f"the aggregate has {flat.size} values, the model {offset}")
    return out


def num_values(weights: Mapping[str, np.ndarray]) -> int:
    return int(sum(np.asarray(a).size for a in weights.values()))


# -- differential privacy ----------------------------------------------------------------
def sampling_rate(definition: TaskDefinition) -> float:
    """The probability that a participant takes part in a round, for the accountant."""
    return float(definition.fraction)


def resolve_noise_multiplier(definition: TaskDefinition) -> float:
    """The task's noise multiplier: declared, or calibrated so that all rounds meet target_epsilon."""
    from fedpact.privacy import dp

    p = definition.privacy
    if p.noise_multiplier is not None:
        return float(p.noise_multiplier)
    assert p.target_epsilon is not None
    return dp.noise_multiplier_for(p.target_epsilon, sampling_rate(definition), definition.rounds,
                                   p.effective_delta, p.effective_accountant)  # type: ignore[arg-type]


def epsilon_budget(definition: TaskDefinition) -> float | None:
    """The epsilon at which the task stops: epsilon_budget, else target_epsilon, else none."""
    p = definition.privacy
    return p.epsilon_budget if p.epsilon_budget is not None else p.target_epsilon


def budget_rounds(definition: TaskDefinition, noise_multiplier: float) -> int | None:
    """How many rounds the epsilon budget allows (None: no budget declared)."""
    from fedpact.privacy import dp

    budget = epsilon_budget(definition)
    if budget is None:
        return None
    p = definition.privacy
    # A target_epsilon calibration is only accurate to 1e-4 in z; allow that slack.
    slack = 1e-6 * budget if p.target_epsilon is not None and p.epsilon_budget is None else 0.0
    return dp.rounds_within_budget(noise_multiplier, sampling_rate(definition), p.effective_delta,
                                   budget + slack, p.effective_accountant)  # type: ignore[arg-type]


# -- secure aggregation ------------------------------------------------------------------
@dataclass(frozen=True)
class SecurePlan:
    """Everything the participants of one secure round must agree on, announced by the aggregator."""

    secagg: SecAggParams
    clip: float
    max_weight: int
    weighted: bool
    with_metrics: bool
    noise_std: float = 0.0
    clip_norm: float | None = None
    model_values: int = 0

    @property
    def bits(self) -> int:
        return self.secagg.bits

    @property
    def quantizer(self) -> FixedPoint:
        return FixedPoint(clip=self.clip, bits=self.bits, max_weight=self.max_weight, max_summands=self.secagg.n)

    @property
    def metric_quantizer(self) -> FixedPoint:
        return FixedPoint(clip=METRIC_CLIP, bits=self.bits, max_weight=self.max_weight, max_summands=self.secagg.n)

    @property
    def vector_length(self) -> int:
        # with metrics (secure): the metrics and the count of clipped inputs sit before the weight
        return self.model_values + (len(METRIC_NAMES) + 1 if self.with_metrics else 0) + 1

    def error_bound(self, total_weight: float) -> float:
        """Declared quantisation error per coordinate of the averaged delta."""
        return self.quantizer.average_error_bound(self.secagg.n, total_weight)

    def to_dict(self) -> dict[str, Any]:
        return {"secagg": self.secagg.to_dict(), "clip": self.clip, "max_weight": self.max_weight,
                "weighted": self.weighted, "with_metrics": self.with_metrics, "noise_std": self.noise_std,
                "clip_norm": self.clip_norm, "model_values": self.model_values}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SecurePlan:
        try:
            return cls(secagg=SecAggParams.from_dict(d["secagg"]), clip=float(d["clip"]),
                       max_weight=int(d["max_weight"]), weighted=bool(d["weighted"]),
                       with_metrics=bool(d["with_metrics"]), noise_std=float(d.get("noise_std", 0.0)),
                       clip_norm=None if d.get("clip_norm") is None else float(d["clip_norm"]),
                       model_values=int(d["model_values"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PrivacyModeError(f"malformed secure-aggregation plan: {exc}") from exc


#: The per-coordinate range of a ``secure`` update when ``privacy.clip`` is not declared: 1 suits
#: the deltas of gradient training; k-means sends its fractions (a cluster's share of the points
#: times their mean) and centroid moves, which reach a few units on standardised features.
SECURE_CLIP_DEFAULTS: dict[str, float] = {"kmeans": 10.0}


def default_secure_clip(definition: TaskDefinition) -> float:
    """``privacy.clip``'s default under ``secure`` for the definition's model."""
    return SECURE_CLIP_DEFAULTS.get(definition.model.name if definition.model else "", 1.0)


def make_secure_plan(definition: TaskDefinition, *, task: str, round_id: str, selected: Sequence[str],
                     announced: Mapping[str, int], model_values: int,
                     noise_multiplier: float | None = None) -> SecurePlan:
    """The aggregator's plan for a secure round (raises QuantizationError if it cannot fit the ring)."""
    from fedpact.privacy import dp

    p = definition.privacy
    n = len(selected)
    threshold = p.threshold_for(n)
    noise_std, clip_norm = 0.0, None
    if p.mode == "secure+dp":
        assert p.clip_norm is not None and noise_multiplier is not None
        # Noise shares sized so that the threshold's worth of participants alone carry the full noise.
        noise_std = dp.distributed_noise_std(noise_multiplier, p.clip_norm, n, min_honest=threshold)
        clip_norm = p.clip_norm
        clip = p.clip if p.clip is not None else p.clip_norm + NOISE_SIGMAS * noise_std
        max_weight, weighted = 1, False
    else:
        clip = p.clip if p.clip is not None else default_secure_clip(definition)
        max_weight, weighted = max(1, max(int(announced.get(u, 1)) for u in selected)), True
    length = model_values + (len(METRIC_NAMES) + 1 if weighted else 0) + 1
    params = SecAggParams(task=task, round_id=round_id, participants=tuple(selected), threshold=threshold,
                          vector_length=length, bits=p.effective_bits, sparse=bool(p.sparse), degree=p.degree)
    plan = SecurePlan(params, clip, max_weight, weighted=weighted, with_metrics=weighted, noise_std=noise_std,
                      clip_norm=clip_norm, model_values=model_values)
    plan.quantizer  # noqa: B018 - refuse now, with the quantiser's message, if the ring is too small
    return plan


def _metric_vector(train: Mapping[str, float], val: Mapping[str, float]) -> np.ndarray:
    def get(d: Mapping[str, float], k: str) -> float:
        v = d.get(k)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0

    has_val = 1.0 if "loss" in val or "accuracy" in val else 0.0
    return np.array([get(train, "loss"), get(train, "accuracy"), get(val, "loss"), get(val, "accuracy"), has_val])


def encode_contribution(plan: SecurePlan, global_weights: Mapping[str, np.ndarray],
                        new_weights: Mapping[str, np.ndarray], num_samples: int,
                        train_metrics: Mapping[str, float] | None = None, val_metrics: Mapping[str, float] | None = None,
                        rng: np.random.Generator | None = None) -> tuple[np.ndarray, int]:
    """The ring vector a participant feeds into secure aggregation, and the weight it used.

    secure: ``[q(w * delta), q(w * metrics), clipped, w]`` with w its sample count (at most the
    plan's max_weight) and ``clipped`` 1 when a coordinate of the delta exceeds the plan's clip.
    secure+dp: the delta is clipped to L2 norm clip_norm and this participant's
    Gaussian noise share is added before quantisation; weight 1, no metrics.
    """
    from fedpact.privacy import dp

    names = sorted(global_weights)
    if sorted(new_weights) != names or any(np.shape(new_weights[k]) != np.shape(global_weights[k]) for k in names):
        raise PrivacyModeError("the trained weights do not have the global model's tensors and shapes")
    # the difference in the tensors' own precision (float32 rounding of a delta is ~1e-7 of it)
    delta = np.concatenate([np.subtract(new_weights[k], global_weights[k]).reshape(-1) for k in names]) \
        if names else np.zeros(0)
    if delta.size != plan.model_values:
        raise PrivacyModeError(f"the model has {delta.size} values, the round's plan {plan.model_values}")
    if not np.isfinite(delta).all():
        raise PrivacyModeError("the trained weights contain NaN or infinite values")
    if plan.weighted:
        weight = int(min(max(int(num_samples), 0), plan.max_weight))
    else:
        weight = 1
    if plan.noise_std > 0:
        assert plan.clip_norm is not None
        clipped, _ = dp.clip_update({"d": delta}, plan.clip_norm)
        rng = rng or dp.secure_rng()
        delta = clipped["d"] + rng.normal(0.0, plan.noise_std, delta.size)
    out = np.empty(plan.vector_length, dtype=plan.quantizer.dtype)
    out[: plan.model_values] = plan.quantizer.encode(delta, weight, rng)
    if plan.with_metrics:
        out[plan.model_values : -2] = plan.metric_quantizer.encode(
            _metric_vector(train_metrics or {}, val_metrics or {}), weight, rng)
        # 1 when this input leaves the declared range and is clipped: the sum counts them, so the
        # aggregator can say that privacy.clip is too small (a clipped update silently biases the mean)
        out[-2] = int(delta.size > 0 and float(np.abs(delta).max()) > plan.clip)
    out[-1] = weight
    return out, weight


def decode_aggregate(plan: SecurePlan, global_weights: Mapping[str, np.ndarray], ring_sum: np.ndarray,
                     denominator: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, float], int]:
    """(next global weights, aggregate metrics, total weight) from the unmasked ring sum.

    secure: ``global + sum(w_u delta_u) / sum(w_u)``, sample-weighted FedAvg. secure+dp: the
    sum of clipped, noised deltas divided by ``denominator`` (the round's selected count, the
    fixed denominator of DP-FedAvg).
    """
    q = plan.quantizer
    signed = q.signed(np.asarray(ring_sum))
    total = int(signed[-1])
    if not 0 < total <= plan.secagg.n * plan.max_weight:
        raise PrivacyModeError(
            f"the unmasked total weight is {total}, outside (0, {plan.secagg.n * plan.max_weight}]: the masks did not "
            "cancel or an input broke the declared bounds"
        )
    g, layout = flatten(global_weights)
    sums = q.decode_sum(np.ascontiguousarray(ring_sum[: plan.model_values]), 1.0)
    divisor = float(total if plan.weighted else (denominator or total))
    new = unflatten(g + sums / divisor, layout)
    metrics: dict[str, float] = {}
    if plan.with_metrics:
        clipped = int(signed[-2])
        if not 0 <= clipped <= plan.secagg.n:
            raise PrivacyModeError(f"the unmasked count of clipped inputs is {clipped}, outside [0, {plan.secagg.n}]")
        metrics["clipped_inputs"] = float(clipped)
        m = plan.metric_quantizer.decode_sum(np.ascontiguousarray(ring_sum[plan.model_values : -2]), 1.0)
        metrics["train_loss"] = float(m[0] / total)
        metrics["train_accuracy"] = float(m[1] / total)
        val_weight = float(m[4])
        if val_weight > 0.5:
            metrics["val_loss"] = float(m[2] / val_weight)
            metrics["val_accuracy"] = float(m[3] / val_weight)
    return new, metrics, total
