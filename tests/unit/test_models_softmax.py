import subprocess
import sys

import numpy as np
import pytest

from fedpact.algorithms import apply_standardization, combine_moments, local_moments
from fedpact.common.tensors import decode_weights, encode_weights
from fedpact.data import load_digits_dataset
from fedpact.models import SoftmaxRegression


@pytest.fixture(scope="module")
def digits():
    train, test = load_digits_dataset().split(0.25, seed=0)
    mean, std = combine_moments([local_moments(train.x)])
    return apply_standardization(train.x, mean, std), train.y, apply_standardization(test.x, mean, std), test.y


def test_importing_softmax_does_not_import_torch():
    code = (
        "import sys, fedpact.models.softmax, fedpact.models, fedpact.data, fedpact.algorithms;"
        "from fedpact.models import build_model; from fedpact.common.definition import ModelSpec;"
        "from fedpact.data import digits_schema;"
        "build_model(ModelSpec(name='softmax_regression'), digits_schema());"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adam", 0.01)])
def test_softmax_learns_digits(digits, optimizer, lr):
    xtr, ytr, xte, yte = digits
    model = SoftmaxRegression(64, 10)
    fit = model.fit(xtr, ytr, epochs=15, batch_size=32, lr=lr, optimizer=optimizer)
    assert fit["num_samples"] == len(xtr) and fit["accuracy"] > 0.95
    result = model.evaluate(xte, yte)
    assert result["accuracy"] >= 0.93 and result["num_samples"] == len(xte)
    assert model.predict(xte).dtype == np.int64
    cm = model.confusion_matrix(xte, yte)
    assert cm.shape == (10, 10) and cm.sum() == len(xte) and np.trace(cm) / len(xte) == pytest.approx(result["accuracy"])


def test_weights_round_trip_through_wire_format(digits):
    xtr, ytr, xte, yte = digits
    model = SoftmaxRegression(64, 10)
    model.fit(xtr, ytr, epochs=2, batch_size=64, lr=0.05)
    weights = model.get_weights()
    assert set(weights) == {"weight", "bias"} and all(w.dtype == np.float32 for w in weights.values())
    weights["weight"][0, 0] += 100.0
    assert model.get_weights()["weight"][0, 0] != weights["weight"][0, 0]
    clone = SoftmaxRegression(64, 10)
    clone.set_weights(decode_weights(encode_weights(model.get_weights())))
    assert np.array_equal(clone.predict(xte), model.predict(xte))


def test_set_weights_rejects_precisely():
    model = SoftmaxRegression(4, 3)
    with pytest.raises(ValueError, match="missing tensor\\(s\\) bias"):
        model.set_weights({"weight": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="unexpected tensor\\(s\\) extra"):
        model.set_weights({"weight": np.zeros((3, 4)), "bias": np.zeros(3), "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"weight: expected shape \(3, 4\), got \(4, 3\)"):
        model.set_weights({"weight": np.zeros((4, 3)), "bias": np.zeros(3)})


def test_fit_is_deterministic_and_reports_progress(digits):
    xtr, ytr, _, _ = digits
    epochs, batches = [], []
    a, b = SoftmaxRegression(64, 10), SoftmaxRegression(64, 10)
    a.fit(xtr, ytr, epochs=3, batch_size=100, lr=0.1, seed=7, on_epoch=lambda e, m: epochs.append((e, m)),
          on_batch=lambda done, total: batches.append((done, total)))
    b.fit(xtr, ytr, epochs=3, batch_size=100, lr=0.1, seed=7)
    assert np.array_equal(a.get_weights()["weight"], b.get_weights()["weight"])
    assert [e for e, _ in epochs] == [0, 1, 2] and set(epochs[0][1]) == {"loss", "accuracy", "num_samples"}
    assert epochs[-1][1]["loss"] < epochs[0][1]["loss"]
    assert batches[-1] == (42, 42) and len(batches) == 42


def test_fedprox_term_pulls_toward_start(digits):
    xtr, ytr, _, _ = digits
    start = SoftmaxRegression(64, 10)
    start.fit(xtr[:200], ytr[:200], epochs=1, batch_size=50, lr=0.05)
    distances = []
    for mu in (0.0, 1.0, 10.0):
        model = SoftmaxRegression(64, 10)
        model.set_weights(start.get_weights())
        model.fit(xtr, ytr, epochs=3, batch_size=32, lr=0.05, prox_mu=mu)
        w, w0 = model.get_weights(), start.get_weights()
        distances.append(sum(float(np.sum((w[k] - w0[k]) ** 2)) for k in w))
    assert distances[0] > distances[1] > distances[2]


def test_l2_shrinks_weights(digits):
    xtr, ytr, _, _ = digits
    plain, ridge = SoftmaxRegression(64, 10), SoftmaxRegression(64, 10, l2=0.1)
    plain.fit(xtr, ytr, epochs=3, batch_size=32, lr=0.05)
    ridge.fit(xtr, ytr, epochs=3, batch_size=32, lr=0.05)
    assert np.linalg.norm(ridge.weight) < np.linalg.norm(plain.weight)


def test_bad_inputs():
    model = SoftmaxRegression(4, 3)
    x = np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match="class indices 0..2"):
        model.fit(x, np.array([0, 1, 2, 3, 0]), epochs=1, batch_size=2, lr=0.1)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        model.fit(x, np.zeros(5, np.int64), epochs=1, batch_size=2, lr=0.1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="expects 4 features"):
        model.predict(np.zeros((2, 5)))
    assert model.evaluate(np.zeros((0, 4)), np.zeros(0, np.int64))["num_samples"] == 0
