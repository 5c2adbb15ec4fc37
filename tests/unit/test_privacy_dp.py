import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

from fedpact.privacy.dp import (
    PrivacyAccountant,
    add_gaussian_noise,
    central_dp_aggregate,
    central_noise_std,
    clip_update,
    distributed_noise_std,
    epsilon_for,
    gaussian_noise_like,
    global_norm,
    noise_multiplier_for,
    privatize_local,
    rounds_within_budget,
    secure_rng,
)

DELTA = 1e-5


def _update(rng, scale=1.0, dtype=np.float32):
    return {
        "w": (scale * rng.standard_normal((30, 20))).astype(dtype),
        "b": (scale * rng.standard_normal(20)).astype(dtype),
        "s": np.asarray(scale * rng.standard_normal(), dtype=dtype),
    }


def _library_epsilon(accountant, z, q, rounds, delta):
    acc = accountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
    return acc.get_epsilon(delta)


# --- clipping -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_bounds_global_norm_and_keeps_direction(dtype):
    update = _update(np.random.default_rng(0), scale=5.0, dtype=dtype)
    before = global_norm(update)
    clipped, norm = clip_update(update, 1.5)
    assert norm == pytest.approx(before)
    assert norm > 1.5
    assert global_norm(clipped) <= 1.5
    assert global_norm(clipped) == pytest.approx(1.5, rel=1e-5)
    factor = global_norm(clipped) / norm
    for name, arr in update.items():
        assert clipped[name].dtype == arr.dtype and clipped[name].shape == arr.shape
        np.testing.assert_allclose(clipped[name], arr * factor, rtol=1e-5, atol=1e-7)


def test_clip_is_a_no_op_below_the_bound_and_does_not_mutate():
    update = _update(np.random.default_rng(1), scale=0.01)
    original = {k: v.copy() for k, v in update.items()}
    clipped, norm = clip_update(update, 10.0)
    assert norm < 10.0
    for name in update:
        np.testing.assert_array_equal(clipped[name], original[name])
        np.testing.assert_array_equal(update[name], original[name])
    big = _update(np.random.default_rng(2), scale=100.0)
    big_copy = {k: v.copy() for k, v in big.items()}
    clip_update(big, 1.0)
    for name in big:
        np.testing.assert_array_equal(big[name], big_copy[name])


def test_clip_zero_update_and_norm_in_float64():
    zero = {"a": np.zeros(10, np.float32)}
    clipped, norm = clip_update(zero, 1.0)
    assert norm == 0.0 and not clipped["a"].any()
    huge = {"a": np.full(4, 1e30, np.float32)}  # squares overflow float32
    assert global_norm(huge) == pytest.approx(2e30)
    clipped, _ = clip_update(huge, 1.0)
    assert np.isfinite(clipped["a"]).all() and global_norm(clipped) <= 1.0


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf")])
def test_clip_rejects_bad_clip_norm(bad):
    with pytest.raises(ValueError, match="clip_norm must be a finite number > 0"):
        clip_update({"a": np.ones(3, np.float32)}, bad)


def test_clip_rejects_non_finite_and_non_float_updates():
    with pytest.raises(ValueError, match="NaN or infinite"):
        clip_update({"a": np.array([1.0, np.nan], np.float32)}, 1.0)
    with pytest.raises(ValueError, match="tensor 'n' has dtype int64"):
        clip_update({"n": np.arange(3)}, 1.0)


# --- noise ----------------------------------------------------------------------------


def test_noise_std_and_mean_match_statistically():
    weights = {"big": np.zeros((500, 400), np.float32), "small": np.zeros(7, np.float64)}
    noise = gaussian_noise_like(weights, 0.3, np.random.default_rng(42))
    assert noise["big"].dtype == np.float32 and noise["big"].shape == (500, 400)
    assert noise["small"].dtype == np.float64 and noise["small"].shape == (7,)
    # 200k samples: the sample std has relative error ~ 1/sqrt(2n) = 0.16 %; allow 1 %.
    assert float(noise["big"].std()) == pytest.approx(0.3, rel=0.01)
    assert abs(float(noise["big"].mean())) < 0.3 * 5 / math.sqrt(noise["big"].size)


def test_add_noise_equals_update_plus_same_seed_noise():
    update = _update(np.random.default_rng(3))
    noised = add_gaussian_noise(update, 0.5, np.random.default_rng(7))
    noise = gaussian_noise_like(update, 0.5, np.random.default_rng(7))
    for name, arr in update.items():
        assert noised[name].dtype == arr.dtype
        np.testing.assert_allclose(noised[name], arr + noise[name], rtol=1e-6, atol=1e-6)


def test_zero_std_gives_zero_noise_and_negative_std_is_refused():
    assert not gaussian_noise_like({"a": np.ones(5, np.float32)}, 0.0)["a"].any()
    with pytest.raises(ValueError, match="noise std must be a finite number >= 0"):
        gaussian_noise_like({"a": np.ones(5, np.float32)}, -0.1)


