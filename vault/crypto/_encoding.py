"""Unambiguous byte encodings used inside MAC and AEAD inputs."""

from __future__ import annotations

import struct


def length_prefixed(*parts: str | bytes) -> bytes:
    """Concatenate parts, each preceded by its length as a 4-byte big-endian integer.

    Without the prefixes ("ab", "c") and ("a", "bc") would produce the same bytes.
    """
    out = bytearray()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        out += struct.pack(">I", len(data))
        out += data
    return bytes(out)
