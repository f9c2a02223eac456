"""Masking: how a value is shown to an actor granted only ``read_masked``.

Masks keep just enough to recognise a value (the domain of an e-mail, the
last digits of a phone or id) and never more than a few characters of it.
Anything that is not text (a JSON object, a number) is masked in full.
"""

from __future__ import annotations

import enum
import re
from typing import Any

__all__ = ["FULL_MASK", "MaskStyle", "mask"]

FULL_MASK = "****"


class MaskStyle(enum.StrEnum):
    """Mask styles a collection field can declare."""

    NONE = "none"  # shown as stored (only for data the policy grants read_masked on anyway)
    FULL = "full"  # "****"
    EMAIL = "email"  # "l***@example.cn"
    PHONE = "phone"  # "+86 138****8000"
    LAST4 = "last4"  # "****1234"
    INITIALS = "initials"  # "A. M. S."
    YEAR = "year"  # "1990-**-**"
    PARTIAL = "partial"  # first and last character: "J****n"


_DATE = re.compile(r"^(\d{4})-\d{2}-\d{2}")


def _email(value: str) -> str:
    local, sep, domain = value.rpartition("@")
    if not sep or not local or not domain:
        return FULL_MASK
    return f"{local[0]}***@{domain}"


def _phone(value: str) -> str:
    import phonenumbers

    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        digits = re.sub(r"\D", "", value)
        return f"****{digits[-4:]}" if len(digits) >= 8 else FULL_MASK
    national = str(number.national_number)
    if len(national) < 8:
        return f"+{number.country_code} ****{national[-2:]}"
    return f"+{number.country_code} {national[:3]}{'*' * (len(national) - 7)}{national[-4:]}"


def _last4(value: str) -> str:
    chars = [c for c in value if c.isalnum()]
    if len(chars) < 8:
        return FULL_MASK
    return "****" + "".join(chars[-4:])


def _initials(value: str) -> str:
    parts = [p for p in re.split(r"[\s\-]+", value.strip()) if p]
    if not parts:
        return FULL_MASK
    if len(parts) == 1 and len(parts[0]) > 1 and not parts[0].isascii():
        # CJK and similar names are not split by spaces: keep the first character.
        return parts[0][0] + "*" * (len(parts[0]) - 1)
    return " ".join(f"{p[0].upper()}." for p in parts)


def _year(value: str) -> str:
    match = _DATE.match(value)
    return f"{match.group(1)}-**-**" if match else FULL_MASK


def _partial(value: str) -> str:
    if len(value) < 4:
        return FULL_MASK
    return f"{value[0]}{'*' * 4}{value[-1]}"


_MASKERS = {
    MaskStyle.EMAIL: _email,
    MaskStyle.PHONE: _phone,
    MaskStyle.LAST4: _last4,
    MaskStyle.INITIALS: _initials,
    MaskStyle.YEAR: _year,
    MaskStyle.PARTIAL: _partial,
}


def mask(style: MaskStyle | str, value: Any) -> Any:
    """Mask a decrypted value according to ``style``."""
    style = MaskStyle(style)
    if value is None:
        return None
    if style is MaskStyle.NONE:
        return value
    if style is MaskStyle.FULL or not isinstance(value, str):
        return FULL_MASK
    return _MASKERS[style](value)
