"""PyTorch networks (MLP and CNN) behind the framework-neutral Model interface.

Training is reproducible from ``seed`` without touching the caller's global RNG state
(``fork_rng``), and thread settings are left to the caller, who knows how many
participants share the machine.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fedpact.common.extras import MissingExtra

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as exc:  # the base install has no torch: say which extra brings it
    raise MissingExtra("torch", "the 'mlp' and 'cnn' models") from exc

from fedpact.models.base import (
    BatchCallback,
    EpochCallback,
    Model,
    ModelConfigError,
    check_fit_args,
    check_labels,
    check_weights,
    empty_metrics,
)
from fedpact.models.metrics import regression_metrics, regression_sums

if TYPE_CHECKING:
    from fedpact.models.onnx_export import OnnxGraph


def _as_input(x: np.ndarray, sample_shape: tuple[int, ...]) -> torch.Tensor:
    arr = np.asarray(x, dtype=np.float32)
    size = int(np.prod(sample_shape))
    if int(np.prod(arr.shape[1:], dtype=np.int64)) != size:
        raise ValueError(
            f"model expects samples of shape {'x'.join(map(str, sample_shape))}, "
            f"got {'x'.join(map(str, arr.shape[1:]))}"
        )
    arr = np.ascontiguousarray(arr.reshape((len(arr), *sample_shape)))
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


_optimizers_ready = False


def _prepare_optimizers() -> None:
    """Pay PyTorch's one-off optimiser start-up (it imports torch._dynamo, ~2 s) at build time.

    Otherwise a participant pays it inside its first round, where it counts against the
    round deadline instead of before the participant says it is ready.
    """
    global _optimizers_ready
    if not _optimizers_ready:
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        _optimizers_ready = True


class TorchModel(Model):
    """Adapter from an ``nn.Module`` to Model; weights are its state_dict.

    A classifier (``num_classes`` outputs, cross-entropy) unless ``regression`` is set: then
    the net has one output, the loss is the mean squared error and ``y_idx`` holds the
    float targets.
    """

    def __init__(self, net: nn.Module, sample_shape: Sequence[int], num_classes: int, *, regression: bool = False):
        _prepare_optimizers()
        self.net = net
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.num_classes = 1 if regression else num_classes
        self.regression = regression

    def _targets(self, y_idx: np.ndarray) -> torch.Tensor:
        if not self.regression:
            return torch.from_numpy(check_labels(y_idx, self.num_classes))
        t = np.asarray(y_idx)
        if t.dtype.kind not in "fiu" or not np.isfinite(t.astype(np.float64)).all():
            raise ValueError("regression targets must be finite numbers; fill or drop rows without one")
        return torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32).reshape(-1))

    def _loss(self, out: torch.Tensor, yb: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.regression:
            return F.mse_loss(out.reshape(-1), yb, reduction=reduction)
        return F.cross_entropy(out, yb, reduction=reduction)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().astype(np.float32, copy=True) for k, v in self.net.state_dict().items()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        state = self.net.state_dict()
        checked = check_weights({k: tuple(v.shape) for k, v in state.items()}, weights)
        with torch.no_grad():
            for name, tensor in state.items():
                tensor.copy_(torch.from_numpy(checked[name]))

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
        xt = _as_input(x, self.sample_shape)
        yt = self._targets(y_idx)
        check_fit_args(len(xt), len(yt), epochs, batch_size, lr, optimizer, prox_mu)
        params = [p for p in self.net.parameters() if p.requires_grad]
        start = [p.detach().clone() for p in params] if prox_mu > 0 else None
        opt: torch.optim.Optimizer = (
            torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr)
        )
        n = len(xt)
        n_batches = -(-n // batch_size)
        metrics = empty_metrics()
        self.net.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            for epoch in range(epochs):
                perm = torch.randperm(n, generator=gen)
                loss_sum, correct = 0.0, 0
                for b in range(n_batches):
                    idx = perm[b * batch_size : (b + 1) * batch_size]
                    xb, yb = xt[idx], yt[idx]
                    opt.zero_grad(set_to_none=True)
                    out = self.net(xb)
                    loss = self._loss(out, yb)
                    loss.backward()
                    if start is not None:
                        with torch.no_grad():
                            for p, p0 in zip(params, start):
                                if p.grad is not None:
                                    p.grad.add_(p - p0, alpha=prox_mu)
                    opt.step()
                    loss_sum += loss.item() * len(idx)
                    if not self.regression:
                        correct += int((out.argmax(dim=1) == yb).sum())
                    if on_batch is not None:
                        on_batch(epoch * n_batches + b + 1, epochs * n_batches)
                metrics = {"loss": loss_sum / n, "accuracy": correct / n, "num_samples": n}
                if self.regression:
                    metrics = {"loss": loss_sum / n, "mse": loss_sum / n, "num_samples": n}
                if on_epoch is not None:
                    on_epoch(epoch, dict(metrics))
        self.net.eval()
        return metrics

    def evaluate(self, x: np.ndarray, y_idx: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
        xt = _as_input(x, self.sample_shape)
        yt = self._targets(y_idx)
        if len(xt) != len(yt):
            raise ValueError(f"x has {len(xt)} samples but y_idx has {len(yt)} labels")
        if self.regression:
            return regression_metrics(regression_sums(yt.numpy(), self._outputs(xt).reshape(-1)))
        if len(xt) == 0:
            return empty_metrics()
        self.net.eval()
        loss_sum, correct = 0.0, 0
        with torch.inference_mode():
            for s in range(0, len(xt), batch_size):
                out = self.net(xt[s : s + batch_size])
                yb = yt[s : s + batch_size]
                loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
                correct += int((out.argmax(dim=1) == yb).sum())
        return {"loss": loss_sum / len(xt), "accuracy": correct / len(xt), "num_samples": len(xt)}

    def _outputs(self, xt: torch.Tensor) -> np.ndarray:
        self.net.eval()
        with torch.inference_mode():
            parts = [self.net(xt[s : s + 1024]) for s in range(0, len(xt), 1024)]
        if not parts:
            return np.empty((0, 1 if self.regression else self.num_classes), dtype=np.float32)
        return torch.cat(parts).numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices, or the predicted values of a regression net."""
        out = self._outputs(_as_input(x, self.sample_shape))
        if self.regression:
            return out.reshape(-1).astype(np.float64)
        return out.argmax(axis=1).astype(np.int64)

    def confusion_matrix(self, x: np.ndarray, y_idx: np.ndarray) -> np.ndarray:
        if self.regression:
            raise TypeError("a regression model has no confusion matrix; use evaluate() for MSE, MAE and R2")
        return super().confusion_matrix(x, y_idx)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        xt = _as_input(x, self.sample_shape)
        self.net.eval()
        with torch.inference_mode():
            parts = [F.softmax(self.net(xt[s : s + 1024]), dim=1) for s in range(0, len(xt), 1024)]
        if not parts:
            return np.empty((0, self.num_classes), dtype=np.float32)
        return torch.cat(parts).numpy().astype(np.float32, copy=False)

    def onnx_layers(self, graph: OnnxGraph, x: str) -> str:
        """The ``nn.Sequential`` layer by layer; dropout is the identity at inference."""
        for name, layer in self.net.named_children():
            if isinstance(layer, nn.Flatten):
                x = graph.flatten(x)
            elif isinstance(layer, nn.Linear):
                x = graph.gemm(x, layer.weight.detach().numpy(), layer.bias.detach().numpy())
            elif isinstance(layer, nn.ReLU):
                x = graph.op("Relu", [x])
            elif isinstance(layer, nn.Dropout):
                continue
            elif isinstance(layer, nn.Conv2d):
                if layer.bias is None or isinstance(layer.padding, str):
                    raise ModelConfigError(f"layer {name!r}: only biased convolutions with numeric padding export")
                w = graph.const("conv_weight", layer.weight.detach().numpy().astype(np.float32))
                b = graph.const("conv_bias", layer.bias.detach().numpy().astype(np.float32))
                pad_h, pad_w = (int(p) for p in layer.padding)
                x = graph.op("Conv", [x, w, b], kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                             pads=[pad_h, pad_w, pad_h, pad_w])
            elif isinstance(layer, nn.MaxPool2d):
                k, s = layer.kernel_size, layer.stride
                x = graph.op("MaxPool", [x], kernel_shape=[k, k] if isinstance(k, int) else list(k),
                             strides=[s, s] if isinstance(s, int) else list(s))
            else:
                raise ModelConfigError(f"layer {name!r} ({type(layer).__name__}) has no ONNX export")
        return x


