"""Readers for the file formats participants bring: CSV, NumPy ``.npz`` and MNIST-style IDX.

Every failure raises DataLoadError naming the file, where in it the problem is and what to
change, because the person reading it is a data owner looking at their own files, not at
our code. Nothing here unpickles: ``.npz`` files are opened with ``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import struct
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from fedpact.data.dataset import Dataset
from fedpact.data.errors import DataLoadError

#: ``impute`` keeps missing feature cells as NaN for fedpact.data.prepare to fill with
#: federated statistics (rows whose label is missing are dropped: a label cannot be imputed).
MissingPolicy = Literal["error", "drop", "impute"]

#: Cell values that mean "no value" (UCI files use '?').
MISSING_TOKENS: tuple[str, ...] = ("", "?")

_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049


def _open_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataLoadError(f"{path}: no such file; check the path")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (EOFError, OSError, gzip.BadGzipFile) as exc:
        raise DataLoadError(f"{path.name}: cannot be read ({exc}); the file may be truncated, copy it again") from exc
    return raw


def _read_rows(path: Path, delimiter: str) -> tuple[list[list[str]], list[int]]:
    raw = _open_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataLoadError(f"{path.name}: not UTF-8 text at byte {exc.start}; save the file as UTF-8 CSV") from exc
    rows: list[list[str]] = []
    lines: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append([cell.strip() for cell in row])
                lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataLoadError(f"{path.name}, line {reader.line_num}: malformed CSV ({exc})") from exc
    return rows, lines


def _column_index(path: Path, names: list[str], wanted: str, role: str, has_header: bool) -> int:
    if wanted in names:
        return names.index(wanted)
    hint = _header_hint(names) if has_header else ""
    raise DataLoadError(
        f"{path.name}: no {role} column {wanted!r}; the columns are {', '.join(map(repr, names))}; "
        f"pass {role}='<column name>' to choose it.{hint}"
    )


def _header_hint(names: list[str]) -> str:
    if names and all(_is_number(n) or n in MISSING_TOKENS for n in names):
        return " The first row looks like data, not a header: pass header=[...] with the column names."
    return ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_bad_cell(path: Path, cells: np.ndarray, lines: list[int], names: list[str]) -> DataLoadError:
    for j in range(cells.shape[1]):
        for i in range(cells.shape[0]):
            if str(cells[i, j]) not in MISSING_TOKENS and not _is_number(str(cells[i, j])):
                return DataLoadError(
                    f"{path.name}, line {lines[i]}, column {names[j]!r}: {str(cells[i, j])!r} is not a number; "
                    "every feature and the label must be numeric (declare text categories in data.categorical)"
                )
    return DataLoadError(f"{path.name}: could not convert the cells to numbers")


def _missing_report(path: Path, missing: np.ndarray, lines: list[int], names: list[str]) -> str:
    parts = []
    for j, name in enumerate(names):
        rows = np.flatnonzero(missing[:, j])
        if rows.size:
            plural = "s" if rows.size != 1 else ""
            parts.append(f"column {name!r} ({rows.size} row{plural}, first on line {lines[rows[0]]})")
    return (
        f"{path.name}: missing values ({' or '.join(repr(t) for t in MISSING_TOKENS)}) in "
        + ", ".join(parts)
        + "; fill them in, or pass missing='drop' to leave those rows out"
    )


def save_csv(path: str | Path, ds: Dataset, label: str = "label") -> Path:
    """Write a dataset as the CSV that :func:`load_csv` reads: a header row, features, label last.

    Columns keep the dataset's feature names (``feature_<i>`` when it has none); images are
    flattened. Handy for giving each participant of a simulation its own file.
    """
    x = np.asarray(ds.x).reshape(len(ds), -1)
    names = list(ds.feature_names) if ds.feature_names and len(ds.feature_names) == x.shape[1] else [
        f"feature_{i}" for i in range(x.shape[1])
    ]
    path = Path(path)
    np.savetxt(path, np.column_stack([x, ds.y]), delimiter=",", header=",".join([*names, label]),
               comments="", fmt="%.6g")
    return path


def _code_categories(path: Path, cells: np.ndarray, lines: list[int], names: list[str],
                     categories: Mapping[str, Sequence[object]]) -> np.ndarray:
    """Replace the cells of string-categorical columns by their category's position (a number)."""
    cells = cells.copy()
    for j, name in enumerate(names):
        cats = categories.get(name)
        if not cats or not any(isinstance(c, str) for c in cats):
            continue
        lookup = {str(c): str(i) for i, c in enumerate(cats)}
        col = cells[:, j]
        present = ~np.isin(col, MISSING_TOKENS)
        unknown = sorted({str(v) for v in col[present]} - set(lookup))
        if unknown:
            i = int(np.flatnonzero(present & np.isin(col, unknown))[0])
            raise DataLoadError(
                f"{path.name}, line {lines[i]}, column {name!r}: value(s) {', '.join(map(repr, unknown[:10]))} are not "
                f"among the declared categories {list(cats)}; add them to data.categorical or fix the file")
        cells[present, j] = [lookup[str(v)] for v in col[present]]
    return cells