def test_default_generator_is_freshly_seeded():
    w = {"a": np.zeros(64, np.float32)}
    assert not np.array_equal(gaussian_noise_like(w, 1.0)["a"], gaussian_noise_like(w, 1.0)["a"])
    assert secure_rng().integers(2**62) != secure_rng().integers(2**62)


# --- calibration ----------------------------------------------------------------------


def test_central_aggregate_is_noised_sum_of_clipped_over_expected():
    rng = np.random.default_rng(4)
    updates = [_update(rng, scale=s) for s in (0.01, 3.0, 10.0)]
    out = central_dp_aggregate(updates, noise_multiplier=1.2, clip_norm=0.8, expected_participants=4, rng=np.random.default_rng(9))
    total = {k: sum(clip_update(u, 0.8)[0][k].astype(np.float64) for u in updates) for k in updates[0]}
    noise = gaussian_noise_like(total, 1.2 * 0.8, np.random.default_rng(9))
    for name in total:
        assert out[name].dtype == np.float32
        np.testing.assert_allclose(out[name], (total[name] + noise[name]) / 4, rtol=1e-5, atol=1e-6)


def test_central_aggregate_noise_std_is_z_c_over_expected():
    zeros = [{"a": np.zeros(200_000, np.float32)} for _ in range(3)]
    out = central_dp_aggregate(zeros, noise_multiplier=2.0, clip_norm=0.5, expected_participants=5, rng=np.random.default_rng(5))
    assert float(out["a"].std()) == pytest.approx(2.0 * 0.5 / 5, rel=0.01)


def test_central_aggregate_rejects_mismatched_updates():
    with pytest.raises(ValueError, match="update 1 does not have the tensor names and shapes"):
        central_dp_aggregate([{"a": np.zeros(3, np.float32)}, {"a": np.zeros(4, np.float32)}], 1.0, 1.0, 2)
    with pytest.raises(ValueError, match="no updates"):
        central_dp_aggregate([], 1.0, 1.0, 2)


def test_local_privatization_clips_then_adds_full_noise():
    update = {"a": np.full(200_000, 1.0, np.float32)}
    noised, norm = privatize_local(update, clip_norm=1.0, noise_multiplier=0.7, rng=np.random.default_rng(6))
    assert norm == pytest.approx(math.sqrt(200_000))
    clipped_value = 1.0 / math.sqrt(200_000)
    assert float(noised["a"].mean()) == pytest.approx(clipped_value, abs=0.7 * 5 / math.sqrt(200_000))
    assert float(noised["a"].std()) == pytest.approx(0.7, rel=0.01)


def test_distributed_shares_sum_to_central_noise():
    z, c, n = 1.1, 0.9, 10
    std = distributed_noise_std(z, c, n)
    assert std == pytest.approx(z * c / math.sqrt(n))
    rng = np.random.default_rng(8)
    total = sum(rng.normal(0.0, std, 100_000) for _ in range(n))
    assert float(total.std()) == pytest.approx(central_noise_std(z, c), rel=0.015)


def test_distributed_noise_is_sized_for_min_honest_participants():
    z, c = 1.0, 2.0
    assert distributed_noise_std(z, c, 10, min_honest=6) == pytest.approx(z * c / math.sqrt(6))
    assert distributed_noise_std(z, c, 10, min_honest=6) > distributed_noise_std(z, c, 10)
    # with only the 6 honest participants contributing, their shares still carry z*C
    rng = np.random.default_rng(10)
    total = sum(rng.normal(0.0, distributed_noise_std(z, c, 10, 6), 100_000) for _ in range(6))
    assert float(total.std()) == pytest.approx(z * c, rel=0.015)
    with pytest.raises(ValueError, match=r"min_honest \(11\) cannot exceed n_expected \(10\)"):
        distributed_noise_std(z, c, 10, min_honest=11)
    with pytest.raises(ValueError, match="min_honest must be an integer >= 1"):
        distributed_noise_std(z, c, 10, min_honest=0)
    with pytest.raises(ValueError, match="n_expected must be an integer >= 1"):
        distributed_noise_std(z, c, 0)


# --- accountant -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "library", "z", "q", "rounds"),
    [
        ("rdp", rdp.RdpAccountant, 1.0, 0.1, 50),
        ("rdp", rdp.RdpAccountant, 0.8, 1.0, 30),
        ("pld", pld.PLDAccountant, 1.5, 0.2, 20),
    ],
)
def test_accountant_epsilon_matches_library_figure(kind, library, z, q, rounds):
    expected = _library_epsilon(library, z, q, rounds, DELTA)
    acc = PrivacyAccountant(z, q, DELTA, accountant=kind)
    assert acc.rounds == 0 and acc.epsilon() == 0.0
    acc.step(rounds)
    assert acc.rounds == rounds
    assert acc.epsilon() == pytest.approx(expected, rel=1e-9)
    assert epsilon_for(z, q, rounds, DELTA, accountant=kind) == pytest.approx(expected, rel=1e-9)


