"""Differential privacy for federated updates, after DP-FedAvg (McMahan et al., ICLR 2018).

The unit of privacy is one participant: its whole update is clipped to an L2 norm of at
most ``C`` (the sensitivity of the sum), and Gaussian noise of standard deviation ``z * C``
(``z`` is the noise multiplier) is added to the sum of the clipped updates. Where that noise
is added decides who sees what:

- central DP: the aggregator sees raw updates and noises their sum once
  (:func:`central_dp_aggregate`); only the published model is private.
- local DP: each participant noises its own clipped update with the full ``z * C``
  (:func:`privatize_local`), so the aggregator only ever sees noised updates, at the cost
  of ``n`` times the noise variance in the average.
- distributed DP (``secure+dp``): each participant adds a share of the noise under secure
  aggregation (:func:`distributed_noise_std`) so that the sum the aggregator unmasks carries
  the central noise.

Epsilon is never computed here by hand: :class:`PrivacyAccountant` and the helpers below
delegate to Google's maintained ``dp-accounting`` library (RDP by default, PLD on request).
The sampling rate is the probability that a participant is selected in a round, so the
guarantee is user-level (one participant's whole data set), not example-level.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np

from fedpact.common.extras import MissingExtra

try:
    import dp_accounting
    from dp_accounting import pld, rdp
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon as _rdp_epsilon
except ImportError as exc:  # the base install has no accountant: say which extra brings it
    raise MissingExtra("dp", "privacy modes 'dp' and 'secure+dp'") from exc

Weights = dict[str, np.ndarray]
AccountantKind = Literal["rdp", "pld"]

#: Lowest noise multiplier the calibration searches; below it epsilon is meaninglessly large.
MIN_NOISE_MULTIPLIER = 0.05
#: Highest round count :func:`rounds_within_budget` reports; a budget that lasts longer is unbounded in practice.
MAX_ROUNDS = 1_000_000


def secure_rng() -> np.random.Generator:
    """A NumPy generator seeded with 128 bits from the operating system's CSPRNG.

    Noise whose seed can be guessed (a constant, the time, a round number) can be
    regenerated and subtracted, which removes the privacy guarantee entirely; 128 bits of OS
    entropy make the seed unguessable. PCG64 itself is not a cryptographic generator, but
    an observer only ever sees noise added to unknown updates, never raw generator output,
    so its state cannot be reconstructed. Known limit: like every floating-point Gaussian
    sampler, this one is not hardened against floating-point side channels (Mironov 2012).
    """
    return np.random.default_rng(secrets.randbits(128))


def _check_positive(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _check_delta(delta: float) -> float:
    d = float(delta)
    if not 0.0 < d < 1.0:
        raise ValueError(f"delta must be in the open interval (0, 1), got {delta!r}")
    return d


def _check_sampling_rate(sampling_rate: float) -> float:
    q = float(sampling_rate)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"sampling_rate must be in (0, 1] (the fraction of participants per round), got {sampling_rate!r}")
    return q


def _check_rounds(rounds: int) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
    return int(rounds)


def _float_arrays(update: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Refuse non-float tensors: noise or scaling would silently truncate them."""
    out = {}
    for name, arr in update.items():
        a = np.asarray(arr)
        if a.dtype.kind != "f":
            raise ValueError(f"tensor {name!r} has dtype {a.dtype}; DP clipping and noise apply to floating-point updates only")
        out[name] = a
    return out


def global_norm(update: Mapping[str, np.ndarray]) -> float:
    """L2 norm of all tensors taken together, accumulated in float64 to avoid float32 overflow."""
    total = 0.0
    for arr in _float_arrays(update).values():
        flat = arr.reshape(-1).astype(np.float64, copy=False)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_update(delta: Mapping[str, np.ndarray], clip_norm: float) -> tuple[Weights, float]:
    """Scale the whole update so that its global L2 norm is at most ``clip_norm``.

    One factor for all tensors keeps the update's direction, which per-tensor clipping
    would distort; the bound on the whole update is what makes ``clip_norm`` the
    sensitivity of the sum. Returns new arrays (same dtypes) and the norm before clipping,
    which callers may report (never the update itself) to tune ``clip_norm``.
    """
    c = _check_positive("clip_norm", clip_norm)
    arrays = _float_arrays(delta)
    norm = global_norm(arrays)
    if not math.isfinite(norm):
        raise ValueError("update contains NaN or infinite values; it cannot be clipped")
    factor = min(1.0, c / norm) if norm > 0 else 1.0
    # float32 rounding can push the scaled norm a hair above C; shave a relative 1e-6 to stay below.
    if factor < 1.0:
        factor *= 1.0 - 1e-6
    clipped = {name: (arr * factor).astype(arr.dtype, copy=False) for name, arr in arrays.items()}
    return clipped, norm


def gaussian_noise_like(weights: Mapping[str, np.ndarray], std: float, rng: np.random.Generator | None = None) -> Weights:
    """Gaussian noise with the names, shapes and dtypes of ``weights``.

    Drawn in float64 and cast afterwards, because float32 sampling would quantise the
    tails of the distribution that the privacy analysis assumes.
    """
    s = float(std)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"noise std must be a finite number >= 0, got {std!r}")
    gen = rng if rng is not None else secure_rng()
    return {
        name: gen.normal(0.0, s, size=arr.shape).astype(arr.dtype, copy=False)
        for name, arr in _float_arrays(weights).items()
    }