def load_csv(
    path: str | Path,
    label: str | None,
    features: list[str] | None = None,
    *,
    missing: MissingPolicy = "error",
    header: list[str] | None = None,
    delimiter: str = ",",
    continuous: bool = False,
    categories: Mapping[str, Sequence[object]] | None = None,
) -> Dataset:
    """Read a CSV file with one sample per row into a Dataset.

    The first row names the columns unless ``header`` supplies the names for a headerless
    file. ``features`` selects and orders the feature columns; by default every column but
    the label is a feature, in file order. ``label=None`` reads unlabelled data (clustering,
    analytics); ``continuous`` reads the label as a regression target. Columns of
    ``categories`` whose declared categories are strings are held as the category's
    position, the form fedpact.data.prepare one-hot encodes.
    """
    path = Path(path)
    if missing not in ("error", "drop", "impute"):
        raise ValueError(f"missing must be 'error', 'drop' or 'impute', not {missing!r}")
    rows, lines = _read_rows(path, delimiter)
    if header is None:
        if not rows:
            raise DataLoadError(f"{path.name}: the file is empty; it needs a header row and data rows")
        names, rows, lines = rows[0], rows[1:], lines[1:]
    else:
        names = [str(h) for h in header]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataLoadError(
            f"{path.name}: column name(s) {', '.join(map(repr, duplicates))} appear more than once."
            + (_header_hint(names) if header is None else "")
        )
    for row, line in zip(rows, lines):
        if len(row) != len(names):
            raise DataLoadError(
                f"{path.name}, line {line}: {len(row)} cells, but there are {len(names)} columns "
                f"({'given by header=' if header is not None else 'in the header row'})"
            )
    label_col = _column_index(path, names, label, "label", header is None) if label is not None else None
    if features is None:
        feature_cols = [i for i in range(len(names)) if i != label_col]
    else:
        if label is not None and label in features:
            raise DataLoadError(f"{path.name}: the label column {label!r} cannot also be a feature")
        absent = [f for f in features if f not in names]
        if absent:
            raise DataLoadError(
                f"{path.name}: feature column(s) {', '.join(map(repr, absent))} not found; "
                f"the columns are {', '.join(map(repr, names))}"
            )
        feature_cols = [names.index(f) for f in features]
    cols = feature_cols + ([label_col] if label_col is not None else [])
    col_names = [names[c] for c in cols]
    n_feat = len(feature_cols)
    if not rows:
        return Dataset(np.empty((0, n_feat), np.float32), np.empty(0, np.float64 if continuous else np.int64),
                       col_names[:n_feat], continuous)
    cells = np.array([[row[c] for c in cols] for row in rows], dtype=str)
    if categories:
        cells = _code_categories(path, cells, lines, col_names, categories)
    is_missing = np.isin(cells, MISSING_TOKENS)
    if is_missing.any():
        if missing == "error":
            raise DataLoadError(_missing_report(path, is_missing, lines, col_names))
        # impute keeps feature gaps (as NaN) but still drops rows without a label
        keep = np.asarray(~(is_missing[:, n_feat:] if missing == "impute" else is_missing).any(axis=1), dtype=bool)
        if not keep.any():
            raise DataLoadError(
                f"{path.name}: every row has a missing value in the selected columns, so none is left; "
                "select fewer columns with features=[...]"
            )
        cells = cells[keep]
        lines = [line for line, k in zip(lines, keep.tolist()) if k]
    try:
        values = np.where(np.isin(cells, MISSING_TOKENS), "nan", cells).astype(np.float64)
    except ValueError:
        raise _first_bad_cell(path, cells, lines, col_names) from None
    if label_col is None:
        return Dataset.unlabelled(values.astype(np.float32), col_names)
    y = values[:, -1]
    if continuous:
        bad = ~np.isfinite(y)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataLoadError(f"{path.name}, line {lines[i]}: target {str(cells[i, -1])!r} in column {label!r} "
                                "is not a finite number")
        return Dataset(values[:, :-1].astype(np.float32), y, col_names[:-1], continuous=True)
    whole = np.isfinite(y) & (y == np.round(y))
    if not whole.all():
        i = int(np.flatnonzero(~whole)[0])
        raise DataLoadError(
            f"{path.name}, line {lines[i]}: label {str(cells[i, -1])!r} in column {label!r} is not a whole number; "
            "labels must be integer class values"
        )
    return Dataset(values[:, :-1].astype(np.float32), y.astype(np.int64), col_names[:-1])


