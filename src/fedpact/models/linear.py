"""Linear and binary logistic regression in plain NumPy.

Both are convex with one weight vector, so they start from zero at every site, need no
deep-learning framework, and federated averaging of them behaves like centralised
mini-batch training. They share one mini-batch loop; only the link and loss differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from fedpact.models.base import (
    BatchCallback,
    EpochCallback,
    Model,
    check_fit_args,
    check_labels,
    check_weights,
    empty_metrics,
)
from fedpact.models.metrics import regression_metrics, regression_sums
from fedpact.models.softmax import _Adam, _Sgd

#: Gradient of the mean loss with respect to the linear output, and the batch's loss sum.
_LossGrad = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]]


def _targets(y: np.ndarray) -> np.ndarray:
    t = np.asarray(y)
    if t.dtype.kind not in "fiu":
        raise ValueError(f"regression targets must be numbers, got {t.dtype}")
    t = t.astype(np.float64, copy=False).reshape(-1)
    if not np.isfinite(t).all():
        raise ValueError("regression targets contain NaN or infinite values; fill or drop those rows")
    return t


class _LinearBase(Model):
    """``x w + b`` with an L2 penalty on ``w``, trained by mini-batch SGD or Adam."""

    def __init__(self, n_features: int, *, l2: float = 0.0, seed: int = 0):
        if n_features < 1:
            raise ValueError(f"need >= 1 feature, got {n_features}")
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        self.n_features, self.l2, self.seed = n_features, float(l2), seed
        self.weight = np.zeros(n_features, dtype=np.float32)
        self.bias = np.zeros(1, dtype=np.float32)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight.copy(), "bias": self.bias.copy()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        checked = check_weights({"weight": self.weight.shape, "bias": self.bias.shape}, weights)
        self.weight[...] = checked["weight"]
        self.bias[...] = checked["bias"]

    def _flat(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        x = x.reshape(len(x), int(np.prod(x.shape[1:])))
        if x.shape[1] != self.n_features:
            raise ValueError(f"model expects {self.n_features} features per sample, got {x.shape[1]}")
        return x

    def decision(self, x: np.ndarray) -> np.ndarray:
        """The linear output ``x w + b`` (a regression prediction, or a logit)."""
        return self._flat(x) @ self.weight + self.bias[0]

    def _train(self, x: np.ndarray, t: np.ndarray, loss_grad: _LossGrad, *, epochs: int, batch_size: int,
               lr: float, optimizer: str, seed: int, prox_mu: float, on_epoch: EpochCallback | None,
               on_batch: BatchCallback | None) -> float:
        """The loop both models share; returns the last epoch's mean loss."""
        n = len(x)
        n_batches = -(-n // batch_size)
        params = [self.weight, self.bias]
        start = [p.copy() for p in params] if prox_mu > 0 else None
        opt = _Adam(lr, params) if optimizer == "adam" else _Sgd(lr)
        rng = np.random.default_rng(seed)
        loss = 0.0
        for epoch in range(epochs):
            perm = rng.permutation(n)
            loss_sum = 0.0
            for b in range(n_batches):
                idx = perm[b * batch_size : (b + 1) * batch_size]
                xb = x[idx]
                delta, batch_loss = loss_grad(xb @ self.weight + self.bias[0], t[idx])
                loss_sum += batch_loss
                delta = (delta / len(idx)).astype(np.float32)
                grads = [xb.T @ delta, np.array([delta.sum()], dtype=np.float32)]
                if self.l2:
                    grads[0] += self.l2 * self.weight
                if start is not None:
                    for g, p, p0 in zip(grads, params, start):
                        g += prox_mu * (p - p0)
                opt.step(params, grads)
                if on_batch is not None:
                    on_batch(epoch * n_batches + b + 1, epochs * n_batches)
            loss = loss_sum / n
            if on_epoch is not None:
                on_epoch(epoch, {"loss": loss, "num_samples": n})
        if not (np.isfinite(self.weight).all() and np.isfinite(self.bias).all()):
            raise ValueError("training diverged (weights are no longer finite): lower the learning rate "
                             "or standardise the features and target (data.standardize)")
        return loss


class LinearRegression(_LinearBase):
    """Least-squares regression; the loss is the mean squared error."""

    num_classes = 1

    def fit(
        self,
        x: np.ndarray,
        y_idx: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        lr: float,
        optimizer: str = "sgd",
        seed: int = 0,
        prox_mu: float = 0.0,
        on_epoch: EpochCallback | None = None,
        on_batch: BatchCallback | None = None,
    ) -> dict[str, float]:
        """``y_idx`` holds the float targets here (the name is the Model contract's)."""
        xf = self._flat(x)
        t = _targets(y_idx)
        check_fit_args(len(xf), len(t), epochs, batch_size, lr, optimizer, prox_mu)

        def mse(pred: np.ndarray, tb: np.ndarray) -> tuple[np.ndarray, float]:
            err = pred.astype(np.float64) - tb
            return err, float(err @ err)

        self._train(xf, t, mse, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
                    prox_mu=prox_mu, on_epoch=on_epoch, on_batch=on_batch)
        return self.evaluate(xf, t)

    def evaluate(self, x: np.ndarray, y_idx: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
        """MSE (also as ``loss``), MAE, R2 and the count; see fedpact.models.metrics for pooling."""
        t = _targets(y_idx)
        xf = self._flat(x)
        if len(xf) != len(t):
            raise ValueError(f"x has {len(xf)} samples but y has {len(t)} targets")
        return regression_metrics(regression_sums(t, self.predict(xf)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.decision(x).astype(np.float64)

    def confusion_matrix(self, x: np.ndarray, y_idx: np.ndarray) -> np.ndarray:
        raise TypeError("a regression model has no confusion matrix; use evaluate() for MSE, MAE and R2")


class LogisticRegression(_LinearBase):
    """Binary logistic regression: ``P(class index 1) = sigmoid(x w + b)``."""

    num_classes = 2

    def fit(
        self,
        x: np.ndarray,
        y_idx: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        lr: float,
        optimizer: str = "sgd",
        seed: int = 0,
        prox_mu: float = 0.0,
        on_epoch: EpochCallback | None = None,
        on_batch: BatchCallback | None = None,
    ) -> dict[str, float]:
        xf = self._flat(x)
        y = check_labels(y_idx, 2).astype(np.float64)
        check_fit_args(len(xf), len(y), epochs, batch_size, lr, optimizer, prox_mu)

        def bce(z: np.ndarray, yb: np.ndarray) -> tuple[np.ndarray, float]:
            z = z.astype(np.float64)
            loss = np.logaddexp(0.0, z) - yb * z
            return 1.0 / (1.0 + np.exp(-z)) - yb, float(loss.sum())

        self._train(xf, y, bce, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
                    prox_mu=prox_mu, on_epoch=on_epoch, on_batch=on_batch)
        return self.evaluate(xf, y.astype(np.int64))

    def evaluate(self, x: np.ndarray, y_idx: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
        xf = self._flat(x)
        y = check_labels(y_idx, 2)
        if len(xf) != len(y):
            raise ValueError(f"x has {len(xf)} samples but y_idx has {len(y)} labels")
        if len(xf) == 0:
            return empty_metrics()
        z = self.decision(xf).astype(np.float64)
        loss = float((np.logaddexp(0.0, z) - y * z).mean())
        return {"loss": loss, "accuracy": float(((z > 0) == (y == 1)).mean()), "num_samples": len(xf)}

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of class index 1 per sample."""
        return 1.0 / (1.0 + np.exp(-self.decision(x).astype(np.float64)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.decision(x) > 0).astype(np.int64)
