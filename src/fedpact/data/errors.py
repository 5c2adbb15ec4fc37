"""Errors raised while reading a participant's local data files."""

from __future__ import annotations

from fedpact.common.errors import FedpactError


class DataLoadError(FedpactError, ValueError):
    """A data file could not be read; the message names the file and what to do about it.

    It is also a ValueError so that callers treating bad input generically still catch it.
    """
