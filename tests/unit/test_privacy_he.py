import json

import numpy as np
import pytest

from fedpact.privacy.he import (
    HEContext,
    HEError,
    HEKeyError,
    add_encrypted,
    decrypt_vector,
    encrypt_vector,
    flatten_weights,
    scale_encrypted,
    sum_encrypted,
    unflatten_weights,
)

# CKKS at scale 2^40 and degree 8192 decrypts a fresh ciphertext with an absolute error
# of about 1e-8 (measured: 1.7e-8 on the sum of three 100k vectors), independent of the
# values' magnitude. 1e-6 leaves a 50x margin and is still below the float32 rounding step
# of any weight larger than 8 in magnitude, i.e. invisible once cast back to float32.
CKKS_ATOL = 1e-6


@pytest.fixture(scope="module")
def secret_ctx():
    return HEContext.create()


@pytest.fixture(scope="module")
def public_ctx(secret_ctx):
    return secret_ctx.public()


def test_encrypted_sum_of_three_large_vectors_matches_plain_sum(secret_ctx, public_ctx):
    rng = np.random.default_rng(0)
    n = 100_003  # not a multiple of the slot count: the last chunk is partial
    vectors = [rng.standard_normal(n).astype(np.float32) * s for s in (1.0, 0.1, 10.0)]
    # participants encrypt with the public context, the aggregator adds with it
    encrypted = [encrypt_vector(public_ctx, v) for v in vectors]
    assert len(encrypted[0]) == -(-n // public_ctx.slot_count)
    total = sum_encrypted(public_ctx, encrypted)
    decrypted = decrypt_vector(secret_ctx, total, n)
    expected = sum(v.astype(np.float64) for v in vectors)
    assert decrypted.shape == (n,)
    np.testing.assert_allclose(decrypted, expected, rtol=0, atol=CKKS_ATOL)


def test_add_and_scale(secret_ctx, public_ctx):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(5000), rng.standard_normal(5000)
    summed = add_encrypted(public_ctx, encrypt_vector(public_ctx, a), encrypt_vector(public_ctx, b))
    np.testing.assert_allclose(decrypt_vector(secret_ctx, summed, 5000), a + b, atol=CKKS_ATOL)
    # scaling encodes the factor at scale 2^40 as well: error ~1e-7, hence the looser bound
    mean = scale_encrypted(public_ctx, summed, 0.5)
    np.testing.assert_allclose(decrypt_vector(secret_ctx, mean, 5000), (a + b) / 2, atol=1e-5)


def test_scaling_beyond_the_modulus_chain_gives_a_clear_error(secret_ctx):
    chunks = encrypt_vector(secret_ctx, np.ones(10))
    chunks = scale_encrypted(secret_ctx, scale_encrypted(secret_ctx, chunks, 0.5), 0.5)
    with pytest.raises(HEError, match="no level left"):
        scale_encrypted(secret_ctx, chunks, 0.5)


def test_public_context_cannot_decrypt(secret_ctx, public_ctx):
    assert secret_ctx.has_secret_key and not public_ctx.has_secret_key
    chunks = encrypt_vector(public_ctx, np.arange(10.0))
    with pytest.raises(HEKeyError, match="holds only the public key and cannot decrypt"):
        decrypt_vector(public_ctx, chunks, 10)
    with pytest.raises(HEKeyError, match="no secret key to serialise"):
        public_ctx.serialize(secret=True)


def test_serialisation_round_trip(secret_ctx):
    values = np.linspace(-3, 3, 9000)
    chunks = encrypt_vector(secret_ctx, values)

    restored = HEContext.from_bytes(secret_ctx.serialize(secret=True))
    assert restored.has_secret_key and restored.slot_count == secret_ctx.slot_count
    np.testing.assert_allclose(decrypt_vector(restored, chunks, 9000), values, atol=CKKS_ATOL)

    public_bytes = secret_ctx.serialize(secret=False)
    public = HEContext.from_bytes(public_bytes)
    assert not public.has_secret_key
    assert len(public_bytes) < len(secret_ctx.serialize(secret=True))
    # a ciphertext made from the restored public context decrypts under the original key
    np.testing.assert_allclose(decrypt_vector(secret_ctx, encrypt_vector(public, values), 9000), values, atol=CKKS_ATOL)


def test_malformed_inputs_are_refused(secret_ctx, public_ctx):
    with pytest.raises(HEError, match="not a serialised CKKS context"):
        HEContext.from_bytes(b"not a context")
    chunks = encrypt_vector(public_ctx, np.ones(5000))
    with pytest.raises(HEError, match="chunk 1 of vector 1 is not a CKKS ciphertext"):
        sum_encrypted(public_ctx, [chunks, [chunks[0], b"garbage"]])
    with pytest.raises(HEError, match="vector 1 has 1 chunks, vector 0 has 2"):
        add_encrypted(public_ctx, chunks, chunks[:1])
    with pytest.raises(HEError, match="chunk 0 holds 100 values in vector 1 but 4096"):
        add_encrypted(public_ctx, chunks[:1], encrypt_vector(public_ctx, np.ones(100)))
    with pytest.raises(HEError, match="hold 5000 values but 4999 were expected"):
        decrypt_vector(secret_ctx, chunks, 4999)
    with pytest.raises(HEError, match="NaN or infinite"):
        encrypt_vector(public_ctx, np.array([1.0, np.inf]))
    with pytest.raises(HEError, match="takes a 1-D vector"):
        encrypt_vector(public_ctx, np.ones((2, 2)))
    with pytest.raises(HEError, match="nothing to add"):
        sum_encrypted(public_ctx, [])


def test_create_validates_parameters():
    with pytest.raises(HEError, match="poly_modulus_degree must be one of"):
        HEContext.create(poly_modulus_degree=1000)
    with pytest.raises(HEError, match="scale_bits must be between 20 and 60"):
        HEContext.create(scale_bits=80)
    with pytest.raises(HEError, match="SEAL refused"):
        HEContext.create(poly_modulus_degree=4096, coeff_mod_bit_sizes=[60, 60, 60, 60])
    small = HEContext.create(poly_modulus_degree=4096, scale_bits=30, coeff_mod_bit_sizes=[40, 30, 30])
    assert small.slot_count == 2048


def test_flatten_unflatten_round_trip_with_json_layout():
    rng = np.random.default_rng(2)
    weights = {
        "layer2.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "layer1.bias": rng.standard_normal(3).astype(np.float64),
        "scalar": np.asarray(1.5, dtype=np.float16),
    }
    flat, layout = flatten_weights(weights)
    assert flat.dtype == np.float64 and flat.size == 12 + 3 + 1
    assert [e["name"] for e in layout] == ["layer1.bias", "layer2.weight", "scalar"]
    restored = unflatten_weights(flat, json.loads(json.dumps(layout)))
    assert set(restored) == set(weights)
    for name, arr in weights.items():
        assert restored[name].dtype == arr.dtype and restored[name].shape == arr.shape
        np.testing.assert_array_equal(restored[name], arr)
    # insertion order does not matter: the same weights in another order flatten identically
    np.testing.assert_array_equal(flatten_weights(dict(reversed(list(weights.items()))))[0], flat)


def test_flatten_refuses_bad_input():
    with pytest.raises(HEError, match="tensor 'n' has dtype int64"):
        flatten_weights({"n": np.arange(3)})
    _, layout = flatten_weights({"a": np.ones(4, np.float32)})
    with pytest.raises(HEError, match="vector has 5 values but the layout describes 4"):
        unflatten_weights(np.ones(5), layout)


def test_weights_survive_encrypted_aggregation(secret_ctx, public_ctx):
    rng = np.random.default_rng(3)
    shapes = {"w": (64, 32), "b": (32,)}
    updates = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(3)]
    flats = [flatten_weights(u) for u in updates]
    layout = flats[0][1]
    total = sum_encrypted(public_ctx, [encrypt_vector(public_ctx, f) for f, _ in flats])
    mean = unflatten_weights(decrypt_vector(secret_ctx, total, flats[0][0].size) / 3, layout)
    for k in shapes:
        assert mean[k].dtype == np.float32
        np.testing.assert_allclose(mean[k], sum(u[k] for u in updates) / 3, atol=1e-6)
