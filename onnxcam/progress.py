"""A minimal progress bar on stderr."""
from __future__ import annotations

import sys
from typing import Optional, TextIO


class Progress:
    """``[#####-----] 5/10``, redrawn in place; shown only for more than ``min_items``
    items on a terminal (so piped output and test captures stay clean)."""

    def __init__(self, total: int, stream: Optional[TextIO] = None, min_items: int = 3,
                 width: int = 30):
        self.total, self.done, self.width = total, 0, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = total > min_items and self.stream.isatty()

    def _draw(self) -> None:
        filled = self.width * self.done // max(self.total, 1)
        self.stream.write(f"\r[{'#' * filled}{'-' * (self.width - filled)}] {self.done}/{self.total}")
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