def add_gaussian_noise(update: Mapping[str, np.ndarray], std: float, rng: np.random.Generator | None = None) -> Weights:
    """``update + N(0, std^2)`` elementwise, as new arrays of the update's dtypes."""
    noise = gaussian_noise_like(update, std, rng)
    return {name: (np.asarray(arr, dtype=np.float64) + noise[name]).astype(noise[name].dtype) for name, arr in update.items()}


def central_noise_std(noise_multiplier: float, clip_norm: float) -> float:
    """Std of the noise on the sum of clipped updates: ``z * C``."""
    return _check_positive("noise_multiplier", noise_multiplier) * _check_positive("clip_norm", clip_norm)


def central_dp_aggregate(
    updates: Sequence[Mapping[str, np.ndarray]],
    noise_multiplier: float,
    clip_norm: float,
    expected_participants: float,
    rng: np.random.Generator | None = None,
) -> Weights:
    """Central DP-FedAvg: ``(sum of clipped updates + N(0, (z C)^2)) / expected_participants``.

    Each update is clipped here even if its sender already clipped it (a no-op then),
    because the guarantee must not depend on participants behaving. The divisor is the
    expected number of participants per round, not the number that arrived: dividing by
    the actual count would make the output depend on who took part beyond the sum's
    sensitivity (the fixed-denominator estimator of McMahan et al.). The average is
    unweighted; sample weights would let one participant's weight exceed the bound.
    """
    if not updates:
        raise ValueError("nothing to aggregate: no updates")
    n = _check_positive("expected_participants", expected_participants)
    std = central_noise_std(noise_multiplier, clip_norm)
    first = _float_arrays(updates[0])
    total = {name: np.zeros(arr.shape, dtype=np.float64) for name, arr in first.items()}
    for i, update in enumerate(updates):
        if set(update) != set(first) or any(np.shape(update[k]) != first[k].shape for k in first):
            raise ValueError(f"update {i} does not have the tensor names and shapes of update 0")
        clipped, _ = clip_update(update, clip_norm)
        for name, arr in clipped.items():
            total[name] += arr
    noised = add_gaussian_noise(total, std, rng)
    return {name: (noised[name] / n).astype(first[name].dtype) for name in first}


def privatize_local(
    delta: Mapping[str, np.ndarray],
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> tuple[Weights, float]:
    """Local DP: clip one participant's update and add the full ``N(0, (z C)^2)`` itself.

    Returns the noised update and the norm before clipping.
    """
    std = central_noise_std(noise_multiplier, clip_norm)
    clipped, norm = clip_update(delta, clip_norm)
    return add_gaussian_noise(clipped, std, rng), norm


def distributed_noise_std(noise_multiplier: float, clip_norm: float, n_expected: int, min_honest: int | None = None) -> float:
    """Per-participant noise std for ``secure+dp``: ``z * C / sqrt(min_honest)``.

    Independent Gaussian shares add up in variance, so if ``m`` participants each add
    ``N(0, (z C)^2 / m)`` the unmasked sum carries exactly the central ``N(0, (z C)^2)``.
    The guarantee assumes at least ``m`` participants really contribute their share: with
    ``n_expected`` shares and no dropouts the noise is as planned, but every participant that
    drops out or skips its noise removes its share and the sum is less private than the
    accountant reports. Passing ``min_honest`` (the fewest participants whose noise the
    round will contain, e.g. the secure-aggregation threshold) sizes the shares so that
    those alone already carry the full noise; everyone else adds extra noise, which only
    costs accuracy. ``min_honest`` defaults to ``n_expected``, i.e. no dropouts assumed.
    """
    for name, value in (("n_expected", n_expected), ("min_honest", min_honest)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    m = n_expected if min_honest is None else min_honest
    if m > n_expected:
        raise ValueError(f"min_honest ({m}) cannot exceed n_expected ({n_expected})")
    return central_noise_std(noise_multiplier, clip_norm) / math.sqrt(m)


@contextmanager
def _quiet_absl() -> Iterator[None]:
    """Silence dp-accounting's per-order convergence warnings; the orders it skips are harmless.

    The RDP accountant logs a warning for every fractional order whose series does not
    converge and drops that order, which only makes epsilon (slightly) conservative.
    """
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _new_accountant(kind: str) -> dp_accounting.PrivacyAccountant:
    if kind == "rdp":
        return rdp.RdpAccountant()
    if kind == "pld":
        return pld.PLDAccountant()
    raise ValueError(f"unknown accountant {kind!r}; use 'rdp' or 'pld'")


def _round_event(noise_multiplier: float, sampling_rate: float) -> dp_accounting.DpEvent:
    """One round: each participant takes part with probability q, the sum gets N(0, (z C)^2)."""
    return dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier))


