"""The wire format for model weights: safetensors, never pickle.

Every array travels with an explicit dtype and shape inside a safetensors container; the
decoder only ever builds NumPy arrays from raw buffers, so a hostile payload can at worst
be rejected, never executed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

Weights = dict[str, np.ndarray]

#: dtypes accepted on the wire. Object arrays and anything else are refused.
ALLOWED_DTYPES = frozenset(
    np.dtype(t) for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
)


class TensorFormatError(ValueError):
    """A payload that is not a valid safetensors container of allowed dtypes."""


def encode_weights(weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise named arrays to safetensors bytes (C-contiguous copies where needed)."""
    tensors: dict[str, np.ndarray] = {}
    for name, arr in weights.items():
        a = np.asarray(arr)
        if a.dtype not in ALLOWED_DTYPES:
            raise TensorFormatError(f"tensor {name!r} has unsupported dtype {a.dtype}")
        tensors[name] = np.ascontiguousarray(a)
    return _st_save(tensors, metadata=dict(metadata) if metadata else None)


def decode_weights(data: bytes) -> Weights:
    """Parse safetensors bytes into NumPy arrays; raises TensorFormatError on anything odd."""
    try:
        out = _st_load(bytes(data))
    except (SafetensorError, ValueError, TypeError) as exc:
        raise TensorFormatError(f"not a valid safetensors payload: {exc}") from exc
    for name, arr in out.items():
        if arr.dtype not in ALLOWED_DTYPES:
            raise TensorFormatError(f"tensor {name!r} has unsupported dtype {arr.dtype}")
    return out


def decode_metadata(data: bytes) -> dict[str, str]:
    """Read the string metadata stored in a safetensors header without decoding tensors."""
    import json
    import struct

    if len(data) < 8:
        raise TensorFormatError("payload too short for a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100_000_000:
        raise TensorFormatError("safetensors header length is out of range")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as exc:
        raise TensorFormatError(f"safetensors header is not JSON: {exc}") from exc
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise TensorFormatError("safetensors metadata is not a mapping")
    return {str(k): str(v) for k, v in meta.items()}


def num_parameters(weights: Mapping[str, np.ndarray]) -> int:
    return int(sum(np.asarray(a).size for a in weights.values()))
