"""Wire helpers both sides of the privacy modes share (docs/privacy.md): ciphertext
containers, ring vectors on the wire, the sealed key's binding and the decrypted model file.

The modes' behaviour lives in the round objects: :mod:`fedpact.runtime.rounds` for the
aggregator and :mod:`fedpact.runtime.rounds.participant` for the participant.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedpact.common.tensors import encode_weights
from fedpact.runtime import messages as m

#: Name prefix of the ciphertext chunks of an encrypted model or update.
CHUNK_PREFIX = "c."


def he_context_binding(task_id: int, recipient: str) -> bytes:
    from fedpact.privacy.sealing import make_context

    return make_context("fedpact/he-secret-context/v1", task_id, recipient)


def pack_ciphertexts(chunks: list[bytes], meta: Mapping[str, Any], extra: Mapping[str, np.ndarray] | None = None) -> bytes:
    """An encrypted vector as one safetensors container: each chunk a uint8 tensor."""
    tensors = {f"{CHUNK_PREFIX}{i:05d}": np.frombuffer(c, dtype=np.uint8) for i, c in enumerate(chunks)}
    tensors.update(extra or {})
    return m.pack(dict(meta), tensors)


def unpack_ciphertexts(tensors: Mapping[str, np.ndarray]) -> list[bytes]:
    names = sorted(k for k in tensors if k.startswith(CHUNK_PREFIX))
    for k in names:
        if tensors[k].dtype != np.uint8 or tensors[k].ndim != 1:
            raise ValueError(f"ciphertext chunk {k!r} must be a 1-D uint8 tensor")
    return [tensors[k].tobytes() for k in names]


def ring_to_wire(y: np.ndarray) -> np.ndarray:
    """uint32/uint64 ring vectors travel as the int32/int64 of the same bits (safetensors dtypes)."""
    return y.view(np.int32 if y.dtype == np.uint32 else np.int64)


def ring_from_wire(t: np.ndarray) -> np.ndarray:
    if t.dtype == np.int32:
        return t.view(np.uint32)
    if t.dtype == np.int64:
        return t.view(np.uint64)
    raise ValueError(f"a masked input must be int32 or int64 on the wire, got {t.dtype}")


class PrivacyRuntimeError(RuntimeError):
    """A privacy-mode step that cannot go on (missing key or state)."""


def decrypted_model_file(data: bytes, he_ctx: Any) -> bytes:
    """A plaintext model file (the same format as an ``open`` model) from the encrypted one on the hub."""
    from fedpact.privacy import he

    info, tensors = m.unpack(data)
    flat = he.decrypt_vector(he_ctx, unpack_ciphertexts(tensors), int(info["length"]))
    weights = he.unflatten_weights(flat, info["layout"])
    extra = {k: v for k, v in tensors.items() if k.startswith("standardization.")}
    metadata = dict(info.get("metadata", {}))
    metadata["decrypted_by_participant"] = True
    return encode_weights({**weights, **extra}, {"fedpact": json.dumps(metadata)})

