"""Participants' local data: reading files, checking them against a task, splitting them.

Importing this package pulls in neither torch nor scikit-learn (the digits loader imports
scikit-learn only when called).
"""

from fedpact.data.builtin import digits_federation, digits_schema, load_digits_dataset
from fedpact.data.dataset import Dataset
from fedpact.data.errors import DataLoadError
from fedpact.data.loaders import load_csv, load_data, load_idx, load_npz, save_csv
from fedpact.data.partition import split_dirichlet, split_iid
from fedpact.data.prepare import federated_fill_values, impute, load_task_data
from fedpact.data.schema import (
    check_dataset,
    conform,
    encode_labels,
    ensure_fits,
    one_hot,
)

__all__ = [
    "DataLoadError",
    "Dataset",
    "check_dataset",
    "conform",
    "digits_federation",
    "digits_schema",
    "encode_labels",
    "ensure_fits",
    "federated_fill_values",
    "impute",
    "load_csv",
    "load_data",
    "load_digits_dataset",
    "load_idx",
    "load_npz",
    "load_task_data",
    "one_hot",
    "save_csv",
    "split_dirichlet",
    "split_iid",
]
