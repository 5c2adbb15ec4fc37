import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fedpact.data import DataLoadError, load_csv, load_data, load_idx, load_npz

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HEART_COLUMNS = "age sex cp trestbps chol fbs restecg thalach exang oldpeak slope ca thal num".split()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- CSV ---------------------------------------------------------------------------------


def test_csv_reads_header_and_selects_features_in_order(tmp_path):
    p = _write(tmp_path / "d.csv", "a,b,label,c\n1,2,0,3\n4,5,1,6\n\n")
    ds = load_csv(p, "label")
    assert ds.feature_names == ["a", "b", "c"] and ds.x.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert ds.y.tolist() == [0, 1] and ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    ds = load_csv(p, "label", features=["c", "a"])
    assert ds.feature_names == ["c", "a"] and ds.x.tolist() == [[3, 1], [6, 4]]


def test_csv_missing_label_column_names_columns(tmp_path):
    p = _write(tmp_path / "d.csv", "a,b,target\n1,2,0\n")
    with pytest.raises(DataLoadError, match=r"d\.csv: no label column 'label'; the columns are 'a', 'b', 'target'"):
        load_csv(p, "label")


def test_csv_missing_feature_column(tmp_path):
    p = _write(tmp_path / "d.csv", "a,b,label\n1,2,0\n")
    with pytest.raises(DataLoadError, match="feature column\\(s\\) 'z' not found"):
        load_csv(p, "label", features=["a", "z"])


def test_csv_non_numeric_cell_names_file_line_and_column(tmp_path):
    p = _write(tmp_path / "d.csv", "a,b,label\n1,2,0\n3,abc,1\n")
    with pytest.raises(DataLoadError, match=r"d\.csv, line 3, column 'b': 'abc' is not a number"):
        load_csv(p, "label")


def test_csv_missing_values_error_or_drop(tmp_path):
    p = _write(tmp_path / "d.csv", "a,b,label\n1,2,0\n3,?,1\n5,,0\n7,8,1\n")
    with pytest.raises(DataLoadError, match=r"column 'b' \(2 rows, first on line 3\).*missing='drop'"):
        load_csv(p, "label")
    ds = load_csv(p, "label", missing="drop")
    assert ds.x.tolist() == [[1, 2], [7, 8]] and ds.y.tolist() == [0, 1]
    assert len(load_csv(p, "label", features=["a"])) == 4


def test_csv_headerless_with_header_keyword(tmp_path):
    p = _write(tmp_path / "d.data", "1,2,0\n3,4,1\n")
    ds = load_csv(p, "y", header=["u", "v", "y"])
    assert ds.feature_names == ["u", "v"] and len(ds) == 2
    with pytest.raises(DataLoadError, match="looks like data, not a header"):
        load_csv(p, "y")


def test_csv_ragged_row_and_bad_label(tmp_path):
    p = _write(tmp_path / "d.csv", "a,label\n1,0\n2,1,5\n")
    with pytest.raises(DataLoadError, match="line 3: 3 cells, but there are 2 columns"):
        load_csv(p, "label")
    p = _write(tmp_path / "e.csv", "a,label\n1,0.5\n")
    with pytest.raises(DataLoadError, match="line 2: label '0.5' .* not a whole number"):
        load_csv(p, "label")
    with pytest.raises(DataLoadError, match="empty"):
        load_csv(_write(tmp_path / "f.csv", ""), "label")
    with pytest.raises(DataLoadError, match="no such file"):
        load_csv(tmp_path / "nope.csv", "label")


# --- NPZ ---------------------------------------------------------------------------------


def test_npz_roundtrip_and_errors(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.random.rand(5, 3), y=np.array([0, 1, 0, 1, 1]))
    ds = load_npz(p)
    assert ds.x.shape == (5, 3) and ds.x.dtype == np.float32 and ds.y.tolist() == [0, 1, 0, 1, 1]
    np.savez(tmp_path / "k.npz", features=np.zeros((2, 2)), labels=np.array([0, 1]))
    with pytest.raises(DataLoadError, match="no array\\(s\\) named 'x', 'y'; it holds 'features', 'labels'"):
        load_npz(tmp_path / "k.npz")
    assert len(load_npz(tmp_path / "k.npz", x_key="features", y_key="labels")) == 2
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataLoadError, match="o.npz"):
        load_npz(tmp_path / "o.npz")
    with pytest.raises(DataLoadError, match="cannot be read"):
        load_npz(_write(tmp_path / "bad.npz", "not a zip"))


# --- IDX ---------------------------------------------------------------------------------


def _idx_pair(tmp_path: Path, n: int = 6, rows: int = 4, cols: int = 5, gz: bool = True) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    images = struct.pack(">IIII", 2051, n, rows, cols) + pixels.tobytes()
    label_bytes = struct.pack(">II", 2049, n) + labels.tobytes()
    suffix = ".gz" if gz else ""
    ip, lp = tmp_path / f"train-images-idx3-ubyte{suffix}", tmp_path / f"train-labels-idx1-ubyte{suffix}"
    ip.write_bytes(gzip.compress(images) if gz else images)
    lp.write_bytes(gzip.compress(label_bytes) if gz else label_bytes)
    return ip, lp


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz):
    ip, lp = _idx_pair(tmp_path, gz=gz)
    ds = load_idx(ip, lp)
    assert ds.x.shape == (6, 1, 4, 5) and ds.x.dtype == np.float32
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0 and ds.y.dtype == np.int64
    assert np.array_equal(load_data(ip).x, ds.x)