def load_npz(path: str | Path, x_key: str = "x", y_key: str = "y", *, continuous: bool = False) -> Dataset:
    """Read samples and labels (or, ``continuous``, regression targets) from a NumPy ``.npz``
    archive, never unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise DataLoadError(f"{path}: no such file; check the path")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataLoadError(
                    f"{path.name}: not an .npz archive; save it with numpy.savez({x_key}=..., {y_key}=...)"
                )
            keys = list(archive.files)
            absent = [k for k in (x_key, y_key) if k not in keys]
            if absent:
                raise DataLoadError(
                    f"{path.name}: no array(s) named {', '.join(map(repr, absent))}; it holds "
                    f"{', '.join(map(repr, keys)) or 'nothing'}; pass x_key=/y_key= to pick the right ones"
                )
            x = archive[x_key]
            y = archive[y_key]
            names = archive["feature_names"] if "feature_names" in keys else None
    except DataLoadError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataLoadError(f"{path.name}: cannot be read as a plain .npz archive ({exc})") from exc
    if x.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
        raise DataLoadError(f"{path.name}: arrays must be numeric, got x {x.dtype} and y {y.dtype}")
    feature_names = [str(n) for n in names] if names is not None and names.dtype.kind == "U" and x.ndim == 2 else None
    try:
        return Dataset(x, y, feature_names, continuous)
    except ValueError as exc:
        raise DataLoadError(f"{path.name}: {exc}") from exc


def _read_idx(path: Path, magic_expected: int, what: str) -> tuple[tuple[int, ...], np.ndarray]:
    raw = _open_bytes(path)
    if len(raw) < 4:
        raise DataLoadError(f"{path.name}: only {len(raw)} bytes, too short for an IDX header; the file is truncated")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != magic_expected:
        raise DataLoadError(
            f"{path.name}: magic number {magic} where an IDX {what} file has {magic_expected}; "
            f"IDX image files start with {_IDX_IMAGES_MAGIC} and label files with {_IDX_LABELS_MAGIC}: "
            "check you passed the right file"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataLoadError(
            f"{path.name}: the IDX header is cut short ({len(raw)} of {header} bytes); the file is truncated"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(raw) - header
    if got != expected:
        state = "truncated, copy it again" if got < expected else "followed by unexpected extra bytes"
        raise DataLoadError(
            f"{path.name}: header announces {' x '.join(map(str, dims))} = {expected} bytes of data "
            f"but the file has {got}; it is {state}"
        )
    return dims, np.frombuffer(raw, dtype=np.uint8, offset=header)


def load_idx(images_path: str | Path, labels_path: str | Path) -> Dataset:
    """Read an MNIST-style IDX image/label pair (gzipped or plain) into (n, 1, rows, cols) in [0, 1]."""
    images_path, labels_path = Path(images_path), Path(labels_path)
    dims, pixels = _read_idx(images_path, _IDX_IMAGES_MAGIC, "images")
    if dims[1] == 0 or dims[2] == 0:
        raise DataLoadError(f"{images_path.name}: the header gives an empty image size {dims[1]} x {dims[2]}")
    ldims, labels = _read_idx(labels_path, _IDX_LABELS_MAGIC, "labels")
    if ldims[0] != dims[0]:
        raise DataLoadError(
            f"{images_path.name} holds {dims[0]} images but {labels_path.name} holds {ldims[0]} labels; "
            "pair the images with their own labels file"
        )
    n, rows, cols = dims
    x = pixels.reshape(n, 1, rows, cols).astype(np.float32)
    x *= np.float32(1.0 / 255.0)
    return Dataset(x, labels.astype(np.int64))


_IDX_NAME = re.compile(r"idx\d|ubyte", re.IGNORECASE)
_CSV_SUFFIXES = (".csv", ".csv.gz", ".data", ".txt")


def _labels_for(images: Path) -> Path:
    name = images.name
    if "labels" in name.lower():
        raise DataLoadError(
            f"{name} looks like a labels file; pass the images file as the path and this one as labels_path"
        )
    guess = re.sub("images-idx3", "labels-idx1", name, flags=re.IGNORECASE)
    candidate = images.with_name(guess)
    if guess == name or not candidate.is_file():
        raise DataLoadError(f"{name}: no matching labels file found next to it; pass labels_path=")
    return candidate


def load_data(
    path: str | Path,
    *,
    label: str | None = "label",
    labels_path: str | Path | None = None,
    features: list[str] | None = None,
    missing: MissingPolicy = "error",
    header: Sequence[str] | None = None,
    continuous: bool = False,
    categories: Mapping[str, Sequence[object]] | None = None,
) -> Dataset:
    """Read a data file, choosing the reader from its name (CSV, ``.npz`` or IDX).

    ``label``, ``features``, ``missing``, ``header``, ``continuous`` and ``categories``
    apply to CSV files (see :func:`load_csv`); ``labels_path`` to IDX images, and defaults
    to the matching ``*-labels-idx1-ubyte*`` file beside them.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return load_csv(path, label, features, missing=missing, header=list(header) if header else None,
                        continuous=continuous, categories=categories)
    if name.endswith(".npz"):
        return load_npz(path, continuous=continuous)
    if _IDX_NAME.search(name):
        return load_idx(path, Path(labels_path) if labels_path is not None else _labels_for(path))
    raise DataLoadError(
        f"{path.name}: unknown file type; use a .csv file (with a header row), a .npz archive with arrays "
        "'x' and 'y', or an IDX image file such as train-images-idx3-ubyte.gz"
    )
