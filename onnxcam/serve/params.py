"""The parameters of ``POST /v1/explain``, validated against a model, and the client errors
(4xx with a one-line message) that bad ones raise."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from onnxcam.api.explainer import Explainer
from onnxcam.errors import OnnxcamError
from onnxcam.runtime.targets import target_matrix

MAX_TARGETS = 20  # classes explained per request
PARAMETERS = ("model", "method", "top_k", "target", "format", "boxes", "raw", "alpha")
FORMATS = ("json", "png")


class ClientError(Exception):
    """A request the client must change: answered with ``status`` and a JSON error."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class ExplainOptions:
    """One request's validated parameters."""

    methods: tuple[str, ...]
    targets: np.ndarray  # int64 [K]: class indices, or -r for the r-th ranked class
    format: str = "json"
    boxes: bool = False
    raw: bool = False
    alpha: float = 0.5

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can share one graph run."""
        return self.methods, len(self.targets)


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise ClientError(422, f"{name}: given {len(values)} times, expected once")
    return values[0].strip() if values else None


def _integers(name: str, values: Sequence[str]) -> list[int]:
    out = []
    for text in (part.strip() for value in values for part in value.split(",")):
        try:
            out.append(int(text))
        except ValueError:
            raise ClientError(422, f"{name}: expected a whole number, got {text!r}") from None
    return out


def _flag(params: Mapping[str, Sequence[str]], name: str) -> bool:
    text = (_single(params, name) or "0").lower()
    if text not in ("0", "1", "true", "false", "yes", "no"):
        raise ClientError(422, f"{name}: expected 0 or 1, got {text!r}")
    return text in ("1", "true", "yes")


def parse_options(params: Mapping[str, Sequence[str]], explainer: Explainer) -> ExplainOptions:
    """Validate a request's parameters (query string and form fields) against ``explainer``."""
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise ClientError(422, f"{unknown[0]}: unknown parameter (accepted: {', '.join(PARAMETERS)})")
    names = [part.strip().lower() for value in params.get("method") or ["gradcam"]
             for part in value.split(",") if part.strip()]
    if not names:
        raise ClientError(422, "method: no method named")
    try:
        for name in names:
            explainer.method(name)  # an unknown name, or one this file cannot serve
    except OnnxcamError as error:
        raise ClientError(422, str(error)) from None
    top_k, targets = _single(params, "top_k"), params.get("target")
    if top_k is not None and targets:
        raise ClientError(422, "top_k: give top_k or target, not both")
    chosen = _integers("target", targets) if targets else None
    top = 1
    if top_k is not None:
        try:
            top = int(top_k)
        except ValueError:
            raise ClientError(422, f"top_k: expected a whole number, got {top_k!r}") from None
    count = len(chosen) if chosen is not None else top
    if count > MAX_TARGETS:
        raise ClientError(422, f"{'target' if chosen else 'top_k'}: at most {MAX_TARGETS} classes "
                               f"per request, got {count}")
    try:
        row = target_matrix(chosen, top, 1, explainer.num_classes)[0]
    except OnnxcamError as error:
        message = str(error).replace("targets:", "target:", 1)
        raise ClientError(422, message) from None
    fmt = (_single(params, "format") or "json").lower()
    if fmt not in FORMATS:
        raise ClientError(422, f"format: expected json or png, got {fmt!r}")
    alpha_text = _single(params, "alpha")
    try:
        alpha = 0.5 if alpha_text is None else float(alpha_text)
    except ValueError:
        alpha = -1.0
    if not 0.0 <= alpha <= 1.0:
        raise ClientError(422, f"alpha: expected a number between 0 and 1, got {alpha_text!r}")
    return ExplainOptions(tuple(dict.fromkeys(names)), row, fmt, _flag(params, "boxes"), _flag(params, "raw"),
                          alpha)
