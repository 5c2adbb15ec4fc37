"""Multinomial logistic regression in plain NumPy.

It needs no deep-learning framework, so a participant training a linear model never
imports torch; it is convex, which makes it the reference case for federated averaging.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from fedpact.models.onnx_export import OnnxGraph


class _Adam:
    def __init__(self, lr: float, params: list[np.ndarray], b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self.t += 1
        c1 = 1.0 - self.b1**self.t
        c2 = 1.0 - self.b2**self.t
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * g * g
            p -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)


class _Sgd:
    def __init__(self, lr: float):
        self.lr = lr

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        for p, g in zip(params, grads):
            p -= self.lr * g


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class SoftmaxRegression(Model):
    """Linear classifier ``softmax(x W^T + b)`` with optional L2 penalty on ``W``.

    Weights start at zero: the problem is convex, so no random start is needed and every
    participant begins from the same point.
    """

    def __init__(self, n_features: int, n_classes: int, *, l2: float = 0.0, seed: int = 0):
        if n_features < 1 or n_classes < 2:
            raise ValueError(f"need >= 1 feature and >= 2 classes, got {n_features} and {n_classes}")
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        self.n_features, self.num_classes, self.l2, self.seed = n_features, n_classes, float(l2), seed
        self.weight = np.zeros((n_classes, n_features), dtype=np.float32)
        self.bias = np.zeros(n_classes, dtype=np.float32)

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": self.weight.shape, "bias": self.bias.shape}

    def get_weights(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight.copy(), "bias": self.bias.copy()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        checked = check_weights(self._shapes(), weights)
        self.weight[...] = checked["weight"]
        self.bias[...] = checked["bias"]

    def _flat(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        x = x.reshape(len(x), int(np.prod(x.shape[1:])))
        if x.shape[1] != self.n_features:
            raise ValueError(f"model expects {self.n_features} features per sample, got {x.shape[1]}")
        return x

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias

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
        x = self._flat(x)
        y = check_labels(y_idx, self.num_classes)
        check_fit_args(len(x), len(y), epochs, batch_size, lr, optimizer, prox_mu)
        n = len(x)
        n_batches = -(-n // batch_size)
        params = [self.weight, self.bias]
        start = [p.copy() for p in params] if prox_mu > 0 else None
        opt = _Adam(lr, params) if optimizer == "adam" else _Sgd(lr)
        rng = np.random.default_rng(seed)
        metrics = empty_metrics()
        for epoch in range(epochs):
            perm = rng.permutation(n)
            loss_sum, correct = 0.0, 0
            for b in range(n_batches):
                idx = perm[b * batch_size : (b + 1) * batch_size]
                xb, yb = x[idx], y[idx]
                logp = _log_softmax(self._logits(xb))
                rows = np.arange(len(idx))
                loss_sum += float(-logp[rows, yb].sum())
                correct += int((logp.argmax(axis=1) == yb).sum())
                delta = np.exp(logp)
                delta[rows, yb] -= 1.0
                delta /= len(idx)
                grads = [delta.T @ xb, delta.sum(axis=0)]
                if self.l2:
                    grads[0] += self.l2 * self.weight
                if start is not None:
                    for g, p, p0 in zip(grads, params, start):
                        g += prox_mu * (p - p0)
                opt.step(params, grads)
                if on_batch is not None:
                    on_batch(epoch * n_batches + b + 1, epochs * n_batches)
            metrics = {"loss": loss_sum / n, "accuracy": correct / n, "num_samples": n}
            if on_epoch is not None:
                on_epoch(epoch, dict(metrics))
        return metrics

    def evaluate(self, x: np.ndarray, y_idx: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
        x = self._flat(x)
        y = check_labels(y_idx, self.num_classes)
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y_idx has {len(y)} labels")
        if len(x) == 0:
            return empty_metrics()
        loss_sum, correct = 0.0, 0
        for s in range(0, len(x), batch_size):
            logp = _log_softmax(self._logits(x[s : s + batch_size]))
            yb = y[s : s + batch_size]
            loss_sum += float(-logp[np.arange(len(yb)), yb].sum())
            correct += int((logp.argmax(axis=1) == yb).sum())
        return {"loss": loss_sum / len(x), "accuracy": correct / len(x), "num_samples": len(x)}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._logits(self._flat(x)).argmax(axis=1).astype(np.int64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.exp(_log_softmax(self._logits(self._flat(x)))).astype(np.float32)

    def onnx_layers(self, graph: OnnxGraph, x: str) -> str:
        return graph.gemm(graph.flatten(x), self.weight, self.bias)