def test_idx_wrong_magic(tmp_path):
    ip, lp = _idx_pair(tmp_path)
    with pytest.raises(DataLoadError, match="magic number 2049 where an IDX images file has 2051"):
        load_idx(lp, ip)


def test_idx_truncated(tmp_path):
    ip, lp = _idx_pair(tmp_path, gz=False)
    ip.write_bytes(ip.read_bytes()[:-7])
    with pytest.raises(DataLoadError, match=r"header announces 6 x 4 x 5 = 120 bytes of data but the file has 113; it is truncated"):
        load_idx(ip, lp)
    ip.write_bytes(b"\x00\x00")
    with pytest.raises(DataLoadError, match="too short for an IDX header"):
        load_idx(ip, lp)


def test_idx_truncated_gzip(tmp_path):
    ip, lp = _idx_pair(tmp_path, gz=True)
    ip.write_bytes(ip.read_bytes()[:-20])
    with pytest.raises(DataLoadError, match="truncated"):
        load_idx(ip, lp)


def test_idx_count_mismatch(tmp_path):
    ip, _ = _idx_pair(tmp_path, n=6)
    other = tmp_path / "other"
    other.mkdir()
    _, lp = _idx_pair(other, n=5)
    with pytest.raises(DataLoadError, match="holds 6 images but .* holds 5 labels"):
        load_idx(ip, lp)


def test_load_data_dispatch(tmp_path):
    csv_path = _write(tmp_path / "d.csv", "a,label\n1,0\n2,1\n")
    assert len(load_data(csv_path)) == 2
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 1]))
    assert len(load_data(tmp_path / "d.npz")) == 3
    with pytest.raises(DataLoadError, match="unknown file type"):
        load_data(_write(tmp_path / "d.xlsx", "x"))
    ip, lp = _idx_pair(tmp_path)
    with pytest.raises(DataLoadError, match="looks like a labels file"):
        load_data(lp)
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "x-images-idx3-ubyte").write_bytes(ip.read_bytes())
    with pytest.raises(DataLoadError, match="pass labels_path"):
        load_data(lone / "x-images-idx3-ubyte")
    assert len(load_data(lone / "x-images-idx3-ubyte", labels_path=lp)) == 6


# --- the reference data in ../shared/data ------------------------------------------------


def test_real_mnist_t10k():
    ds = load_data(SHARED_DATA / "mnist-t10k" / "t10k-images-idx3-ubyte.gz")
    assert ds.x.shape == (10000, 1, 28, 28) and ds.x.dtype == np.float32
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert ds.y[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(ds.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    "site,rows,complete",
    [("cleveland", 303, 297), ("hungarian", 294, 1), ("switzerland", 123, None), ("va", 200, 1)],
)
def test_real_heart_disease(site, rows, complete):
    path = SHARED_DATA / "heart-disease" / f"processed.{site}.data"
    ds = load_data(path, label="num", header=HEART_COLUMNS, features=["age", "sex", "cp"])
    assert len(ds) == rows and ds.x.shape == (rows, 3) and set(ds.y.tolist()) <= {0, 1, 2, 3, 4}
    with pytest.raises(DataLoadError, match=rf"processed\.{site}\.data: missing values .*column 'ca'"):
        load_data(path, label="num", header=HEART_COLUMNS)
    if complete is None:
        with pytest.raises(DataLoadError, match="none is left"):
            load_data(path, label="num", header=HEART_COLUMNS, missing="drop")
    else:
        full = load_data(path, label="num", header=HEART_COLUMNS, missing="drop")
        assert len(full) == complete and full.feature_names == HEART_COLUMNS[:-1]
        assert np.isfinite(full.x).all()


def test_real_cleveland_first_row():
    ds = load_csv(SHARED_DATA / "heart-disease" / "processed.cleveland.data", "num", header=HEART_COLUMNS, missing="drop")
    assert ds.x[0].tolist() == pytest.approx([63, 1, 1, 145, 233, 1, 2, 150, 0, 2.3, 3, 0, 6])
    assert ds.y[:3].tolist() == [0, 2, 1]


def test_save_csv_writes_what_load_csv_reads(tmp_path) -> None:
    from fedpact.data.builtin import load_digits_dataset
    from fedpact.data.loaders import save_csv

    ds = load_digits_dataset().subset(list(range(40)))
    path = save_csv(tmp_path / "digits.csv", ds)
    back = load_csv(path, label="label")
    assert back.x.shape == (40, 64)
    assert np.allclose(back.x, ds.x.reshape(40, -1), atol=1e-5)
    assert (back.y == ds.y).all()