def test_accountant_stepping_round_by_round_matches_composing_at_once():
    acc = PrivacyAccountant(1.0, 1.0, DELTA)
    for _ in range(12):
        acc.step()
    assert acc.rounds == 12
    assert acc.epsilon() == pytest.approx(_library_epsilon(rdp.RdpAccountant, 1.0, 1.0, 12, DELTA), rel=1e-9)


def test_epsilon_grows_with_rounds_and_sampling_and_shrinks_with_noise():
    by_rounds = [epsilon_for(1.0, 1.0, t, DELTA) for t in (1, 10, 50, 100)]
    assert by_rounds == sorted(by_rounds) and len(set(by_rounds)) == 4
    by_noise = [epsilon_for(z, 1.0, 20, DELTA) for z in (0.5, 1.0, 2.0, 4.0)]
    assert by_noise == sorted(by_noise, reverse=True) and len(set(by_noise)) == 4
    assert epsilon_for(1.0, 0.1, 20, DELTA) < epsilon_for(1.0, 1.0, 20, DELTA)
    assert epsilon_for(1.0, 1.0, 20, 1e-3) < epsilon_for(1.0, 1.0, 20, DELTA)


@pytest.mark.parametrize(("z", "q", "rounds"), [(0.7, 1.0, 40), (2.5, 1.0, 100), (1.2, 0.1, 30)])
def test_noise_multiplier_for_round_trips(z, q, rounds):
    target = epsilon_for(z, q, rounds, DELTA)
    found = noise_multiplier_for(target, q, rounds, DELTA)
    assert found == pytest.approx(z, abs=1e-3)
    assert epsilon_for(found, q, rounds, DELTA) <= target * (1 + 1e-9)


def test_noise_multiplier_for_refuses_meaningless_budget():
    with pytest.raises(ValueError, match="no meaningful privacy"):
        noise_multiplier_for(1e6, 1.0, 10, DELTA)


def test_rounds_within_budget_is_the_last_round_that_fits():
    z, q, budget = 1.0, 1.0, 8.0
    t = rounds_within_budget(z, q, DELTA, budget)
    assert t > 0
    assert epsilon_for(z, q, t, DELTA) <= budget < epsilon_for(z, q, t + 1, DELTA)
    assert rounds_within_budget(0.3, 1.0, DELTA, 0.5) == 0
    assert rounds_within_budget(z, q, DELTA, epsilon_for(z, q, 100, DELTA)) == 100


def test_rounds_within_budget_with_subsampling_and_pld():
    t = rounds_within_budget(2.0, 0.1, DELTA, 1.0)
    assert epsilon_for(2.0, 0.1, t, DELTA) <= 1.0 < epsilon_for(2.0, 0.1, t + 1, DELTA)
    t_pld = rounds_within_budget(3.0, 1.0, DELTA, 3.0, accountant="pld")
    assert epsilon_for(3.0, 1.0, t_pld, DELTA, "pld") <= 3.0 < epsilon_for(3.0, 1.0, t_pld + 1, DELTA, "pld")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta": 0.0}, r"delta must be in the open interval \(0, 1\)"),
        ({"delta": 1.0}, r"delta must be in the open interval \(0, 1\)"),
        ({"delta": -1e-5}, r"delta must be in the open interval \(0, 1\)"),
        ({"sampling_rate": 0.0}, r"sampling_rate must be in \(0, 1\]"),
        ({"sampling_rate": 1.5}, r"sampling_rate must be in \(0, 1\]"),
        ({"noise_multiplier": 0.0}, "noise_multiplier must be a finite number > 0"),
        ({"noise_multiplier": -1.0}, "noise_multiplier must be a finite number > 0"),
        ({"accountant": "moments"}, "unknown accountant 'moments'; use 'rdp' or 'pld'"),
    ],
)
def test_accountant_rejects_bad_parameters(kwargs, message):
    params = {"noise_multiplier": 1.0, "sampling_rate": 0.5, "delta": DELTA} | kwargs
    with pytest.raises(ValueError, match=message):
        PrivacyAccountant(**params)


def test_functions_reject_bad_parameters():
    with pytest.raises(ValueError, match="rounds must be an integer >= 0"):
        epsilon_for(1.0, 1.0, -1, DELTA)
    with pytest.raises(ValueError, match="rounds must be an integer >= 0"):
        PrivacyAccountant(1.0, 1.0, DELTA).step(-2)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        noise_multiplier_for(1.0, 1.0, 0, DELTA)
    with pytest.raises(ValueError, match="target_epsilon must be a finite number > 0"):
        noise_multiplier_for(0.0, 1.0, 10, DELTA)
    with pytest.raises(ValueError, match="epsilon_budget must be a finite number > 0"):
        rounds_within_budget(1.0, 1.0, DELTA, -1.0)
    with pytest.raises(ValueError, match=r"delta must be in the open interval \(0, 1\)"):
        rounds_within_budget(1.0, 1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="clip_norm must be a finite number > 0"):
        privatize_local({"a": np.ones(2, np.float32)}, -1.0, 1.0)
