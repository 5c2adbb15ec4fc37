"""Console errors and uncaught exceptions of the pages a browser test watches.

A plain module, not part of the conftest, so that tests can import the class by name.
"""

from __future__ import annotations

from typing import Any


class PageErrors:
    """Console errors and uncaught exceptions of the pages it watches."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def watch(self, page: Any) -> Any:
        def on_console(msg: Any) -> None:
            if msg.type == "error":
                self.errors.append(f"console: {msg.text} ({page.url})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc} ({page.url})"))
        return page

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]
