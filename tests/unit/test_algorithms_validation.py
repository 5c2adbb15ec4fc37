import numpy as np
import pytest

from fedpact.algorithms import validate_update
from fedpact.common.errors import UpdateRejected

REF = {"w": np.zeros((3, 4), np.float32), "b": np.zeros(3, np.float32)}


def _update(**changes):
    update = {k: v.copy() for k, v in REF.items()}
    update.update(changes)
    return {k: v for k, v in update.items() if v is not None}


def test_accepts_matching_update():
    validate_update(REF, _update(w=np.ones((3, 4), np.float32)))


def test_missing_tensor():
    with pytest.raises(UpdateRejected, match="missing tensor\\(s\\) 'b'"):
        validate_update(REF, _update(b=None))


def test_unexpected_tensor():
    with pytest.raises(UpdateRejected, match="unexpected tensor\\(s\\) 'extra'"):
        validate_update(REF, _update(extra=np.zeros(1, np.float32)))


def test_shape_mismatch():
    with pytest.raises(UpdateRejected, match=r"'w': shape mismatch: expected \(3, 4\), got \(4, 3\)"):
        validate_update(REF, _update(w=np.zeros((4, 3), np.float32)))


def test_dtype_mismatch():
    with pytest.raises(UpdateRejected, match="'b': dtype mismatch: expected float32, got float64"):
        validate_update(REF, _update(b=np.zeros(3, np.float64)))


def test_non_finite_counts():
    w = np.zeros((3, 4), np.float32)
    w[0, :2] = np.nan
    w[2, 3] = -np.inf
    with pytest.raises(UpdateRejected, match=r"'w': non-finite values \(2 NaN, 1 inf of 12\)"):
        validate_update(REF, _update(w=w))


def test_huge_but_finite_values_pass():
    validate_update(REF, _update(w=np.full((3, 4), 3e38, np.float32)))


def test_not_an_array_and_all_problems_reported_together():
    with pytest.raises(UpdateRejected) as err:
        validate_update(REF, {"w": [[0.0] * 4] * 3, "zz": np.zeros(1)})
    message = str(err.value)
    assert "missing tensor(s) 'b'" in message and "unexpected tensor(s) 'zz'" in message
    assert "'w': not an array but list" in message
