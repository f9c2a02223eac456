"""Record validation and blind-index normalisation against the customers schema."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import email_validator
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vault.errors import InvalidData, UnknownField
from vault.schema import load_schemas
from vault.validation import _plain_address, normalize_for_index, validate_record

POLICIES = Path(__file__).resolve().parents[2] / "policies"
CUSTOMERS = load_schemas(POLICIES).get("customers")


def _deep(levels: int) -> Any:
    value: Any = "zzcanary"
    for _ in range(levels):
        value = [value]
    return value


GOOD = [
    pytest.param("full_name", "  Li Wei ", None, "Li Wei", id="string-stripped"),
    pytest.param("full_name", "Jose\u0301 Zhang", None, "Jos\u00e9 Zhang", id="string-nfc"),
    pytest.param("email", "Li.Wei@Example.CN", None, "Li.Wei@example.cn", id="email-domain-lower"),
    pytest.param("email", " user@EXAMPLE.com ", None, "user@example.com", id="email-stripped"),
    pytest.param("phone", "+86 138 1234 8000", None, "+8613812348000", id="phone-cn-e164"),
    pytest.param("phone", "(415) 555-0132", "US", "+14155550132", id="phone-us-region"),
    pytest.param("phone", "(415) 555-0132", "us", "+14155550132", id="phone-region-lower"),
    pytest.param("phone", "+44 20 7946 0018", "US", "+442079460018", id="phone-plus-wins"),
    pytest.param(
        "postal_address",
        "1 Main St\r\n\tSpringfield ",
        None,
        "1 Main St\r\n\tSpringfield",
        id="address-multiline",
    ),
    pytest.param("birth_date", "1990-02-28", None, "1990-02-28", id="date-iso"),
    pytest.param("birth_date", " 2000-02-29 ", None, "2000-02-29", id="date-leap"),
    pytest.param("birth_date", dt.date(1990, 2, 28), None, "1990-02-28", id="date-object"),
    pytest.param(
        "national_id", "110105 1949-1231 002x", None, "11010519491231002X", id="id-separators"
    ),
    pytest.param("national_id", "\uff21\uff22\uff11\uff12\uff13", None, "AB123", id="id-fullwidth"),
    pytest.param("country", " fr ", None, "FR", id="country-upper"),
    pytest.param("preferred_language", "zh-CN", None, "zh-CN", id="language-tag"),
    pytest.param("preferred_language", "pt", None, "pt", id="language-short"),
    pytest.param("marketing_segment", " vip ", None, "vip", id="enum"),
    pytest.param(
        "device_info",
        {"os": "ios", "versions": (17, 2), "beta": False, "ratio": 1.5},
        None,
        {"os": "ios", "versions": [17, 2], "beta": False, "ratio": 1.5},
        id="json-object",
    ),
    pytest.param("device_info", "plain", None, "plain", id="json-string"),
    pytest.param("device_info", [], None, [], id="json-empty-list"),
    pytest.param("device_info", 0, None, 0, id="json-number"),
    pytest.param(
        "support_notes",
        "Called back.\nAll fine.",
        None,
        "Called back.\nAll fine.",
        id="text-multiline",
    ),
]


@pytest.mark.parametrize(("field", "value", "region", "expected"), GOOD)
def test_good_values_are_normalised(
    field: str, value: Any, region: str | None, expected: Any
) -> None:
    """Valid values come back normalised and JSON-serialisable."""
    result = validate_record(CUSTOMERS, {field: value}, partial=True, default_region=region)
    assert result == {field: expected}
    json.dumps(result)


BAD = [
    pytest.param("full_name", 987654321, "must be a string", id="string-int"),
    pytest.param("full_name", True, "must be a string", id="string-bool"),
    pytest.param("full_name", b"zzcanary", "must be a string", id="string-bytes"),
    pytest.param("full_name", "Zed\x00zzcanary", "control characters", id="string-nul"),
    pytest.param("full_name", "Zed\nzzcanary", "control characters", id="string-newline"),
    pytest.param("full_name", "Zed\tzzcanary", "control characters", id="string-tab"),
    pytest.param("full_name", "Zed\x1bzzcanary", "control characters", id="string-escape"),
    pytest.param("full_name", "Zed\ud800zzcanary", "invalid code points", id="string-surrogate"),
    pytest.param("full_name", "zzcanary" * 26, "exceeds 200 characters", id="string-too-long"),
    pytest.param("full_name", "zzcanary" * 100_000, "exceeds 200 characters", id="string-huge"),
    pytest.param("email", "zzcanary-not-an-address", "not a valid e-mail", id="email-no-at"),
    pytest.param("email", "zzcanary@@example.com", "not a valid e-mail", id="email-double-at"),
    pytest.param("email", "Zed <zzcanary@example.com>", "not a valid e-mail", id="email-display"),
    pytest.param("email", "zzcanary@localhost", "not a valid e-mail", id="email-no-dot"),
    pytest.param("email", "zzcanary@example.com\n", "control characters", id="email-newline"),
    pytest.param("email", "z" * 250 + "@example.com", "exceeds 254", id="email-too-long"),
    pytest.param("email", 4242424242, "must be a string", id="email-int"),
    pytest.param("phone", "+1 555 zzcanary", "not a valid phone", id="phone-letters"),
    pytest.param("phone", "4155550132", "not a valid phone", id="phone-no-region"),
    pytest.param("phone", "+1 000 000 0000", "not a valid phone", id="phone-invalid"),
    pytest.param("phone", "+86 1381234800099999999999999999999", "exceeds 32", id="phone-too-long"),
    pytest.param("postal_address", "Main St\x00zzcanary", "control characters", id="address-nul"),
    pytest.param("postal_address", "zzcanary\n" * 60, "exceeds 500", id="address-too-long"),
    pytest.param("birth_date", "1990-02-30", "not a valid date", id="date-impossible"),
    pytest.param("birth_date", "19900228", "not a valid date", id="date-basic-format"),
    pytest.param("birth_date", "1990-W05-3", "not a valid date", id="date-week-format"),
    pytest.param("birth_date", "28/02/1990", "not a valid date", id="date-slashes"),
    pytest.param(
        "birth_date",
        dt.datetime(1990, 2, 28, 12, 30, tzinfo=dt.UTC),
        "not a date and time",
        id="date-datetime",
    ),
    pytest.param("birth_date", 19900228, "must be a date", id="date-int"),
    pytest.param("national_id", "ZZ1", "not a valid identifier", id="id-too-short"),
    pytest.param("national_id", "ID#zzcanary", "not a valid identifier", id="id-symbol"),
    pytest.param("national_id", "\u00e9zzcanary", "not a valid identifier", id="id-accent"),
    pytest.param("national_id", "ZZCANARY" * 5, "exceeds 32", id="id-too-long"),
    pytest.param("country", "FRANCE", "exceeds 2", id="country-too-long"),
    pytest.param("country", "f1", "does not match the required format", id="country-digit"),
    pytest.param("preferred_language", "english_UK", "does not match", id="language-format"),
    pytest.param(
        "marketing_segment", "platinum_zzcanary", "must be one of: prospect, new", id="enum-unknown"
    ),
    pytest.param("marketing_segment", "VIP", "must be one of", id="enum-case"),
    pytest.param("marketing_segment", 7, "must be a string", id="enum-int"),
    pytest.param("device_info", {"zzcanary": float("nan")}, "must be JSON data", id="json-nan"),
    pytest.param("device_info", [float("-inf")], "must be JSON data", id="json-inf"),
    pytest.param("device_info", {123456789: "zzcanary"}, "must be JSON data", id="json-int-key"),
    pytest.param("device_info", {"zzcanary": {1, 2}}, "must be JSON data", id="json-set"),
    pytest.param("device_info", {"zzcanary": b"x"}, "must be JSON data", id="json-bytes"),
    pytest.param("device_info", _deep(100), "must be JSON data", id="json-too-deep"),
    pytest.param(
        "device_info", {"zzcanary": "x" * 20_000}, "exceeds 16384 bytes", id="json-too-big"
    ),
    pytest.param("device_info", ["zzcanary\ud800"], "must be JSON data", id="json-surrogate"),
    pytest.param("support_notes", "zzcanary" * 1251, "exceeds 10000", id="text-too-long"),
    pytest.param("support_notes", "ring\x07zzcanary", "control characters", id="text-bell"),
]


@pytest.mark.parametrize(("field", "value", "fragment"), BAD)
def test_bad_values_are_refused_without_echo(field: str, value: Any, fragment: str) -> None:
    """Malformed values raise InvalidData naming the field and never the value."""
    with pytest.raises(InvalidData) as info:
        validate_record(CUSTOMERS, {field: value}, partial=True)
    message = str(info.value)
    assert fragment in message
    assert field in message
    assert info.value.field == field
    assert str(value) not in message
    assert "zzcanary" not in message
    # Third-party messages (which can quote the input) are not chained.
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None


def test_valid_full_record() -> None:
    """A complete record validates to a JSON-serialisable dict of normalised values."""
    record = {
        "full_name": "Li Wei",
        "email": "Li.Wei@Example.CN",
        "phone": "138 1234 8000",
        "postal_address": "1 Chang'an Ave\nBeijing",
        "birth_date": "1988-08-08",
        "national_id": "11010519491231002X",
        "country": "cn",
        "preferred_language": "zh-CN",
        "marketing_segment": "vip",
        "device_info": {"os": "android"},
        "support_notes": "Prefers e-mail.",
    }
    result = validate_record(CUSTOMERS, record, default_region="CN")
    assert result["phone"] == "+8613812348000"
    assert result["country"] == "CN"
    assert set(result) == set(record)
    json.dumps(result)


def test_missing_required_field_is_refused() -> None:
    """A new record without its required field raises InvalidData naming the field."""
    with pytest.raises(InvalidData, match="field full_name is required") as info:
        validate_record(CUSTOMERS, {"email": "li.wei@example.cn"})
    assert info.value.field == "full_name"


def test_partial_update_may_omit_required_fields() -> None:
    """A partial update needs only the fields it changes."""
    assert validate_record(CUSTOMERS, {"country": "de"}, partial=True) == {"country": "DE"}


@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("value", [None, "", "   \t "])
def test_required_field_cannot_be_null_or_blank(value: str | None, partial: bool) -> None:
    """None or a blank string for a required field is refused, even in a partial update."""
    with pytest.raises(InvalidData, match="full_name") as info:
        validate_record(CUSTOMERS, {"full_name": value}, partial=partial)
    assert info.value.field == "full_name"


@pytest.mark.parametrize("value", [None, "", "  "])
@pytest.mark.parametrize(
    "field", ["email", "phone", "birth_date", "marketing_segment", "national_id", "support_notes"]
)
def test_optional_field_null_or_blank_means_no_value(field: str, value: str | None) -> None:
    """None or a blank value for an optional field is kept as None (clears it)."""
    result = validate_record(CUSTOMERS, {"full_name": "Li Wei", field: value})
    assert result[field] is None


def test_json_null_is_no_value() -> None:
    """A None JSON value means "no value", like other optional fields."""
    assert validate_record(CUSTOMERS, {"device_info": None}, partial=True) == {"device_info": None}


def test_unknown_field_is_refused_by_name() -> None:
    """An undeclared, well-formed field name raises UnknownField naming it and the collection."""
    with pytest.raises(UnknownField) as info:
        validate_record(CUSTOMERS, {"full_name": "Li Wei", "favourite_colour": "zzcanary"})
    assert "favourite_colour" in str(info.value)
    assert "customers" in str(info.value)
    assert "zzcanary" not in str(info.value)
    assert info.value.field == "favourite_colour"


@pytest.mark.parametrize(
    "key", ["li.wei@example.cn", "Full_Name", "x" * 100, "robert'); DROP TABLE zzcanary;--", ""]
)
def test_malformed_unknown_field_name_is_not_echoed(key: str) -> None:
    """An undeclared key that is not a valid name is described, never echoed."""
    with pytest.raises(UnknownField, match="an invalid field name") as info:
        validate_record(CUSTOMERS, {key: "value"}, partial=True)
    if key:
        assert key not in str(info.value)
    assert info.value.field is None


@pytest.mark.parametrize("key", [4242424242, ("zzcanary",), 3.14159, b"zzcanary"])
def test_non_string_key_is_refused_without_echo(key: object) -> None:
    """A non-string key raises InvalidData naming only its type."""
    with pytest.raises(InvalidData, match="field names must be strings") as info:
        validate_record(CUSTOMERS, {key: "value"}, partial=True)
    assert str(key) not in str(info.value)
    assert "zzcanary" not in str(info.value)
    assert type(info.value) is InvalidData


@pytest.mark.parametrize("data", [["full_name", "Li Wei"], "zzcanary", None, 42])
def test_record_must_be_a_mapping(data: Any) -> None:
    """A record that is not a mapping raises InvalidData."""
    with pytest.raises(InvalidData, match="must be a mapping") as info:
        validate_record(CUSTOMERS, data)
    assert "zzcanary" not in str(info.value)


def test_input_is_not_modified() -> None:
    """Validation returns a new dict and leaves the caller's data alone."""
    data = {"full_name": " Li Wei ", "device_info": {"v": (1,)}}
    validate_record(CUSTOMERS, data)
    assert data == {"full_name": " Li Wei ", "device_info": {"v": (1,)}}


