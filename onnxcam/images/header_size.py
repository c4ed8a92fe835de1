"""An image's width and height read from its file header, without decoding the pixels.

Formats: PNG, JPEG, GIF, BMP, WebP, TIFF (and BigTIFF) and the Netpbm family (PBM, PGM, PPM,
PFM). ``image_size`` returns None for anything else, or for a header too short or malformed
to name a size.
"""
from __future__ import annotations

import re
import struct
from typing import Callable, Iterator, Optional

Size = tuple[int, int]  # (width, height)

# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they hold the size
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_NETPBM = re.compile(rb"\A(P[1-6]|P[Ff])(?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)\s")


def _png(data: bytes) -> Optional[Size]:
    if len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


def jpeg_markers(data: bytes) -> Iterator[tuple[Optional[int], int]]:
    """(marker, offset) of each marker of a JPEG file after its start-of-image, walked by the
    segments' length fields; (None, offset) where a segment does not start with FF (a malformed
    structure), then nothing more. Stops where fewer than four bytes are left."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            yield None, pos
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        yield marker, pos
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length field
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")


def _jpeg(data: bytes) -> Optional[Size]:
    """The size in the first start-of-frame segment."""
    for marker, pos in jpeg_markers(data):
        if marker is None or marker == 0xDA:  # malformed, or the scan began without a frame
            return None
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return (width, height) if height else None  # height 0: set later by a DNL marker
    return None


def _gif(data: bytes) -> Optional[Size]:
    return struct.unpack("<HH", data[6:10]) if len(data) >= 10 else None


def _bmp(data: bytes) -> Optional[Size]:
    if len(data) < 26:
        return None
    if int.from_bytes(data[14:18], "little") == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height means top-down rows


def _webp(data: bytes) -> Optional[Size]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # lossy
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # lossless: 14-bit sizes - 1
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:  # extended: 24-bit canvas sizes - 1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff(data: bytes) -> Optional[Size]:
    """ImageWidth (256) and ImageLength (257) of the first image file directory."""
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(order + "H", data[2:4])[0] == 43  # BigTIFF: 8-byte offsets and counts
    try:
        if big:
            offset = struct.unpack(order + "Q", data[8:16])[0]
            count = struct.unpack(order + "Q", data[offset:offset + 8])[0]
            entry, start, value_at = 20, offset + 8, 12
        else:
            offset = struct.unpack(order + "I", data[4:8])[0]
            count = struct.unpack(order + "H", data[offset:offset + 2])[0]
            entry, start, value_at = 12, offset + 2, 8
        found = {}
        for i in range(min(count, 4096)):
            at = start + i * entry
            tag, kind = struct.unpack(order + "HH", data[at:at + 4])
            if tag in (256, 257) and kind in (3, 4, 16):  # SHORT, LONG, LONG8
                code = {3: "H", 4: "I", 16: "Q"}[kind]
                size = struct.calcsize(code)
                found[tag] = struct.unpack(order + code, data[at + value_at:at + value_at + size])[0]
    except struct.error:  # the directory runs past the end of the data
        return None
    return (found[256], found[257]) if len(found) == 2 else None


def _netpbm(data: bytes) -> Optional[Size]:
    match = _NETPBM.match(data[:1024])
    return (int(match.group(2)), int(match.group(3))) if match else None


_READERS: list[tuple[tuple[bytes, ...], Callable[[bytes], Optional[Size]]]] = [
    ((b"\x89PNG\r\n\x1a\n",), _png),
    ((b"\xff\xd8\xff",), _jpeg),
    ((b"GIF87a", b"GIF89a"), _gif),
    ((b"BM",), _bmp),
    ((b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), _tiff),
    ((b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"PF", b"Pf"), _netpbm),
]


def image_size(data: bytes) -> Optional[Size]:
    """(width, height) from the header of a supported image file, else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    for signatures, reader in _READERS:
        if data.startswith(signatures):
            return reader(data)
    return None
