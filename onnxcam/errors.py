"""The one exception type onnxcam raises for problems a user can fix."""


class OnnxcamError(Exception):
    """A user-facing error whose message is one line naming the file or argument at fault."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (onnxruntime errors span many lines)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
