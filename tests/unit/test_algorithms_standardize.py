import numpy as np
import pytest

from fedpact.algorithms import apply_standardization, combine_moments, local_moments
from fedpact.common.tensors import decode_weights, encode_weights


def test_federated_equals_centralised():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1000, 6)) * [1, 10, 0.1, 100, 5, 2] + [0, 5, -3, 1000, 0, 7]).astype(np.float32)
    sites = np.split(x, [17, 400, 401])
    moments = [decode_weights(encode_weights(local_moments(s))) for s in sites]
    mean, std = combine_moments(moments)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(std, x.astype(np.float64).std(axis=0), rtol=1e-7)
    scaled = apply_standardization(sites[1], mean, std)
    assert scaled.dtype == np.float32 and scaled.shape == sites[1].shape
    pooled = np.concatenate([apply_standardization(s, mean, std) for s in sites])
    np.testing.assert_allclose(pooled.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(pooled.std(axis=0), 1, atol=1e-4)


def test_constant_features_pass_through():
    x = np.column_stack([np.full(10, 3.0), np.arange(10.0)])
    mean, std = combine_moments([local_moments(x)])
    assert std[0] == 1.0 and mean[0] == 3.0
    assert np.all(apply_standardization(x, mean, std)[:, 0] == 0.0)


def test_images_keep_their_shape():
    x = np.random.default_rng(1).random((20, 1, 4, 4), dtype=np.float32)
    m = local_moments(x)
    assert m["sum"].shape == (16,) and m["count"].tolist() == [20.0] * 16 and m["sum"].dtype == np.float64
    mean, std = combine_moments([m])
    assert apply_standardization(x, mean, std).shape == (20, 1, 4, 4)


def test_errors():
    with pytest.raises(ValueError, match="different feature counts"):
        combine_moments([local_moments(np.zeros((2, 3))), local_moments(np.zeros((2, 4)))])
    with pytest.raises(ValueError, match="no moments"):
        combine_moments([])
    with pytest.raises(ValueError, match="no samples"):
        combine_moments([local_moments(np.zeros((0, 3)))])
    with pytest.raises(ValueError, match="statistics cover 3 features, the data has 4"):
        apply_standardization(np.zeros((2, 4)), np.zeros(3), np.ones(3))