# --- blind-index normalisation --------------------------------------------------


def _index(field: str, value: Any, region: str | None = None) -> str:
    return normalize_for_index(CUSTOMERS.field(field), value, default_region=region)


def test_index_email_case_folded_as_a_whole() -> None:
    """E-mail index forms ignore case in both the local part and the domain."""
    assert _index("email", "Li.Wei@Example.CN") == _index("email", "li.wei@example.cn")
    assert _index("email", "  LI.WEI@EXAMPLE.CN ") == "li.wei@example.cn"


def test_index_phone_is_e164() -> None:
    """Phone index forms are E.164, reading national numbers in the default region."""
    assert _index("phone", "+86 138 1234 8000") == "+8613812348000"
    assert _index("phone", "(415) 555-0132", "US") == "+14155550132"
    assert _index("phone", "+1 415-555-0132") == _index("phone", "4155550132", "US")


def test_index_text_folded() -> None:
    """Text index forms are NFKC case-folded with whitespace collapsed."""
    assert _index("full_name", "  Li   WEI ") == "li wei"
    assert _index("full_name", "Stra\u00dfe") == _index("full_name", "STRASSE")
    assert _index("full_name", "\uff2c\uff49 Wei") == "li wei"
    assert _index("postal_address", "1 Main St\n  Springfield") == "1 main st springfield"


