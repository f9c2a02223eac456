"""index_form (the write path's fast blind-index form) equals normalize_for_index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.errors import InvalidData
from vault.schema import load_schemas
from vault.validation import index_form, normalize_for_index, validate_record

from ..conftest import POLICIES

SCHEMA = load_schemas(POLICIES).get("customers")

SAMPLES = {
    "email": ["Li.Wei@Example.CN", "ÉLODIE@exemple.fr", "a.b+tag@sub.example.com",
              "\uff46\uff55\uff4c\uff4c@example.jp"],  # full-width letters
    "phone": ["+86 138 1234 8000", "+49 (0)151 2345 6789", "+1-415-555-0132"],
    "national_id": ["110101 19900307 7777", "ab-12-cd-34",
                    "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18"],
    "full_name": ["  Anna   MARIA Schmidt ", "Ǆemal Ⅻ", "李 秀英", "ﬁnn straße"],
}


@pytest.mark.parametrize(("field", "raw"),
                         [(f, v) for f, values in SAMPLES.items() for v in values])
def test_index_form_matches_normalize_for_index(field: str, raw: str) -> None:
    validated = validate_record(SCHEMA, {field: raw}, partial=True)[field]
    spec = SCHEMA.fields[field]
    assert index_form(spec, validated) == normalize_for_index(spec, validated)
    assert index_form(spec, validated) == normalize_for_index(spec, raw)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_index_form_matches_for_any_valid_name(raw: str) -> None:
    spec = SCHEMA.fields["full_name"]
    try:
        validated = validate_record(SCHEMA, {"full_name": raw}, partial=True)["full_name"]
    except InvalidData:
        return
    if validated is None:
        return
    try:
        expected = normalize_for_index(spec, validated)
    except InvalidData:
        with pytest.raises(InvalidData):
            index_form(spec, validated)
        return
    assert index_form(spec, validated) == expected


def test_index_form_refuses_json_fields() -> None:
    with pytest.raises(InvalidData):
        index_form(SCHEMA.fields["device_info"], {"os": "x"})
