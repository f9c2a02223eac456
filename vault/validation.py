"""Record validation against a collection schema, and blind-index normalisation.

:func:`validate_record` is the data-minimisation gate of every write: it
refuses undeclared fields and malformed values, and returns the values in
their normalised form (e-mail addresses as email-validator normalises them,
phone numbers in E.164, dates in ISO 8601, text NFC-normalised and stripped).

:func:`normalize_for_index` gives the canonical form that a blind index is
computed over, so that equality search does not depend on case, spacing or
formatting.

Every refusal is an :class:`~vault.errors.InvalidData` (or its subclass
:class:`~vault.errors.UnknownField`). Messages name fields, never values:
third-party messages (email-validator, phonenumbers) can echo the input, so
they are replaced, and their exceptions are not chained.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Final

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from vault.errors import InvalidData, UnknownField
from vault.schema import NAME_PATTERN, CollectionSchema, FieldSpec, FieldType, describe_name

__all__ = ["normalize_for_index", "validate_record"]

# Compiled once: validation runs on every write and in bulk imports.
_NAME_RE: Final = re.compile(NAME_PATTERN)
# C0 controls, DEL, C1 controls and lone surrogates (which cannot be encoded to
# UTF-8, so could not be encrypted). Multi-line types keep \t, \n and \r.
_BAD_SINGLE_LINE: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_MULTI_LINE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_ISO_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ID_SEPARATORS: Final = re.compile(r"[\s\-]+")
_NATIONAL_ID: Final = re.compile(r"[A-Za-z0-9]{4,32}")
_MAX_JSON_DEPTH: Final = 64
# Inputs longer than this many times max_length (plus a margin) are refused
# before any normalisation, so that a huge string costs nothing to refuse.
_RAW_LENGTH_FACTOR: Final = 4
_RAW_LENGTH_MARGIN: Final = 1024
_ENUM_MAX_RAW: Final = 1024

_E164: Final = phonenumbers.PhoneNumberFormat.E164

# The addresses :func:`_plain_address` lets skip email-validator: an ASCII
# dot-atom local part, and lowercase host-name labels (letters, digits, inner
# hyphens; at most 63 characters) with at least one dot, the last ending in a letter.
_ATEXT: Final = r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+"
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_ADDRESS: Final = re.compile(
    rf"({_ATEXT}(?:\.{_ATEXT})*)@((?:{_LABEL}\.)+(?:[a-z0-9][a-z0-9-]{{0,61}})?[a-z])")
_EMAIL_MAX: Final = 254
_LOCAL_MAX: Final = 64
_DOMAIN_MAX: Final = 253
_CASE_INSENSITIVE_MAILBOXES: Final = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


class _Empty:
    """Marker: the value was blank after normalisation."""

    __slots__ = ()


_EMPTY: Final = _Empty()

_Validator = Callable[[FieldSpec, Any, str | None], Any]


# --- shared checks ---------------------------------------------------------


def _refuse(spec: FieldSpec, problem: str) -> InvalidData:
    return InvalidData(f"field {spec.name} {problem}", field=spec.name)


def _require_str(spec: FieldSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise _refuse(spec, "must be a string")
    return value


def _check_raw(spec: FieldSpec, value: str, *, multiline: bool = False) -> None:
    """Refuse absurdly long input and control characters before normalising."""
    limit = spec.max_length
    if limit is not None and len(value) > limit * _RAW_LENGTH_FACTOR + _RAW_LENGTH_MARGIN:
        raise _refuse(spec, f"exceeds {limit} characters")
    if (_BAD_MULTI_LINE if multiline else _BAD_SINGLE_LINE).search(value):
        raise _refuse(spec, "contains control characters or invalid code points")


def _check_length(spec: FieldSpec, value: str) -> None:
    if spec.max_length is not None and len(value) > spec.max_length:
        raise _refuse(spec, f"exceeds {spec.max_length} characters")


# --- one validator per type ------------------------------------------------


def _text(spec: FieldSpec, value: Any, *, multiline: bool, check_length: bool) -> str | _Empty:
    text = _require_str(spec, value)
    _check_raw(spec, text, multiline=multiline)
    text = unicodedata.normalize("NFC", text).strip()
    if spec.transform == "upper":
        text = text.upper()
    elif spec.transform == "lower":
        text = text.lower()
    if not text:
        return _EMPTY
    if check_length:
        _check_length(spec, text)
    pattern = spec.compiled_pattern
    if pattern is not None and pattern.fullmatch(text) is None:
        raise _refuse(spec, "does not match the required format")
    return text


def _string(spec: FieldSpec, value: Any, region: str | None) -> str | _Empty:
    return _text(spec, value, multiline=False, check_length=True)


def _multiline(spec: FieldSpec, value: Any, region: str | None) -> str | _Empty:
    return _text(spec, value, multiline=True, check_length=True)


def _string_search(spec: FieldSpec, value: Any, region: str | None) -> str | _Empty:
    # A search term is not stored, and NFKC folding can lengthen a valid value:
    # only the raw-length guard applies, so folding stays idempotent.
    return _text(spec, value, multiline=False, check_length=False)


def _multiline_search(spec: FieldSpec, value: Any, region: str | None) -> str | _Empty:
    return _text(spec, value, multiline=True, check_length=False)


def _plain_address(text: str) -> bool:
    """Whether email-validator (2.x, with Vault's options) is certain to accept
    ``text`` and return it unchanged as its normalised form.

    True only for the plainest addresses: ASCII, a dot-atom local part of at
    most 64 characters (so ``STRICT`` cannot matter) that is not one of the
    RFC 2142 names the library lowercases, and a lowercase host name of
    letters, digits and inner hyphens (no ``--``, so no Punycode or reserved
    R-LDH label), with a dot, a top-level label ending in a letter, labels of
    at most 63 characters, at most 253 in all, no special-use domain (the
    library's own list, read on each call), and at most 254 characters in
    all. For such input the library's steps (splitting, dot-atom check, NFC,
    UTS-46 mapping, length checks) are all the identity. Everything else goes
    through the library; ``tests/unit/test_validation.py`` compares the two
    on generated addresses.
    """
    if len(text) > _EMAIL_MAX or not text.isascii():
        return False
    match = _PLAIN_ADDRESS.fullmatch(text)
    if match is None:
        return False
    local, domain = match.group(1), match.group(2)
    if len(local) > _LOCAL_MAX or len(domain) > _DOMAIN_MAX or "--" in domain:
        return False
    if local.lower() in _CASE_INSENSITIVE_MAILBOXES:
        return False
    if email_validator.TEST_ENVIRONMENT or email_validator.STRICT:
        return False
    for special in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if domain == special or domain.endswith("." + special):
            return False
    return True


def _stripped(spec: FieldSpec, value: Any) -> str | _Empty:
    """A single-line text value, stripped and within its length (or empty)."""
    text = _require_str(spec, value)
    _check_raw(spec, text)
    text = text.strip()
    if not text:
        return _EMPTY
    _check_length(spec, text)
    return text


def _single_line(check: Callable[[FieldSpec, str, str | None], str]) -> _Validator:
    """A validator that strips a single-line text value, lets empty through and
    hands the rest to ``check``."""

    def validate(spec: FieldSpec, value: Any, region: str | None) -> str | _Empty:
        text = _stripped(spec, value)
        return text if isinstance(text, _Empty) else check(spec, text, region)

    return validate


@_single_line
def _email(spec: FieldSpec, text: str, region: str | None) -> str:
    if _plain_address(text):
        return text
    try:
        normalized = validate_email(text, check_deliverability=False).normalized
    except (EmailNotValidError, ValueError):
        # email-validator's messages can quote the address: never pass them on.
        raise _refuse(spec, "is not a valid e-mail address") from None
    _check_length(spec, normalized)
    return normalized


@_single_line
def _phone(spec: FieldSpec, text: str, region: str | None) -> str:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise _refuse(spec, "is not a valid phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise _refuse(spec, "is not a valid phone number")
    formatted: str = phonenumbers.format_number(number, _E164)
    return formatted


def _date(spec: FieldSpec, value: Any, region: str | None) -> str | _Empty:
    if isinstance(value, dt.datetime):
        # A datetime is a date subclass; accepting it would drop the time silently.
        raise _refuse(spec, "must be a date (YYYY-MM-DD), not a date and time")
    if isinstance(value, dt.date):
        return value.isoformat()
    if not isinstance(value, str):
        raise _refuse(spec, "must be a date or an ISO date string (YYYY-MM-DD)")
    text = value.strip()
    if not text:
        return _EMPTY
    # date.fromisoformat accepts more forms (20240131, 2024-W05-3): pin the format.
    if _ISO_DATE.fullmatch(text) is None:
        raise _refuse(spec, "is not a valid date (YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise _refuse(spec, "is not a valid date (YYYY-MM-DD)") from None


def _national_id(spec: FieldSpec, value: Any, region: str | None) -> str | _Empty:
    text = _require_str(spec, value)
    _check_raw(spec, text)
    # NFKC turns full-width digits and letters (common in CJK input) into ASCII.
    text = _ID_SEPARATORS.sub("", unicodedata.normalize("NFKC", text))
    if not text:
        return _EMPTY
    _check_length(spec, text)
    if _NATIONAL_ID.fullmatch(text) is None:
        raise _refuse(spec, "is not a valid identifier (4 to 32 letters and digits)")
    return text.upper()


def _enum(spec: FieldSpec, value: Any, region: str | None) -> str | _Empty:
    text = _require_str(spec, value)
    if len(text) > _ENUM_MAX_RAW:
        raise _refuse(spec, f"must be one of: {', '.join(spec.values or ())}")
    text = text.strip()
    if not text:
        return _EMPTY
    if text not in spec.value_set:
        raise _refuse(spec, f"must be one of: {', '.join(spec.values or ())}")
    return text


def _json(spec: FieldSpec, value: Any, region: str | None) -> Any:
    try:
        clean = _json_copy(value, 0)
        encoded = json.dumps(
            clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        # ValueError covers NaN/infinity, integers too long to print and
        # lone surrogates (UnicodeEncodeError).
        raise _refuse(
            spec,
            "must be JSON data (objects with string keys, arrays, strings, "
            f"finite numbers, booleans, null; at most {_MAX_JSON_DEPTH} levels deep)",
        ) from None
    if spec.max_bytes is not None and len(encoded) > spec.max_bytes:
        raise _refuse(spec, f"exceeds {spec.max_bytes} bytes")
    return clean


def _json_copy(value: Any, depth: int) -> Any:
    """Return a plain-JSON copy of ``value`` (tuples become lists), or raise."""
    if depth > _MAX_JSON_DEPTH:
        raise ValueError("too deep")
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not finite")
        return float(value)
    if isinstance(value, Mapping):
        copy: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("keys must be strings")
            copy[str(key)] = _json_copy(item, depth + 1)
        return copy
    if isinstance(value, list | tuple):
        return [_json_copy(item, depth + 1) for item in value]
    raise TypeError("not a JSON type")


_VALIDATORS: Final[Mapping[FieldType, _Validator]] = {
    FieldType.STRING: _string,
    FieldType.EMAIL: _email,
    FieldType.PHONE: _phone,
    FieldType.DATE: _date,
    FieldType.NATIONAL_ID: _national_id,
    FieldType.POSTAL_ADDRESS: _multiline,
    FieldType.TEXT: _multiline,
    FieldType.ENUM: _enum,
    FieldType.JSON: _json,
}
_INDEX_VALIDATORS: Final[Mapping[FieldType, _Validator]] = {
    **_VALIDATORS,
    FieldType.STRING: _string_search,
    FieldType.POSTAL_ADDRESS: _multiline_search,
    FieldType.TEXT: _multiline_search,
}
_FOLDED_TYPES: Final = frozenset({FieldType.STRING, FieldType.POSTAL_ADDRESS, FieldType.TEXT})


# --- public API --------------------------------------------------------------


def validate_record(
    schema: CollectionSchema,
    data: Mapping[Any, Any],
    *,
    partial: bool = False,
    default_region: str | None = None,
) -> dict[str, Any]:
    """Validate a record against its collection schema and normalise its values.

    Args:
        schema: the collection's schema.
        data: field name -> value, as received from the caller.
        partial: an update of some fields: required fields may be absent (but
            still cannot be set to None or blank).
        default_region: ISO 3166-1 alpha-2 region used to read phone numbers
            written without a ``+`` country code (typically the record's country).

    Returns:
        A new dict of field name -> normalised, JSON-serialisable value. A
        ``None`` (or blank text) for a non-required field is kept as ``None``,
        meaning "no value" (an update clears the field).

    Raises:
        UnknownField: a field is not declared (data minimisation). The message
            names it only if it looks like a field name.
        InvalidData: ``data`` is not a mapping, a key is not a string, a
            required field is missing, None or blank, or a value is malformed.
            Messages name the field, never the value.
    """
    if not isinstance(data, Mapping):
        raise InvalidData(
            f"a record of collection {schema.name!r} must be a mapping of field names to values"
        )
    region = default_region.upper() if isinstance(default_region, str) else None
    fields = schema.fields
    result: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise InvalidData(f"field names must be strings, not {type(key).__name__}")
        spec = fields.get(key)
        if spec is None:
            raise UnknownField(
                f"collection {schema.name!r} has no field {describe_name(key)}",
                field=key if _NAME_RE.match(key) else None,
            )
        result[spec.name] = _validate_value(spec, value, region)
    if not partial:
        for name in schema.required_fields:
            if name not in result:
                raise InvalidData(f"field {name} is required", field=name)
    return result


def _validate_value(spec: FieldSpec, value: Any, region: str | None) -> Any:
    if value is None:
        if spec.required:
            raise _refuse(spec, "is required and cannot be null")
        return None
    normalized = _VALIDATORS[spec.type](spec, value, region)
    if normalized is _EMPTY:
        if spec.required:
            raise _refuse(spec, "must not be empty")
        return None
    return normalized


def normalize_for_index(spec: FieldSpec, value: Any, *, default_region: str | None = None) -> str:
    """Return the canonical form of a value for blind-index equality.

    Works on stored (already validated) values and on raw search terms alike,
    and is idempotent: e-mail addresses are validated, normalised and
    case-folded as a whole; phone numbers become E.164; national ids their
    normalised form; dates ISO 8601; other text is NFKC-normalised,
    case-folded, stripped and its inner whitespace collapsed to one space.

    Misuse: a blind index over a low-entropy field (an enum, a country) leaks
    the value distribution; mark only identifying fields searchable.

    Args:
        spec: the field the value belongs to.
        value: the stored value or the search term.
        default_region: as for :func:`validate_record`, for phone numbers.

    Raises:
        InvalidData: the value is malformed (same rules as validation), blank,
            or the field is a JSON field, which cannot be searched.
    """
    if spec.type is FieldType.JSON:
        raise _refuse(spec, "cannot be used for equality search")
    region = default_region.upper() if isinstance(default_region, str) else None
    normalized = _INDEX_VALIDATORS[spec.type](spec, value, region)
    if normalized is _EMPTY:
        raise _refuse(spec, "must not be empty")
    assert isinstance(normalized, str)
    return _fold_for_index(spec, normalized)


def index_form(spec: FieldSpec, value: Any) -> str:
    """The blind-index form of a value that :func:`validate_record` already produced.

    Equal to ``normalize_for_index(spec, value)`` for such values, without
    parsing e-mail addresses and phone numbers a second time: validation
    already left them in canonical form, so only case and Unicode folding remain.

    Raises:
        InvalidData: the field is a JSON field, or the value is not text.
    """
    if spec.type is FieldType.JSON or not isinstance(value, str):
        raise _refuse(spec, "cannot be used for equality search")
    return _fold_for_index(spec, value)


def _fold_for_index(spec: FieldSpec, value: str) -> str:
    """The case and Unicode folding shared by :func:`normalize_for_index` and
    :func:`index_form`, applied to a value already in canonical form."""
    if spec.type is FieldType.EMAIL:
        return unicodedata.normalize("NFC", value.casefold())
    if spec.type in _FOLDED_TYPES:
        # NFKC first: it can produce capitals, which the case fold then removes.
        folded = unicodedata.normalize("NFKC", value)
        folded = " ".join(unicodedata.normalize("NFKC", folded.casefold()).split())
        if not folded:
            raise _refuse(spec, "must not be empty")
        return folded
    return value
