"""A minimal progress bar on stderr."""
from __future__ import annotations

import sys
from typing import Optional, TextIO


class Progress:
    """``label [#####-----] 5/10``, redrawn in place; shown only for more than ``min_items``
    items on a terminal (so piped output and test captures stay clean)."""

    def __init__(self, total: int, stream: Optional[TextIO] = None, min_items: int = 3,
                 width: int = 30, label: str = ""):
        self.total, self.done, self.width = total, 0, width
        self.prefix = f"{label} " if label else ""
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = total > min_items and self.stream.isatty()

    def _draw(self) -> None:
        filled = self.width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.prefix}[{bar}] {self.done}/{self.total}")
        self.stream.flush()

    def update(self, count: int = 1) -> None:
        """Advance by ``count`` items."""
        self.done = min(self.total, self.done + count)
        if self.enabled:
            self._draw()

    def message(self, line: str) -> None:
        """Print a line to the stream without garbling the bar."""
        if self.enabled:
            self.stream.write("\r\033[K")
        self.stream.write(line + "\n")
        if self.enabled:
            self._draw()
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
