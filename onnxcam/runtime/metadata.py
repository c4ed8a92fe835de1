"""Rewriting an explain-graph's ``onnxcam`` metadata in place, without the ``onnx`` package.

An ONNX file is a serialized ``ModelProto``; its metadata are the entries of field 14
(``metadata_props``, each a ``StringStringEntryProto`` of key 1 and value 2). The top-level
fields are walked by their wire format, the ``onnxcam`` entry dropped and a new one appended:
every other byte of the file is kept as it was.
"""
from __future__ import annotations

import os
from pathlib import Path

from onnxcam.errors import OnnxcamError
from onnxcam.runtime.artifact import METADATA_KEY, ArtifactInfo

METADATA_FIELD = 14  # ModelProto.metadata_props
LENGTH_DELIMITED = 2


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at ``at`` and the offset after it."""
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("truncated varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _encode_varint(number << 3 | LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload


def _fields(data: bytes):
    """(number, wire type, start, payload start, end) of each top-level field of a message."""
    at = 0
    while at < len(data):
        start = at
        tag, at = _varint(data, at)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, at = _varint(data, at)
            yield number, wire, start, at, at
            continue
        if wire == 1:
            size = 8
        elif wire == 5:
            size = 4
        elif wire == LENGTH_DELIMITED:
            size, at = _varint(data, at)
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if at + size > len(data):
            raise ValueError("truncated field")
        yield number, wire, start, at, at + size
        at += size


def _entry_key(payload: bytes) -> bytes:
    for number, wire, _, begin, end in _fields(payload):
        if number == 1 and wire == LENGTH_DELIMITED:
            return payload[begin:end]
    return b""


def with_metadata(model: bytes, key: str, value: str) -> bytes:
    """The serialized model with metadata entry ``key`` set to ``value`` (an earlier one dropped)."""
    kept = bytearray()
    for number, wire, start, begin, end in _fields(model):
        if number == METADATA_FIELD and wire == LENGTH_DELIMITED and _entry_key(model[begin:end]) == key.encode():
            continue
        kept += model[start:end]
    entry = _field(1, key.encode()) + _field(2, value.encode())
    return bytes(kept + _field(METADATA_FIELD, entry))


def write_info(path: str | os.PathLike, info: ArtifactInfo) -> None:
    """Store ``info`` as the ``onnxcam`` metadata of the explain-graph at ``path``: written to a
    hidden file beside it and renamed over it, so a failure leaves the old file whole."""
    path = Path(path)
    try:
        updated = with_metadata(path.read_bytes(), METADATA_KEY, info.to_json())
    except ValueError as error:
        raise OnnxcamError(f"{path}: cannot rewrite its metadata: not a readable ONNX file ({error})") from None
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(updated)
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OnnxcamError(f"{path}: cannot write ({error.strerror or type(error).__name__})") from None
