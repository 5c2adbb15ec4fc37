"""Fixed-point quantisation into Z_{2^bits}: exact modular sums, declared error bounds, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from fedpact.privacy.quantize import FixedPoint, QuantizationError, quantization_error_bound


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("rounding", ["stochastic", "deterministic"])
def test_weighted_average_within_declared_error(bits: int, rounding: str) -> None:
    rng = np.random.default_rng(0)
    n, clip, max_w = 10, 1.0, 500
    fp = FixedPoint(clip=clip, bits=bits, max_weight=max_w, max_summands=n, rounding=rounding)  # type: ignore[arg-type]
    xs = [rng.uniform(-1.5, 1.5, 1000) for _ in range(n)]  # some beyond the clip range
    ws = [int(w) for w in rng.integers(1, max_w + 1, n)]
    total = np.zeros(1001, dtype=fp.dtype)
    for x, w in zip(xs, ws):
        total += fp.encode_weighted(x, w, rng)  # uint arithmetic wraps modulo 2^bits
    avg, tw = fp.decode_weighted_sum(total)
    assert tw == sum(ws)
    expected = sum(w * np.clip(x, -clip, clip) for x, w in zip(xs, ws)) / sum(ws)
    err = np.abs(avg - expected).max()
    assert err <= fp.average_error_bound(n, tw)
    assert err > 0  # it is a quantisation, not a copy


def test_negative_values_wrap_and_come_back() -> None:
    fp = FixedPoint(clip=2.0, max_summands=3, rounding="deterministic")
    a = fp.encode(np.array([-2.0, -1.0, 0.5]))
    assert a.dtype == np.uint32 and a[0] > 2**31  # two's complement in the ring
    s = fp.encode(np.array([-2.0, -1.0, 0.5])) + fp.encode(np.array([-2.0, 2.0, 0.25]))
    np.testing.assert_allclose(fp.decode_sum(s), [-4.0, 1.0, 0.75], atol=fp.sum_error_bound(2))


def test_worst_case_inputs_do_not_overflow() -> None:
    n, w = 7, 1000
    fp = FixedPoint(clip=3.0, bits=32, max_weight=w, max_summands=n)
    for sign in (1.0, -1.0):
        total = np.zeros(3, dtype=fp.dtype)
        for _ in range(n):
            total += fp.encode_weighted(np.full(2, sign * 3.0), w)
        avg, tw = fp.decode_weighted_sum(total)
        assert tw == n * w
        np.testing.assert_allclose(avg, sign * 3.0, atol=fp.average_error_bound(n, tw))


def test_stochastic_rounding_is_unbiased() -> None:
    fp = FixedPoint(clip=1.0, max_summands=2**20)  # coarse on purpose
    x = np.full(200_000, 0.3 / fp.scale)  # 0.3 of one quantisation step
    q = fp.signed(fp.encode(x, 1, np.random.default_rng(1))).astype(np.float64)
    assert set(np.unique(q)) <= {0.0, 1.0}
    assert abs(q.mean() - 0.3) < 0.01
    det = FixedPoint(clip=1.0, max_summands=2**20, rounding="deterministic")
    assert det.signed(det.encode(x)).max() == 0  # deterministic rounding loses it entirely


def test_bound_function_matches_the_quantiser() -> None:
    fp = FixedPoint(clip=0.5, bits=32, max_weight=1, max_summands=5)
    assert quantization_error_bound(0.5, 32, 5) == pytest.approx(fp.average_error_bound(5, 5))
    assert quantization_error_bound(0.5, 32, 5) < 1e-8


def test_refuses_what_does_not_fit_the_ring() -> None:
    with pytest.raises(QuantizationError, match="does not fit the ring"):
        FixedPoint(clip=1.0, bits=32, max_weight=2**20, max_summands=2**12)
    with pytest.raises(QuantizationError, match="quantisation levels.*bits=64"):
        FixedPoint(clip=1.0, bits=32, max_weight=1, max_summands=2**24)
    FixedPoint(clip=1.0, bits=64, max_weight=1, max_summands=2**24)  # fits in 64 bits
    with pytest.raises(QuantizationError, match="bits=32 or bits=64"):
        FixedPoint(clip=1.0, bits=16)
    with pytest.raises(QuantizationError, match="clip"):
        FixedPoint(clip=0.0)
    fp = FixedPoint(clip=1.0, max_weight=10, max_summands=2)
    with pytest.raises(QuantizationError, match="weight must be an integer in"):
        fp.encode(np.zeros(2), 11)
    with pytest.raises(QuantizationError, match="NaN"):
        fp.encode(np.array([np.nan]))


def test_corrupt_total_weight_is_detected() -> None:
    fp = FixedPoint(clip=1.0, max_weight=10, max_summands=2)
    y = fp.encode_weighted(np.zeros(3), 5)
    y[-1] = np.uint32(2**32 - 1)  # -1
    with pytest.raises(QuantizationError, match="corrupt"):
        fp.decode_weighted_sum(y)
