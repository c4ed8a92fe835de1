"""Silencing third-party loggers around calls whose chatter would bury onnxcam's one-line errors."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Sequence


@contextlib.contextmanager
def quiet_loggers(names: Sequence[str]) -> Iterator[None]:
    """Within this block the named loggers report nothing below CRITICAL."""
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
