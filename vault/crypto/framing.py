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

__all__ = ["FRAME_LENGTH", "FRAME_NAME", "decode_envelopes", "encode_envelopes", "iter_frames"]

_NAME = struct.Struct(">H")
_ENV = struct.Struct(">I")
#: The framing's field-name length and envelope length.
FRAME_NAME = _NAME
FRAME_LENGTH = _ENV


def encode_envelopes(envelopes: Mapping[str, bytes]) -> bytes:
    parts: list[bytes] = []
    heads = _HEADS
    pack = _ENV.pack
    for name, env in envelopes.items():
        head = heads.get(name)
        if head is None:
            raw = name.encode("utf-8")
            head = _NAME.pack(len(raw)) + raw
            if len(heads) < _NAMES_MAX:
                heads[name] = head
        parts.append(head)
        parts.append(pack(len(env)))
        parts.append(env)
    return b"".join(parts)


# The framed name of each field (u16 length | UTF-8), built once per name.
_HEADS: dict[str, bytes] = {}


def iter_frames(blob: bytes) -> list[tuple[bytes, int, int]]:
    """The framed envelopes of ``blob`` in stored order: each field's UTF-8 name and
    where its envelope starts and stops. The one reader of the framing
    (:func:`decode_envelopes`, and the fused decrypt of vault.crypto.envelope);
    a list made in one loop, not a generator: it runs for every record read.

    Raises:
        DecryptionError: truncated or overlong framing.
    """
    out: list[tuple[bytes, int, int]] = []
    add = out.append
    name_at, env_at = _NAME.unpack_from, _ENV.unpack_from
    pos, end = 0, len(blob)
    try:
        while pos < end:
            (n,) = name_at(blob, pos)
            first = pos + 2
            pos = first + n
            (m,) = env_at(blob, pos)
            pos += 4
            stop = pos + m
            if stop > end:
                raise DecryptionError()
            add((blob[first:pos - 4], pos, stop))
            pos = stop
    except struct.error:
        raise DecryptionError() from None
    return out


def decode_envelopes(blob: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if type(blob) is not bytes:
        blob = bytes(blob)
    names = _NAMES
    try:
        for raw, first, stop in iter_frames(blob):
            name = names.get(raw)
            if name is None:
                name = raw.decode("utf-8")
                if len(names) < _NAMES_MAX:
                    names[raw] = name
            if name in out:
                raise DecryptionError()
            out[name] = blob[first:stop]
    except UnicodeDecodeError:
        raise DecryptionError() from None
    return out


# Field names are few: decoding each once is enough.
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 4096