def test_index_other_types() -> None:
    """National ids, dates, enums and patterned strings index as their validated forms."""
    assert _index("national_id", "110105-19491231-002x") == "11010519491231002X"
    assert _index("birth_date", dt.date(1990, 2, 28)) == "1990-02-28"
    assert _index("marketing_segment", "vip") == "vip"
    assert _index("country", "fr") == _index("country", "FR") == "fr"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "zzcanary-not-an-address"),
        ("phone", "zzcanary"),
        ("national_id", "zz#canary"),
        ("birth_date", "zzcanary"),
        ("email", ""),
        ("full_name", "   "),
        ("full_name", None),
        ("full_name", 4242),
        ("device_info", {"zzcanary": 1}),
    ],
)
def test_index_refuses_malformed_terms_without_echo(field: str, value: Any) -> None:
    """Malformed or blank search terms raise InvalidData without echoing them."""
    with pytest.raises(InvalidData) as info:
        _index(field, value)
    assert "zzcanary" not in str(info.value)
    assert info.value.field == field


# --- properties ------------------------------------------------------------------


@settings(deadline=None, max_examples=200)
@given(st.emails())
def test_index_is_idempotent_on_emails(address: str) -> None:
    """normalize_for_index is idempotent on valid e-mail addresses."""
    spec = CUSTOMERS.field("email")
    try:
        once = normalize_for_index(spec, address)
    except InvalidData:
        assume(False)
        raise
    assert normalize_for_index(spec, once) == once