def _seeded(seed: int, build: Callable[..., nn.Module], *args: object) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(*args)


def _mlp_net(n_in: int, n_classes: int, hidden: Sequence[int], dropout: float) -> nn.Module:
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = n_in
    for i, h in enumerate(hidden):
        layers[f"fc{i}"] = nn.Linear(width, h)
        layers[f"relu{i}"] = nn.ReLU()
        if dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        width = h
    layers["out"] = nn.Linear(width, n_classes)
    return nn.Sequential(layers)


def _cnn_net(
    sample_shape: tuple[int, int, int], n_classes: int, channels: Sequence[int], hidden: int, dropout: float
) -> nn.Module:
    c, h, w = sample_shape
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, ch in enumerate(channels):
        if h < 2 or w < 2:
            raise ModelConfigError(
                f"images of {sample_shape[1]}x{sample_shape[2]} are too small for {len(channels)} "
                "conv blocks (each halves the size); use fewer channels entries"
            )
        layers[f"conv{i}"] = nn.Conv2d(c, ch, kernel_size=3, padding=1)
        layers[f"relu{i}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        c, h, w = ch, h // 2, w // 2
    layers["flatten"] = nn.Flatten()
    if dropout > 0:
        layers["drop_conv"] = nn.Dropout(dropout)
    layers["fc"] = nn.Linear(c * h * w, hidden)
    layers["relu_fc"] = nn.ReLU()
    if dropout > 0:
        layers["drop_fc"] = nn.Dropout(dropout)
    layers["out"] = nn.Linear(hidden, n_classes)
    return nn.Sequential(layers)


class MLPModel(TorchModel):
    """Fully connected ReLU network on flattened samples; one linear output for regression."""

    def __init__(
        self,
        sample_shape: Sequence[int],
        n_classes: int,
        *,
        hidden: Sequence[int] = (128,),
        dropout: float = 0.0,
        seed: int = 0,
        regression: bool = False,
    ):
        n_in = int(np.prod(sample_shape))
        n_out = 1 if regression else n_classes
        net = _seeded(seed, _mlp_net, n_in, n_out, list(hidden), dropout)
        super().__init__(net, sample_shape, n_classes, regression=regression)


class CNNModel(TorchModel):
    """Small convnet: per entry of ``channels`` a 3x3 conv + ReLU + 2x2 max-pool, then one hidden layer."""

    def __init__(
        self,
        sample_shape: Sequence[int],
        n_classes: int,
        *,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.25,
        seed: int = 0,
    ):
        shape = tuple(int(d) for d in sample_shape)
        if len(shape) != 3:
            raise ModelConfigError(f"cnn needs image samples shaped [channels, height, width], got {list(shape)}")
        net = _seeded(seed, _cnn_net, shape, n_classes, list(channels), hidden, dropout)
        super().__init__(net, shape, n_classes)
