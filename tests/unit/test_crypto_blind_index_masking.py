"""Blind indexes, keyed pseudonyms and masks."""

from __future__ import annotations

import string
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.crypto.blind_index import BlindIndexer
from vault.crypto.masking import FULL_MASK, MaskStyle, mask
from vault.crypto.pseudonym import Pseudonymizer
from vault.errors import ConfigError

ROOT = bytes(range(32))
OTHER_ROOT = bytes(range(1, 33))


def _lp(part: str | bytes) -> bytes:
    data = part.encode("utf-8") if isinstance(part, str) else part
    return len(data).to_bytes(4, "big") + data


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(message)
    return mac.finalize()


# ---------------------------------------------------------------- blind index


def test_digest_is_deterministic_across_instances() -> None:
    a = BlindIndexer(ROOT).digest("acme", "customers", "email", "li.wei@example.cn")
    b = BlindIndexer(ROOT).digest("acme", "customers", "email", "li.wei@example.cn")
    assert a == b
    assert len(a) == 32
    assert BlindIndexer(ROOT).size == 32


def test_digest_depends_on_value_and_root_key() -> None:
    indexer = BlindIndexer(ROOT)
    base = indexer.digest("acme", "customers", "email", "li.wei@example.cn")
    assert indexer.digest("acme", "customers", "email", "li.wei@example.com") != base
    assert indexer.digest("acme", "customers", "email", "") != base
    assert BlindIndexer(OTHER_ROOT).digest("acme", "customers", "email",
                                           "li.wei@example.cn") != base


@pytest.mark.parametrize(("tenant", "collection", "field"), [
    ("beta", "customers", "email"),
    ("acme", "leads", "email"),
    ("acme", "customers", "phone"),
    ("acmecustomers", "", "email"),  # length prefixes: no ambiguity when joining
    ("acme", "customersemail", ""),
    ("acm", "ecustomers", "email"),
])
def test_different_tenant_collection_or_field_give_different_digests(
        tenant: str, collection: str, field: str) -> None:
    indexer = BlindIndexer(ROOT)
    base = indexer.digest("acme", "customers", "email", "same")
    assert indexer.digest(tenant, collection, field, "same") != base
    assert indexer.field_key(tenant, collection, field) != indexer.field_key(
        "acme", "customers", "email")


@pytest.mark.parametrize(("tenant", "collection", "field"), [
    ("acme", "customers", "email"),
    ("テナント", "kunden", "e-mail-ü"),  # UTF-8 byte lengths, not character counts
    ("", "", ""),
])
def test_field_key_is_hkdf_with_the_documented_info(tenant: str, collection: str,
                                                    field: str) -> None:
    info = b"vault/blind-index/v1" + _lp(tenant) + _lp(collection) + _lp(field)
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ROOT)
    indexer = BlindIndexer(ROOT)
    assert indexer.field_key(tenant, collection, field) == expected
    assert indexer.digest(tenant, collection, field, "Wert ü") == _hmac_sha256(
        expected, "Wert ü".encode())


@pytest.mark.parametrize("size", range(8, 33))
def test_truncate_to_is_honoured(size: int) -> None:
    full = BlindIndexer(ROOT).digest("acme", "customers", "email", "x@y.z")
    indexer = BlindIndexer(ROOT, truncate_to=size)
    token = indexer.digest("acme", "customers", "email", "x@y.z")
    assert len(token) == size
    assert indexer.size == size
    assert token == full[:size]


@pytest.mark.parametrize("size", [7, 33, 0, -1, 64])
def test_truncate_out_of_range_is_a_config_error(size: int) -> None:
    with pytest.raises(ConfigError):
        BlindIndexer(ROOT, truncate_to=size)


@pytest.mark.parametrize("size", [0, 16, 31])
def test_short_root_key_is_a_config_error(size: int) -> None:
    with pytest.raises(ConfigError):
        BlindIndexer(bytes(size))


# ---------------------------------------------------------------- pseudonyms


def test_pseudonym_is_32_hex_chars_stable_and_keyed() -> None:
    p = Pseudonymizer(ROOT)
    first = p.pseudonym("acme", "subject-1")
    assert len(first) == 32
    assert set(first) <= set(string.hexdigits.lower())
    assert first == p.pseudonym("acme", "subject-1")
    assert first == Pseudonymizer(ROOT).pseudonym("acme", "subject-1")
    assert first != p.pseudonym("beta", "subject-1")
    assert first != p.pseudonym("acme", "subject-2")
    assert first != Pseudonymizer(OTHER_ROOT).pseudonym("acme", "subject-1")
    # Length-prefixed: moving characters between tenant and subject changes it.
    assert p.pseudonym("acme", "x-1") != p.pseudonym("acmex", "-1")


def test_pseudonym_is_truncated_hmac_sha256_over_the_labelled_pair() -> None:
    """Pins the construction: changing it would orphan every pseudonym in old audit logs."""
    message = _lp(b"vault/pseudonym/v1") + _lp("acme") + _lp("subject-1")
    assert Pseudonymizer(ROOT).pseudonym("acme", "subject-1") == \
        _hmac_sha256(ROOT, message)[:16].hex()


def test_pseudonym_key_must_be_32_bytes() -> None:
    with pytest.raises(ConfigError):
        Pseudonymizer(bytes(31))


