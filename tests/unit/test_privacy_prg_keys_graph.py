"""Mask expansion (AES-CTR keystream), X25519/HKDF derivations, the share channel, neighbour graphs."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedpact.privacy import channel, graph, keys, prg


@pytest.mark.parametrize("length", [0, 1, 3, 1000, (1 << 20) + 5])
def test_expansion_is_the_aes_ctr_keystream(length: int) -> None:
    seed = os.urandom(32)
    ref = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(4 * length))
    assert prg.expand(seed, length).tobytes() == ref
    assert prg.expand(seed, length, bits=64).dtype == np.uint64


def test_chacha_keystream_and_errors() -> None:
    seed = os.urandom(32)
    ref = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor().update(bytes(400))
    assert prg.expand(seed, 100, cipher="chacha20").tobytes() == ref
    with pytest.raises(prg.PRGError, match="32 bytes"):
        prg.expand(b"short", 4)


def test_masks_cancel_and_look_uniform() -> None:
    seed = os.urandom(32)
    x = np.arange(10_000, dtype=np.uint32)
    y = prg.add_mask(x.copy(), seed, 1)
    assert not np.array_equal(x, y)
    np.testing.assert_array_equal(prg.add_mask(y, seed, -1), x)
    counts = np.bincount((prg.expand(seed, 160_000) >> 28).astype(np.int64), minlength=16)
    chi2 = float(((counts - 10_000) ** 2 / 10_000).sum())
    assert chi2 < 55


def test_throughput_is_measured() -> None:
    assert prg.measure_throughput(8, repeats=1) > 50  # MB/s; in practice several GB/s


def test_key_agreement_is_symmetric_and_bound_to_its_context() -> None:
    a, b, c = keys.generate_private_key(), keys.generate_private_key(), keys.generate_private_key()
    ab = keys.mask_seed(a, keys.public_bytes(b), task="t", round_id="r1", me="alice", peer="bob")
    ba = keys.mask_seed(b, keys.public_bytes(a), task="t", round_id="r1", me="bob", peer="alice")
    assert ab == ba and len(ab) == 32
    assert keys.mask_seed(a, keys.public_bytes(b), task="t", round_id="r2", me="alice", peer="bob") != ab
    assert keys.mask_seed(a, keys.public_bytes(b), task="u", round_id="r1", me="alice", peer="bob") != ab
    assert keys.channel_key(a, keys.public_bytes(b), task="t", round_id="r1", me="alice", peer="bob") != ab
    assert keys.mask_seed(a, keys.public_bytes(c), task="t", round_id="r1", me="alice", peer="bob") != ab
    assert keys.load_private(keys.private_bytes(a)).public_key().public_bytes_raw() == keys.public_bytes(a)
    with pytest.raises(keys.KeyAgreementError, match="32 bytes"):
        keys.load_public(b"\x00" * 31)
    with pytest.raises(keys.KeyAgreementError):
        keys.mask_seed(a, bytes(32), task="t", round_id="r", me="a", peer="b")  # low-order point


def test_channel_rejects_tampering_replay_and_misdirection() -> None:
    key = os.urandom(32)
    ctx = dict(task="t", round_id="r1", step="share_keys", sender="alice", recipient="bob")
    ct = channel.encrypt(key, b"share bytes", **ctx)
    assert channel.decrypt(key, ct, **ctx) == b"share bytes"
    tampered = ct[:-1] + bytes([ct[-1] ^ 1])
    with pytest.raises(channel.ChannelError, match="tampered"):
        channel.decrypt(key, tampered, **ctx)
    for field, value in [("round_id", "r2"), ("step", "unmask"), ("recipient", "carol"), ("sender", "mallory"),
                         ("task", "other")]:
        with pytest.raises(channel.ChannelError):
            channel.decrypt(key, ct, **{**ctx, field: value})
    with pytest.raises(channel.ChannelError, match="too short"):
        channel.decrypt(key, b"abc", **ctx)


def test_complete_and_sparse_graphs() -> None:
    names = [f"p{i:03d}" for i in range(100)]
    full = graph.neighbour_graph(names, sparse=False, degree=None, seed=b"s")
    assert all(len(v) == 99 for v in full.values())
    k = graph.default_degree(100)
    assert k == 20 and k <= 3 * math.log2(100) + 2
    sparse = graph.neighbour_graph(names, sparse=True, degree=None, seed=b"s")
    assert all(len(v) == k for v in sparse.values())
    assert all(u in sparse[v] for u in names for v in sparse[u])  # symmetric
    assert all(u not in sparse[u] for u in names)
    assert sparse == graph.neighbour_graph(list(reversed(names)), sparse=True, degree=None, seed=b"s")  # public
    assert sparse != graph.neighbour_graph(names, sparse=True, degree=None, seed=b"t")
    seen, frontier = {names[0]}, [names[0]]  # connected
    while frontier:
        nxt = [v for u in frontier for v in sparse[u] if v not in seen]
        seen.update(nxt)
        frontier = nxt
    assert len(seen) == 100
    assert graph.neighbour_graph(names[:8], sparse=True, degree=None, seed=b"s") == graph.complete_graph(names[:8])
    assert graph.holder_threshold(51, 100, 21) == 11
    assert graph.holder_threshold(3, 5, 5) == 3
