"""Where things are: the checkout's root (what subprocesses put on PYTHONPATH)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