@settings(deadline=None, max_examples=300)
@given(st.text(), st.sampled_from(["full_name", "postal_address", "support_notes"]))
def test_index_is_idempotent_on_strings(text: str, field: str) -> None:
    """normalize_for_index is idempotent on valid strings."""
    spec = CUSTOMERS.field(field)
    try:
        once = normalize_for_index(spec, text)
    except InvalidData:
        assume(False)
        raise
    assert normalize_for_index(spec, once) == once


_VALUES = st.one_of(st.text(), st.integers(), st.none(), st.booleans())


@settings(deadline=None, max_examples=300)
@given(
    st.dictionaries(st.one_of(st.text(), st.integers()), _VALUES),
    st.dictionaries(st.sampled_from(CUSTOMERS.field_names), _VALUES),
    st.booleans(),
)
def test_validate_record_raises_only_invalid_data(
    junk: dict[Any, Any], declared: dict[str, Any], partial: bool
) -> None:
    """validate_record raises nothing but InvalidData for arbitrary dict input."""
    for data in (junk, declared, {**declared, **junk}):
        try:
            result = validate_record(CUSTOMERS, data, partial=partial, default_region="US")
        except InvalidData:
            continue
        json.dumps(result)


# --- the e-mail fast path is exact ---------------------------------------------------------

_LOCAL_CHARS = "abcXYZ019._!#$%&'*+-/=?^`{|}~\"@ (),:;<>[\\]é\u0301"
_DOMAIN_CHARS = "abcxyz019-.ABZé_"
_DOMAIN_WORDS = ["", "example", "test", "local", "localhost", "invalid", "onion", "arpa",
                 "xn--bcher-kva", "ab--cd", "a-b", "com", "c0m", "1", "x" * 63, "x" * 64]


