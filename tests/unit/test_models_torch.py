import numpy as np
import pytest
import torch

from fedpact.algorithms import apply_standardization, combine_moments, local_moments
from fedpact.common.tensors import decode_weights, encode_weights
from fedpact.data import load_digits_dataset
from fedpact.models import CNNModel, MLPModel, ModelConfigError


@pytest.fixture(scope="module")
def digits():
    train, test = load_digits_dataset().split(0.25, seed=0)
    return train.x, train.y, test.x, test.y


def _distance(a: dict, b: dict) -> float:
    return sum(float(np.sum((a[k] - b[k]) ** 2)) for k in a)


def test_mlp_learns_digits(digits):
    xtr, ytr, xte, yte = digits
    mean, std = combine_moments([local_moments(xtr)])
    xtr, xte = apply_standardization(xtr, mean, std), apply_standardization(xte, mean, std)
    model = MLPModel((64,), 10, hidden=[128], seed=0)
    fit = model.fit(xtr, ytr, epochs=20, batch_size=32, lr=0.05, optimizer="sgd")
    assert fit["accuracy"] > 0.95 and fit["num_samples"] == len(xtr)
    assert model.evaluate(xte, yte)["accuracy"] >= 0.95


def test_mlp_with_adam_and_dropout(digits):
    xtr, ytr, xte, yte = digits
    model = MLPModel((64,), 10, hidden=[64, 32], dropout=0.1, seed=1)
    model.fit(xtr, ytr, epochs=15, batch_size=32, lr=0.003, optimizer="adam")
    assert model.evaluate(xte, yte)["accuracy"] >= 0.93


def test_weights_round_trip_and_are_copies(digits):
    xtr, ytr, xte, _ = digits
    model = MLPModel((64,), 10, hidden=[32], seed=0)
    model.fit(xtr, ytr, epochs=1, batch_size=64, lr=0.05)
    weights = model.get_weights()
    assert list(weights) == ["fc0.weight", "fc0.bias", "out.weight", "out.bias"]
    assert all(w.dtype == np.float32 for w in weights.values())
    weights["out.bias"][:] = 1e6
    assert model.get_weights()["out.bias"].max() < 1e6
    clone = MLPModel((64,), 10, hidden=[32], seed=99)
    clone.set_weights(decode_weights(encode_weights(model.get_weights())))
    assert np.array_equal(clone.predict(xte), model.predict(xte))
    with pytest.raises(ValueError, match=r"fc0.weight: expected shape \(32, 64\), got \(64, 32\)"):
        clone.set_weights({**model.get_weights(), "fc0.weight": np.zeros((64, 32), np.float32)})
    with pytest.raises(ValueError, match="missing tensor\\(s\\) out.bias"):
        clone.set_weights({k: v for k, v in model.get_weights().items() if k != "out.bias"})


def test_training_is_deterministic_and_leaves_global_state_alone(digits):
    xtr, ytr, _, _ = digits
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = MLPModel((64,), 10, hidden=[32], dropout=0.2, seed=5)
    b = MLPModel((64,), 10, hidden=[32], dropout=0.2, seed=5)
    assert _distance(a.get_weights(), b.get_weights()) == 0.0
    a.fit(xtr[:300], ytr[:300], epochs=2, batch_size=32, lr=0.05, seed=3)
    b.fit(xtr[:300], ytr[:300], epochs=2, batch_size=32, lr=0.05, seed=3)
    assert _distance(a.get_weights(), b.get_weights()) == 0.0
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.get_num_threads() == threads
    c = MLPModel((64,), 10, hidden=[32], dropout=0.2, seed=6)
    assert _distance(a.get_weights(), c.get_weights()) > 0.0


def test_fedprox_term_pulls_toward_start(digits):
    xtr, ytr, _, _ = digits
    start = MLPModel((64,), 10, hidden=[32], seed=0).get_weights()
    distances = []
    for mu in (0.0, 1.0):
        model = MLPModel((64,), 10, hidden=[32], seed=0)
        model.set_weights(start)
        model.fit(xtr, ytr, epochs=3, batch_size=32, lr=0.05, prox_mu=mu)
        distances.append(_distance(model.get_weights(), start))
    assert distances[1] < 0.7 * distances[0]


def test_cnn_smoke(digits):
    xtr, ytr, _, _ = digits
    x = xtr[:240].reshape(-1, 1, 8, 8)
    y = ytr[:240]
    model = CNNModel((1, 8, 8), 10, channels=[8, 16], hidden=32, dropout=0.25, seed=0)
    names = list(model.get_weights())
    assert names[:2] == ["conv0.weight", "conv0.bias"] and names[-1] == "out.bias"
    losses = []
    model.fit(x, y, epochs=6, batch_size=16, lr=0.003, optimizer="adam", on_epoch=lambda e, m: losses.append(m["loss"]))
    assert losses[-1] < 0.7 * losses[0]
    clone = CNNModel((1, 8, 8), 10, channels=[8, 16], hidden=32, seed=1)
    clone.set_weights(decode_weights(encode_weights(model.get_weights())))
    assert np.array_equal(clone.predict(x), model.predict(x))
    assert clone.evaluate(x.reshape(240, 64), y) == model.evaluate(x, y)
    assert clone.confusion_matrix(x, y).sum() == 240


def test_cnn_on_mnist_sized_images():
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28), dtype=np.float32)
    y = (x[:, 0, :14].mean(axis=(1, 2)) > x[:, 0, 14:].mean(axis=(1, 2))).astype(np.int64)
    model = CNNModel((1, 28, 28), 2, seed=0)
    result = model.fit(x, y, epochs=1, batch_size=32, lr=0.01)
    assert result["num_samples"] == 64 and np.isfinite(result["loss"])


def test_cnn_rejects_images_too_small():
    with pytest.raises(ModelConfigError, match="too small for 4 conv blocks"):
        CNNModel((1, 8, 8), 10, channels=[4, 4, 4, 4])
    with pytest.raises(ModelConfigError, match="channels, height, width"):
        CNNModel((64,), 10)
