"""The progress bar (`onnxcam.progress`): drawn on terminals only, messages always."""
from __future__ import annotations

import io

from onnxcam.progress import Progress


def test_progress_only_on_terminals():
    quiet = io.StringIO()
    with Progress(10, stream=quiet) as bar:
        bar.update(5)
        bar.message("note")
    assert quiet.getvalue() == "note\n"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    with Progress(10, stream=tty, width=10) as bar:
        bar.update(5)
    assert "[#####-----] 5/10" in tty.getvalue()
    assert not Progress(3, stream=Terminal()).enabled