def test_pseudonymizer_and_indexer_reprs_hide_keys() -> None:
    for shown in (repr(Pseudonymizer(ROOT)), repr(BlindIndexer(ROOT))):
        assert ROOT.hex() not in shown
        assert repr(ROOT) not in shown
        assert "secret" in shown


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize(("style", "value", "shown"), [
    (MaskStyle.PHONE, "+8613812348000", "+86 138****8000"),
    (MaskStyle.PHONE, "+86 138 1234 8000", "+86 138****8000"),
    (MaskStyle.EMAIL, "li.wei@example.cn", "l***@example.cn"),
    (MaskStyle.EMAIL, "not-an-email", FULL_MASK),
    (MaskStyle.LAST4, "110101199003077777", "****7777"),
    (MaskStyle.LAST4, "1234567", FULL_MASK),  # too short to show four of it
    (MaskStyle.FULL, "110101199003077777", "****"),
    (MaskStyle.INITIALS, "Anna Maria Schmidt", "A. M. S."),
    (MaskStyle.INITIALS, "jean-luc picard", "J. L. P."),
    (MaskStyle.INITIALS, "李秀英", "李**"),
    (MaskStyle.YEAR, "1990-03-07", "1990-**-**"),
    (MaskStyle.YEAR, "07.03.1990", FULL_MASK),
    (MaskStyle.PARTIAL, "Jonathan", "J****n"),
    (MaskStyle.PARTIAL, "Jon", FULL_MASK),
])
def test_mask_examples(style: MaskStyle, value: str, shown: str) -> None:
    assert mask(style, value) == shown
    assert mask(style.value, value) == shown  # the style may be given by name


@pytest.mark.parametrize("style", [s for s in MaskStyle if s is not MaskStyle.NONE])
@pytest.mark.parametrize("value", [{"street": "Main St 1"}, 1990, 3.5, ["a", "b"], b"bytes", True])
def test_non_text_values_are_fully_masked(style: MaskStyle, value: Any) -> None:
    assert mask(style, value) == "****"


@pytest.mark.parametrize("value", ["+8613812348000", {"a": 1}, 42, "", ["x"]])
def test_none_style_returns_the_value_unchanged(value: Any) -> None:
    assert mask(MaskStyle.NONE, value) is value
    assert mask("none", value) is value


@pytest.mark.parametrize("style", list(MaskStyle))
def test_missing_values_stay_missing(style: MaskStyle) -> None:
    assert mask(style, None) is None


def test_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="reversed"):
        mask("reversed", "abc")


REALISTIC = {
    MaskStyle.FULL: ["110101199003077777", "Anna Maria Schmidt", "secret"],
    MaskStyle.EMAIL: ["li.wei@example.cn", "a@example.org", "first.last+tag@mail.example.com"],
    MaskStyle.PHONE: ["+8613812348000", "+86 138 1234 8000", "+16502530000", "+4930123456",
                      "13812348000", "+49 30 1234"],
    MaskStyle.LAST4: ["110101199003077777", "DE89370400440532013000", "4111 1111 1111 1111",
                      "12345678"],
    MaskStyle.INITIALS: ["Anna Maria Schmidt", "Li Wei", "李秀英", "Jean-Luc Picard", "王伟"],
    MaskStyle.YEAR: ["1990-03-07", "2001-12-31T10:00:00"],
    MaskStyle.PARTIAL: ["Jonathan", "Schmidt", "ABCD", "110101199003077777"],
}


@pytest.mark.parametrize(("style", "value"),
                         [(s, v) for s, values in REALISTIC.items() for v in values])
def test_masked_output_never_contains_the_full_value(style: MaskStyle, value: str) -> None:
    shown = mask(style, value)
    assert isinstance(shown, str)
    assert value not in shown
    assert value.lower() not in shown.lower()
    assert shown != value


def test_every_masking_style_is_covered() -> None:
    assert set(REALISTIC) == set(MaskStyle) - {MaskStyle.NONE}


_NO_STAR = st.text(alphabet=st.characters(blacklist_characters="*", blacklist_categories=["Cs"]),
                   min_size=6, max_size=40)


@settings(max_examples=200, deadline=None)
@given(style=st.sampled_from([MaskStyle.FULL, MaskStyle.EMAIL, MaskStyle.LAST4, MaskStyle.YEAR,
                              MaskStyle.PARTIAL, MaskStyle.PHONE]),
       value=_NO_STAR)
def test_masks_never_reveal_a_whole_value_of_six_or_more_characters(style: MaskStyle,
                                                                    value: str) -> None:
    shown = mask(style, value)
    assert value not in shown


@settings(max_examples=200, deadline=None)
@given(national=st.from_regex(r"\A1[3-9][0-9]{9}\Z"))
def test_phone_mask_hides_the_middle_digits(national: str) -> None:
    shown = mask(MaskStyle.PHONE, "+86" + national)
    assert shown == f"+86 {national[:3]}****{national[-4:]}"
    assert national not in shown


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.text(alphabet=string.ascii_letters, min_size=2, max_size=12),
                      min_size=1, max_size=4))
def test_initials_never_show_a_whole_word(words: list[str]) -> None:
    shown = mask(MaskStyle.INITIALS, " ".join(words))
    assert shown == " ".join(f"{w[0].upper()}." for w in words)
    for word in words:
        assert word not in shown
