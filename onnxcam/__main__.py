"""``python -m onnxcam``."""
from onnxcam.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
