"""The one exception type onnxcam raises for problems a user can fix, and the one check of a
count argument (batch sizes, samples, threads) that every layer shares."""
from __future__ import annotations

from typing import Optional


class OnnxcamError(Exception):
    """A user-facing error whose message is one line naming the file or argument at fault."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (onnxruntime errors span many lines)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


def check_count(name: str, value: Optional[int], least: int = 1) -> None:
    """Refuse a count below ``least`` in one line naming the argument (None: not given)."""
    if value is not None and value < least:
        raise OnnxcamError(f"{name}: must be at least {least}, got {value}")
