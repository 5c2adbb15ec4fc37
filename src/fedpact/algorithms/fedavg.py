"""Sample-weighted averaging of model weights, streamed so that it runs at memory speed.

With many participants and large models the average is bound by memory bandwidth: a
naive ``sum(w * x)`` allocates temporaries and reads and writes every element several
times. Here the output is built in cache-sized blocks, each input is read from memory
exactly once and accumulated with a fused BLAS axpy into a block that stays in cache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np
from threadpoolctl import ThreadpoolController

#: Elements per block: 512 KiB of float32, small enough to stay in L2 next to the input stream.
BLOCK_ELEMENTS = 131_072

Axpy = Callable[[np.ndarray, np.ndarray, float], None]


@lru_cache(maxsize=4)
def _axpy_for(dtype: np.dtype) -> Axpy:
    """``y += a * x`` in place, fused in BLAS where SciPy (a scikit-learn dependency) has it."""
    try:
        from scipy.linalg.blas import get_blas_funcs

        blas = get_blas_funcs("axpy", dtype=dtype)
    except ImportError:  # pragma: no cover - scipy always comes with scikit-learn
        blas = None

    if blas is not None:

        def fused(x: np.ndarray, y: np.ndarray, a: float) -> None:
            result = blas(x, y, a=a)
            if result is not y:
                y[...] = result

        return fused

    def unfused(x: np.ndarray, y: np.ndarray, a: float) -> None:
        y += a * x

    return unfused


def _check_inputs(updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> np.ndarray:
    if not updates:
        raise ValueError("nothing to average: no updates")
    if len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all zero, got {list(weights)}")
    first = updates[0]
    for i, u in enumerate(updates[1:], start=1):
        if set(u) != set(first):
            raise ValueError(f"update {i} has tensors {sorted(u)}, update 0 has {sorted(first)}")
        for name, ref in first.items():
            a, ref = np.asarray(u[name]), np.asarray(ref)
            if a.shape != ref.shape or a.dtype != ref.dtype:
                raise ValueError(
                    f"tensor {name!r}: update {i} has {a.dtype}{tuple(a.shape)}, "
                    f"update 0 has {ref.dtype}{tuple(ref.shape)}"
                )
    return w / w.sum()


def _average(arrays: list[np.ndarray], coef: list[float]) -> np.ndarray:
    shape, dtype = arrays[0].shape, arrays[0].dtype
    work = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)
    flats = [np.ascontiguousarray(a, dtype=work).reshape(-1) for a in arrays]
    axpy = _axpy_for(work)
    n = flats[0].size
    out = np.empty(n, dtype=work)
    for start in range(0, n, BLOCK_ELEMENTS):
        stop = min(start + BLOCK_ELEMENTS, n)
        acc = out[start:stop]
        np.multiply(flats[0][start:stop], coef[0], out=acc)
        for x, c in zip(flats[1:], coef[1:]):
            axpy(x[start:stop], acc, c)
    out = out.reshape(shape)
    if dtype.kind in "iub":
        return np.round(out).astype(dtype)
    return out.astype(dtype, copy=False)


@lru_cache(maxsize=1)
def _blas_threads() -> ThreadpoolController:
    # The controller only sees libraries loaded when it is made: load SciPy's BLAS first.
    _axpy_for(np.dtype(np.float32))
    return ThreadpoolController()


def weighted_average(
    updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]
) -> dict[str, np.ndarray]:
    """Mean of the updates weighted by ``weights`` (normally sample counts), in the inputs' dtype.

    BLAS runs single-threaded here: each axpy works on one cache-sized block, too little
    to split, and a multi-threaded BLAS stalls on every call whenever another process has
    the other core (measured: 30 us per block alone, 740 us with the core taken).
    """
    normalised = _check_inputs(updates, weights)
    keep = [i for i, c in enumerate(normalised) if c > 0]
    coef = [float(normalised[i]) for i in keep]
    with _blas_threads().limit(limits=1, user_api="blas"):
        return {name: _average([np.asarray(updates[i][name]) for i in keep], coef) for name in updates[0]}
