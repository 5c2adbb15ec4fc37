"""Error hints in the words of the terminal the user is typing into.

The hub and the data loaders phrase their hints for their own callers (an HTTP route, a
Python keyword argument); a terminal user needs the command or flag instead. The
translation lives here, in the CLI, so the hub stays free of CLI knowledge.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"GET /api/v1/tasks\b(?!/)"), "'fedpact task list'"),
    (re.compile(r"POST /api/v1/tasks/([^/\s]+)/join"), r"'fedpact join \1'"),
    (re.compile(r"DELETE /api/v1/tasks/([^/\s]+)/aggregator"), r"'fedpact hosted stop \1'"),
    (re.compile(r"POST /api/v1/tasks/([^/\s]+)/uploads"), r"'fedpact hosted start \1 --eval-data FILE'"),
    (re.compile(r"missing='drop'"), "--missing drop"),
    (re.compile(r"label='<column name>'"), "--label COLUMN"),
    (re.compile(r"labels_path="), "--labels FILE"),
    (re.compile(r"pass header=\[\.\.\.\] with the column names"), "add a header row with the column names"),
    (re.compile(r"select fewer columns with features=\[\.\.\.\]"), "drop the incomplete columns from the file"),
]


def for_terminal(text: str) -> str:
    """``text`` with API routes and Python keyword hints replaced by CLI commands and flags."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def did_you_mean(wanted: str, names: Iterable[str]) -> str:
    """`` did you mean 'x'?`` for the closest names, or an empty string."""
    close = difflib.get_close_matches(wanted, list(names), n=3, cutoff=0.6)
    if not close:
        return ""
    return " did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
