"""The protocol between an aggregator and its participants, on top of the hub's relay.

Every message body is one safetensors container: its tensors (model weights, feature
moments) and a JSON document in the container's metadata. One format for everything
means one parser to trust, and it never unpickles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedpact.common.tensors import Payload, Weights, decode_metadata, decode_weights, encode_parts, encode_weights

AGGREGATOR = "aggregator"
BROADCAST = "participants"

# participant -> aggregator
HELLO = "hello"  # ready to train: {"num_samples"}
REFUSE = "refuse"  # cannot take part: {"problems": [...]}
STATS = "stats"  # per-feature moments for federated standardisation
UPDATE = "update"  # trained weights for a round
EVALUATION = "evaluation"  # metrics of the final model on local hold-out data
# aggregator -> participants
AGGREGATOR_ONLINE = "aggregator_online"  # please (re)announce yourselves
STATS_REQUEST = "stats_request"
ROUND_START = "round_start"
UPDATE_REJECTED = "update_rejected"
FINAL_EVALUATE = "final_evaluate"
FINISHED = "finished"
STOPPED = "stopped"  # failed or cancelled: {"status", "reason"}

_META_KEY = "fedpact"
#: Tensor of a round start or final evaluation request carrying the bytes of the weights blob
#: its ``weights`` names (uint8, byte for byte), so participants need not download it.
INLINE_WEIGHTS = "inline.weights"
#: Weights blobs up to this size travel inline; larger ones only as the blob.
INLINE_WEIGHTS_LIMIT = 128 * 1024


def participant_address(name: str) -> str:
    return f"participant/{name}"


def pack(meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray] | None = None) -> bytes:
    return encode_weights(tensors or {}, {_META_KEY: json.dumps(meta, separators=(",", ":"))})


def pack_parts(meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray] | None = None) -> Payload:
    """Like :func:`pack`, as a :class:`Payload` over the arrays' own buffers (no copy of a model)."""
    return encode_parts(tensors or {}, {_META_KEY: json.dumps(meta, separators=(",", ":"))})


def unpack(data: bytes) -> tuple[dict[str, Any], Weights]:
    return meta_of(decode_metadata(data)), decode_weights(data)


def meta_of(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The message's JSON document from a container's string metadata."""
    meta = json.loads(metadata.get(_META_KEY, "{}"))
    if not isinstance(meta, dict):
        raise ValueError("message metadata is not a JSON object")
    return meta


def split_prefixed(tensors: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Tensors whose names start with ``prefix``, with the prefix removed."""
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def prefixed(tensors: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {prefix + k: v for k, v in tensors.items()}

# privacy modes (docs/privacy.md)
SECAGG = "secagg"  # a secure-aggregation protocol message, either direction (envelope in the metadata)
HE_KEY_REQUEST = "he_key_request"  # aggregator -> key holder: seal the CKKS secret context to these public keys
HE_KEYS = "he_keys"  # key holder -> aggregator: sealed secret contexts per recipient, plus the public context
HE_KEY = "he_key"  # aggregator -> one participant: its sealed secret context
