"""The wire format for model weights: safetensors, never pickle.

Every array travels with an explicit dtype and shape inside a safetensors container; the
decoder only ever builds NumPy arrays from raw buffers, so a hostile payload can at worst
be rejected, never executed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

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


#: safetensors dtype names <-> NumPy dtypes (little-endian, as the format stores them).
_ST_DTYPES: dict[str, np.dtype] = {
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("bool"),
}
_ST_NAMES = {dt: name for name, dt in _ST_DTYPES.items()}
#: The largest header this decoder accepts (the safetensors library's own limit).
MAX_HEADER_BYTES = 100_000_000


class Payload:
    """Bytes made of segments (a header, then each array's own buffer), never joined.

    What :func:`encode_parts` returns: a model goes out as slices of the arrays it is
    made of, so sending it needs no second copy of the model. The client hashes it,
    streams it in pieces and resumes it from any offset.
    """

    def __init__(self, parts: list[bytes | bytearray | memoryview]) -> None:
        self.parts = [memoryview(p).cast("B") for p in parts if len(memoryview(p).cast("B"))]
        self.size = sum(p.nbytes for p in self.parts)
        self._sha256: str | None = None

    def __len__(self) -> int:
        return self.size

    def sha256(self) -> str:
        if self._sha256 is None:
            import hashlib

            h = hashlib.sha256()
            for p in self.parts:
                h.update(p)
            self._sha256 = h.hexdigest()
        return self._sha256

    def pieces(self, offset: int = 0, n: int | None = None, piece: int = 1024 * 1024) -> Iterator[memoryview]:
        """Views of at most ``piece`` bytes covering [offset, offset + n): no copy."""
        left = self.size - offset if n is None else n
        for p in self.parts:
            if left <= 0:
                return
            if offset >= p.nbytes:
                offset -= p.nbytes
                continue
            while offset < p.nbytes and left > 0:
                k = min(piece, p.nbytes - offset, left)
                yield p[offset : offset + k]
                offset += k
                left -= k
            offset = 0
        if left > 0:
            raise ValueError(f"the payload ends {left} bytes before the range asked for")

    def tobytes(self) -> bytes:
        return b"".join(self.parts)


def encode_parts(weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> Payload:
    """The safetensors encoding of ``weights`` as a :class:`Payload` over the arrays' buffers.

    Byte for byte a valid safetensors file (the library reads it back); contiguous
    little-endian arrays are referenced, not copied, so the caller must not change them
    until the payload is sent.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    arrays: list[np.ndarray] = []
    offset = 0
    # Largest items first, as the safetensors library writes them: every tensor stays aligned.
    ordered = sorted(weights.items(), key=lambda kv: (-np.asarray(kv[1]).dtype.itemsize, kv[0]))
    for name, arr in ordered:
        a = np.asarray(arr)
        if a.dtype not in ALLOWED_DTYPES:
            raise TensorFormatError(f"tensor {name!r} has unsupported dtype {a.dtype}")
        if not a.flags.c_contiguous:
            a = a.copy(order="C")  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        st = _ST_NAMES[a.dtype]
        header[name] = {"dtype": st, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    import json
    import struct

    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    return Payload([struct.pack("<Q", len(text)) + text, *(a.reshape(-1).view(np.uint8).data for a in arrays)])


class TensorSink:
    """Decodes a safetensors stream as it arrives, each byte written once, into its own array.

    ``write`` it the stream in pieces of any size (a download's chunks); ``result`` then
    gives the metadata and the arrays. The header is checked as the safetensors library
    checks it (contiguous offsets from 0, sizes matching shapes, allowed dtypes) before any
    array is allocated, and against ``expected_size`` (the blob's declared size) when given,
    so a hostile header cannot make the reader allocate more than the payload's size.
    """

    def __init__(self, expected_size: int | None = None) -> None:
        self.expected_size = expected_size
        self._head = bytearray()
        self._header_len: int | None = None
        self._targets: list[memoryview] = []
        self._data_len = 0
        self._pos = 0  # bytes of the data section received
        self._index = 0  # target being filled
        self._offset = 0  # within that target
        self.metadata: dict[str, str] = {}
        self.tensors: Weights = {}

    def write(self, chunk: bytes | bytearray | memoryview) -> int:
        view = memoryview(chunk).cast("B")
        n = view.nbytes
        if self._header_len is None or len(self._head) < 8 + self._header_len:
            view = self._take_header(view)
        if view.nbytes:
            self._take_data(view)
        return n

    def _take_header(self, view: memoryview) -> memoryview:
        if self._header_len is None:
            k = min(8 - len(self._head), view.nbytes)
            self._head += view[:k]
            view = view[k:]
            if len(self._head) < 8:
                return view
            import struct

            (n,) = struct.unpack("<Q", self._head[:8])
            if n > MAX_HEADER_BYTES or (self.expected_size is not None and 8 + n > self.expected_size):
                raise TensorFormatError("safetensors header length is out of range")
            self._header_len = n
        need = 8 + self._header_len - len(self._head)
        self._head += view[:need]
        view = view[need:]
        if len(self._head) == 8 + self._header_len:
            self._parse(bytes(self._head[8:]))
        return view

    def _parse(self, raw: bytes) -> None:
        import json

        try:
            header = json.loads(raw)
        except ValueError as exc:
            raise TensorFormatError(f"safetensors header is not JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise TensorFormatError("safetensors header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise TensorFormatError("safetensors metadata is not a mapping of strings")
        self.metadata = {str(k): v for k, v in meta.items()}
        entries = []
        for name, info in header.items():
            try:
                dtype = _ST_DTYPES[info["dtype"]]
                shape = [int(d) for d in info["shape"]]
                start, end = (int(x) for x in info["data_offsets"])
            except KeyError as exc:
                raise TensorFormatError(f"tensor {name!r}: unsupported dtype or missing field {exc}") from None
            except (TypeError, ValueError) as exc:
                raise TensorFormatError(f"tensor {name!r}: malformed entry ({exc})") from None
            if any(d < 0 for d in shape) or not all(type(d) is int for d in info["shape"]):
                raise TensorFormatError(f"tensor {name!r}: malformed shape {info['shape']!r}")
            nbytes = math.prod(shape) * dtype.itemsize
            if end - start != nbytes:
                raise TensorFormatError(f"tensor {name!r}: {end - start} bytes do not hold shape {shape} of {dtype}")
            entries.append((start, end, name, dtype, shape))
        entries.sort(key=lambda e: (e[0], e[1]))
        at = 0
        for start, end, name, _, _ in entries:
            if start != at:
                raise TensorFormatError(f"tensor {name!r}: data offsets are not contiguous")
            at = end
        self._data_len = at
        if self.expected_size is not None and 8 + len(raw) + at != self.expected_size:
            raise TensorFormatError(
                f"the header describes {8 + len(raw) + at} bytes but the payload has {self.expected_size}"
            )
        for _, _, name, dtype, shape in entries:
            arr = np.empty(shape, dtype=dtype)
            self.tensors[name] = arr
            if arr.nbytes:
                self._targets.append(arr.reshape(-1).view(np.uint8).data)

    def writable(self, limit: int) -> memoryview | None:
        """Where the next ``limit`` bytes at most of the data section go, for ``readinto``.

        A reader that can fill a buffer (a socket) puts the bytes straight into the array
        they belong to, with no intermediate chunk; :meth:`wrote` then counts them. None
        while the header is still to come or once every array is full: :meth:`write` then
        takes the bytes (and refuses a payload longer than its header says).
        """
        if self._header_len is None or len(self._head) < 8 + self._header_len or self._index >= len(self._targets):
            return None
        target = self._targets[self._index]
        return target[self._offset : self._offset + min(limit, target.nbytes - self._offset)]

    def wrote(self, n: int) -> None:
        """``n`` bytes were put into the view :meth:`writable` gave last."""
        target = self._targets[self._index]
        if n < 0 or self._offset + n > target.nbytes:
            raise ValueError(f"{n} bytes do not fit the view that was given")
        self._pos += n
        self._offset += n
        if self._offset == target.nbytes:
            self._index += 1
            self._offset = 0

    def _take_data(self, view: memoryview) -> None:
        if self._pos + view.nbytes > self._data_len:
            raise TensorFormatError("the payload is longer than its safetensors header says")
        self._pos += view.nbytes
        while view.nbytes:
            target = self._targets[self._index]
            k = min(view.nbytes, target.nbytes - self._offset)
            target[self._offset : self._offset + k] = view[:k]
            view = view[k:]
            self._offset += k
            if self._offset == target.nbytes:
                self._index += 1
                self._offset = 0

    def result(self) -> tuple[dict[str, str], Weights]:
        """(metadata, arrays) once the whole payload was written; a short payload is an error."""
        if self._header_len is None or len(self._head) < 8 + self._header_len:
            raise TensorFormatError("payload too short for a safetensors header")
        if self._pos != self._data_len:
            raise TensorFormatError(f"the payload ended {self._data_len - self._pos} bytes early")
        return self.metadata, self.tensors


def decode_stream(data: bytes | bytearray | memoryview) -> tuple[dict[str, str], Weights]:
    """(metadata, arrays) of a whole safetensors payload in memory, through :class:`TensorSink`."""
    sink = TensorSink(len(memoryview(data).cast("B")))
    sink.write(data)
    return sink.result()