def _library_email(text: str) -> str | None:
    """email-validator's own verdict with Vault's options (None: refused)."""
    try:
        return validate_email(text, check_deliverability=False).normalized
    except (EmailNotValidError, ValueError):
        return None


def _vault_email(text: str) -> str | None:
    try:
        value = validate_record(CUSTOMERS, {"email": text}, partial=True)["email"]
    except InvalidData:
        return None
    assert isinstance(value, str)
    return value


_ATEXT_CHARS = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789_!#$%&'*+-/=?^`{|}~"
# Mostly plain addresses, with the characters and words the fast path must refuse mixed in.
_near_plain = st.builds(
    lambda local, labels, tld: local + "@" + ".".join([*labels, tld]),
    st.lists(st.text(_ATEXT_CHARS + "é", min_size=1, max_size=24) | st.just(""),
             min_size=1, max_size=4).map(".".join),
    st.lists(st.one_of(st.text("abcxyz0189-", min_size=1, max_size=66),
                       st.sampled_from(_DOMAIN_WORDS)), min_size=1, max_size=4),
    st.one_of(st.sampled_from(["com", "org", "de", "cn", "co", "test", "local", "arpa",
                               "example", "c0", "x1y", "Com", "xn--p1ai"]),
              st.text("abz09-", min_size=1, max_size=6)),
)
_plain = st.builds(
    lambda local, labels, tld: local + "@" + ".".join([*labels, tld]),
    st.lists(st.text(_ATEXT_CHARS, min_size=1, max_size=30), min_size=1, max_size=3)
    .map(".".join),
    st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,64}[a-z0-9])?", fullmatch=True),
             min_size=1, max_size=4),
    st.from_regex(r"([a-z0-9][a-z0-9-]{0,63})?[a-z]", fullmatch=True),
)


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    """A plain address, with one character inserted or replaced somewhere (or not)."""
    text = draw(_plain)
    kind = draw(st.sampled_from(["none", "insert", "replace", "upper"]))
    if kind == "none" or not text:
        return text
    at = draw(st.integers(0, len(text) - 1))
    if kind == "upper":
        return text[:at] + text[at:].upper()
    char = draw(st.sampled_from([*"-.@_\"\\ A0é\u0301\uff20\u3002", "--", "xn--"]))
    return text[:at] + char + text[at + (kind == "replace"):]


_addresses = st.one_of(
    _plain, _mutated(), _mutated(), _near_plain,
    st.emails(),
    st.builds(
        lambda local, labels, sep: local + sep + ".".join(labels),
        st.text(_LOCAL_CHARS, min_size=0, max_size=70),
        st.lists(st.one_of(st.sampled_from(_DOMAIN_WORDS), st.text(_DOMAIN_CHARS, max_size=12)),
                 min_size=1, max_size=5),
        st.sampled_from(["@", "@", "@", "@@", "", "\uff20"]),
    ),
)


@settings(deadline=None, max_examples=3000)
@given(_addresses)
def test_plain_address_fast_path_equals_the_library(text: str) -> None:
    """Whenever the fast path answers, email-validator gives the same answer: it
    accepts the address and its normalised form is the input itself. And Vault's
    validation always equals the library's verdict (after Vault's own checks)."""
    if _plain_address(text):
        assert _library_email(text) == text
    stripped = text.strip()
    if not stripped or len(stripped) > 254 or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F
                                                  for c in text):
        return  # refused (or blank) by Vault's own checks before the library is asked
    assert _vault_email(text) == _library_email(stripped)


@pytest.mark.parametrize("text", [
    "postmaster@example.com", "Info@example.com", "a@b.test", "a@x.local", "a@x.arpa",
    "a@xn--bcher-kva.example", "a@ab--cd.example", "a@example.c0", "a@example",
    "a@Example.com", "a@" + "x" * 64 + ".com", "x" * 65 + "@example.com",
    "a.@example.com", ".a@example.com", "a..b@example.com", "\"a\"@example.com",
])
def test_plain_address_fast_path_leaves_the_rest_to_the_library(text: str) -> None:
    """Addresses the library changes or refuses, and the ones it treats specially,
    are not taken by the fast path."""
    assert not _plain_address(text)
    assert _vault_email(text) == _library_email(text)


def test_plain_address_fast_path_reads_the_library_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A special-use domain added to the library's list at run time is refused."""
    assert _plain_address("someone@example.org")
    monkeypatch.setattr(email_validator, "SPECIAL_USE_DOMAIN_NAMES",
                        [*email_validator.SPECIAL_USE_DOMAIN_NAMES, "example.org"])
    assert not _plain_address("someone@example.org")
    assert _vault_email("someone@example.org") is None
