"""Framing of a record's field envelopes into one column.

Each field of a record is its own AES-GCM envelope (bound to the field's
name); this only concatenates them as ``u16 name length | name | u32
envelope length | envelope`` so that a record is one row. Malformed framing
is reported as :class:`~vault.errors.DecryptionError`, the same as any other
tampering.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from vault.errors import DecryptionError

__all__ = ["decode_envelopes", "encode_envelopes"]

_NAME = struct.Struct(">H")
_ENV = struct.Struct(">I")


def encode_envelopes(envelopes: Mapping[str, bytes]) -> bytes:
    parts: list[bytes] = []
    for name, env in envelopes.items():
        raw = name.encode("utf-8")
        parts.append(_NAME.pack(len(raw)))
        parts.append(raw)
        parts.append(_ENV.pack(len(env)))
        parts.append(env)
    return b"".join(parts)


def decode_envelopes(blob: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    view = memoryview(blob)
    pos, end = 0, len(blob)
    try:
        while pos < end:
            (n,) = _NAME.unpack_from(view, pos)
            pos += 2
            name = bytes(view[pos : pos + n]).decode("utf-8")
            pos += n
            (m,) = _ENV.unpack_from(view, pos)
            pos += 4
            if pos + m > end or name in out:
                raise ValueError
            out[name] = bytes(view[pos : pos + m])
            pos += m
    except (struct.error, UnicodeDecodeError, ValueError):
        raise DecryptionError() from None
    return out
