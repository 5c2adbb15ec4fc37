"""Error types that cross package boundaries."""

from __future__ import annotations


class FedpactError(Exception):
    """Base class for errors fedpact reports to its users; the message says what to do."""


class DataSchemaError(FedpactError):
    """Local data does not fit a task's data schema; ``problems`` lists each mismatch."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("data does not fit the task:\n  - " + "\n  - ".join(self.problems))


class UpdateRejected(FedpactError):
    """A model update failed validation (shape, dtype, finiteness, names)."""


class UnknownComponent(FedpactError):
    """A definition names a model or algorithm this installation does not have."""
