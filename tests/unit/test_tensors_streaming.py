"""The streamed safetensors encoder and decoder agree with the safetensors library and refuse bad input."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load as st_load

from fedpact.common.tensors import (
    Payload,
    TensorFormatError,
    TensorSink,
    decode_stream,
    encode_parts,
    encode_weights,
)


def sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "weight": rng.standard_normal((7, 13)).astype(np.float32),
        "bias": np.arange(7, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "half": rng.standard_normal(5).astype(np.float16),
        "empty": np.zeros((0, 3), np.float64),
        "scalar": np.array(2.5),
        "strided": rng.standard_normal((6, 4))[:, ::2],  # not contiguous: copied, not referenced
    }


def test_encode_parts_is_a_file_the_safetensors_library_reads() -> None:
    w = sample()
    payload = encode_parts(w, {"fedpact": '{"round": 3}'})
    raw = payload.tobytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0, "the header is padded so that every tensor is aligned"
    loaded = st_load(raw)
    assert set(loaded) == set(w)
    for name, arr in w.items():
        assert loaded[name].dtype == arr.dtype and np.array_equal(loaded[name].reshape(arr.shape), arr), name
    import hashlib

    assert payload.sha256() == hashlib.sha256(raw).hexdigest()
    assert len(payload) == len(raw)


def test_encode_parts_references_the_arrays_instead_of_copying_them() -> None:
    w = {"weight": np.zeros((4, 4), np.float32)}
    payload = encode_parts(w)
    w["weight"][0, 0] = 1.0  # seen through the payload: it is a view of the array
    assert decode_stream(payload.tobytes())[1]["weight"][0, 0] == 1.0


@pytest.mark.parametrize("piece", [1, 7, 64, 1 << 20])
def test_the_sink_decodes_any_split_of_the_stream(piece: int) -> None:
    w = sample()
    raw = encode_weights(w, {"k": "v"})  # the library's own encoding
    sink = TensorSink(len(raw))
    for i in range(0, len(raw), piece):
        sink.write(raw[i : i + piece])
    meta, out = sink.result()
    assert meta == {"k": "v"}
    for name, arr in w.items():
        assert out[name].dtype == arr.dtype and np.array_equal(out[name].reshape(arr.shape), arr), name
        assert out[name].flags.writeable and out[name].flags.c_contiguous


def test_a_scalar_keeps_its_shape() -> None:
    assert decode_stream(encode_parts({"s": np.array(2.5)}).tobytes())[1]["s"].shape == ()


def test_payload_pieces_cover_any_range() -> None:
    p = Payload([b"abc", b"", bytearray(b"defgh"), memoryview(b"ij")])
    whole = b"abcdefghij"
    assert p.size == len(whole) and p.tobytes() == whole
    for start in range(len(whole)):
        for n in range(len(whole) - start + 1):
            assert b"".join(p.pieces(start, n, 2)) == whole[start : start + n]
    with pytest.raises(ValueError, match="ends 1 bytes before"):
        list(p.pieces(5, 6))


def raw_with(header: dict[str, Any], data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("raw", "expected", "match"),
    [
        (b"\x01\x00", None, "too short"),
        (struct.pack("<Q", 10**9) + b"{}", None, "out of range"),
        (struct.pack("<Q", 50) + b"{}", 20, "out of range"),
        (raw_with({}, b"")[:8] + b"not json", None, "not JSON"),
        (struct.pack("<Q", 2) + b"[]", None, "not a JSON object"),
        (raw_with({"a": {**F32, "dtype": "BF16"}}, bytes(8)), None, "unsupported dtype"),
        (raw_with({"a": {**F32, "dtype": "O"}}, bytes(8)), None, "unsupported dtype"),
        (raw_with({"a": {**F32, "shape": [3]}}, bytes(8)), None, "do not hold shape"),
        (raw_with({"a": {**F32, "shape": [-2]}}, bytes(8)), None, "malformed shape"),
        (raw_with({"a": {**F32, "shape": [2.0]}}, bytes(8)), None, "malformed shape"),
        (raw_with({"a": {**F32, "data_offsets": [4, 12]}}, bytes(12)), None, "not contiguous"),
        (raw_with({"a": F32, "b": F32}, bytes(8)), None, "not contiguous"),
        (raw_with({"a": {"dtype": "F32"}}, bytes(8)), None, "missing field"),
        (raw_with({"__metadata__": {"k": 1}, "a": F32}, bytes(8)), None, "mapping of strings"),
        (raw_with({"a": F32}, bytes(4)), None, "ended 4 bytes early"),
        (raw_with({"a": F32}, bytes(9)), None, "longer than"),
        (raw_with({"a": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 4 * 10**12]}}, bytes(8)), "exact",
         "describes"),
    ],
)
def test_the_sink_refuses_malformed_payloads(raw: bytes, expected: int | str | None, match: str) -> None:
    size = len(raw) if expected == "exact" else expected
    assert size is None or isinstance(size, int)
    with pytest.raises(TensorFormatError, match=match):
        sink = TensorSink(size)
        sink.write(raw)
        sink.result()


def _fill_by_readinto(sink: TensorSink, raw: bytes, piece: int) -> None:
    """What the client's bulk download does: header bytes through ``write``, array bytes into ``writable`` views."""
    at = 0
    while at < len(raw):
        view = sink.writable(piece)
        if view is None:
            chunk = raw[at : at + min(piece, 64)]
            sink.write(chunk)
            at += len(chunk)
        else:
            n = min(view.nbytes, len(raw) - at)
            view[:n] = raw[at : at + n]
            sink.wrote(n)
            at += n


@pytest.mark.parametrize("piece", [1, 5, 4096, 1 << 20])
def test_the_sink_takes_array_bytes_read_straight_into_its_arrays(piece: int) -> None:
    w = sample()
    raw = encode_weights(w, {"k": "v"})
    sink = TensorSink(len(raw))
    _fill_by_readinto(sink, raw, piece)
    meta, out = sink.result()
    assert meta == {"k": "v"}
    for name, arr in w.items():
        assert out[name].dtype == arr.dtype and np.array_equal(out[name].reshape(arr.shape), arr), name


def test_a_view_is_a_window_of_the_array_it_fills() -> None:
    raw = encode_weights({"a": np.zeros(4, np.float32), "b": np.zeros(2, np.int64)})
    sink = TensorSink(len(raw))
    header_end = len(raw) - 4 * 4 - 2 * 8
    assert sink.writable(1024) is None, "no view before the header is known"
    sink.write(raw[:header_end])
    first = sink.writable(1024)
    assert first is not None and first.nbytes in (16, 32)  # one array at a time, never past its end
    assert sink.writable(3) is not None and sink.writable(3).nbytes == 3  # type: ignore[union-attr]


def test_a_reader_cannot_claim_more_than_the_view_or_send_more_than_the_header() -> None:
    raw = encode_weights({"a": np.arange(4, dtype=np.float32)})
    header_end = len(raw) - 16
    sink = TensorSink()
    sink.write(raw[:header_end])
    view = sink.writable(1 << 20)
    assert view is not None and view.nbytes == 16
    with pytest.raises(ValueError, match="do not fit"):
        sink.wrote(17)
    view[:] = raw[header_end:]
    sink.wrote(16)
    assert sink.writable(1 << 20) is None, "every array is full: more bytes go through write, which refuses them"
    with pytest.raises(TensorFormatError, match="longer than its safetensors header"):
        sink.write(b"\x00" * 4)
    assert np.array_equal(sink.result()[1]["a"], np.arange(4, dtype=np.float32))