class PrivacyAccountant:
    """Running (epsilon, delta) of a task, one :meth:`step` per aggregated round.

    A thin wrapper around a dp-accounting accountant so that the task's figure is exactly
    the library's: it composes one Poisson-subsampled Gaussian event per round. After a
    restart, rebuild it and call ``step(rounds_done)``.
    """

    def __init__(self, noise_multiplier: float, sampling_rate: float, delta: float, accountant: AccountantKind = "rdp") -> None:
        self.noise_multiplier = _check_positive("noise_multiplier", noise_multiplier)
        self.sampling_rate = _check_sampling_rate(sampling_rate)
        self.delta = _check_delta(delta)
        self.kind = accountant
        self._accountant = _new_accountant(accountant)
        self._event = _round_event(self.noise_multiplier, self.sampling_rate)
        self._rounds = 0

    @property
    def rounds(self) -> int:
        """Rounds composed so far."""
        return self._rounds

    def step(self, n: int = 1) -> None:
        """Account for ``n`` more rounds."""
        n = _check_rounds(n)
        if n:
            with _quiet_absl():
                self._accountant.compose(self._event, n)
            self._rounds += n

    def epsilon(self) -> float:
        """Epsilon spent so far at the task's delta (0.0 before the first round)."""
        if self._rounds == 0:
            return 0.0
        with _quiet_absl():
            return float(self._accountant.get_epsilon(self.delta))


def epsilon_for(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float, accountant: AccountantKind = "rdp") -> float:
    """Epsilon after ``rounds`` rounds at ``delta``."""
    acc = PrivacyAccountant(noise_multiplier, sampling_rate, delta, accountant)
    acc.step(_check_rounds(rounds))
    return acc.epsilon()


def noise_multiplier_for(
    target_epsilon: float, sampling_rate: float, rounds: int, delta: float, accountant: AccountantKind = "rdp"
) -> float:
    """Smallest noise multiplier whose epsilon after ``rounds`` rounds is at most ``target_epsilon``.

    Lets a task declare the privacy it promises rather than a noise level. The search is
    dp-accounting's own calibration (a bracketed root search over fresh accountants), so the
    result is consistent with :func:`epsilon_for` to within ``1e-4`` in ``z``.
    """
    eps = _check_positive("target_epsilon", target_epsilon)
    q = _check_sampling_rate(sampling_rate)
    d = _check_delta(delta)
    t = _check_rounds(rounds)
    if t == 0:
        raise ValueError("rounds must be >= 1 to calibrate a noise multiplier")
    if epsilon_for(MIN_NOISE_MULTIPLIER, q, t, d, accountant) <= eps:
        raise ValueError(
            f"epsilon {eps} is so large that even noise multiplier {MIN_NOISE_MULTIPLIER} stays within it; "
            "such a budget gives no meaningful privacy, choose a smaller target_epsilon"
        )
    with _quiet_absl():
        try:
            z = dp_accounting.calibrate_dp_mechanism(
                lambda: _new_accountant(accountant),
                lambda z: dp_accounting.SelfComposedDpEvent(_round_event(z, q), t),
                eps,
                d,
                bracket_interval=dp_accounting.LowerEndpointAndGuess(MIN_NOISE_MULTIPLIER, 1.0),
                tol=1e-4,
            )
        except dp_accounting.mechanism_calibration.NoBracketIntervalFoundError as exc:
            raise ValueError(f"no noise multiplier reaches epsilon {eps} at delta {d} over {t} rounds with q={q}") from exc
    return float(z)


def _largest_within(epsilon_after: Callable[[int], float], budget: float) -> int:
    """Largest ``t`` in [0, MAX_ROUNDS] with ``epsilon_after(t) <= budget``; epsilon grows with t."""
    if epsilon_after(1) > budget:
        return 0
    lo, hi = 1, 2
    while hi <= MAX_ROUNDS and epsilon_after(hi) <= budget:
        lo, hi = hi, hi * 2
    if hi > MAX_ROUNDS:
        if epsilon_after(MAX_ROUNDS) <= budget:
            return MAX_ROUNDS
        hi = MAX_ROUNDS
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if epsilon_after(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def rounds_within_budget(
    noise_multiplier: float, sampling_rate: float, delta: float, epsilon_budget: float, accountant: AccountantKind = "rdp"
) -> int:
    """How many rounds fit in ``epsilon_budget`` (0 if not even one); capped at ``MAX_ROUNDS``.

    A task stops once its next round would overspend. With RDP the per-round RDP curve is
    computed once and scaled by the round count, which is how the library composes too.
    """
    z = _check_positive("noise_multiplier", noise_multiplier)
    q = _check_sampling_rate(sampling_rate)
    d = _check_delta(delta)
    budget = _check_positive("epsilon_budget", epsilon_budget)
    if accountant == "rdp":
        one = rdp.RdpAccountant()
        with _quiet_absl():
            one.compose(_round_event(z, q))
        orders, per_round = one.orders, one.rdp
        return _largest_within(lambda t: float(_rdp_epsilon(orders, per_round * t, d)[0]), budget)
    _new_accountant(accountant)  # rejects an unknown kind before the search
    return _largest_within(lambda t: epsilon_for(z, q, t, d, accountant), budget)
