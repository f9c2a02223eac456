"""The sweeper's id-list encoder must produce exactly what ``json.dumps`` would parse to."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from vault.retention.sweeper import json_array

TRICKY = [[], [""], ["", ""], ["a"], ["a", "b"], ['x"y'], ["a", 'x"y'], ['"', '"'],
          ["a,b", '","'], ["back\\slash"], ["tab\there"], ["nl\nx"], ["\x00"], ["\x7f"],
          ["é", "中文"], ["\u2028"], ["\ud800"]]


def test_tricky_ids_round_trip() -> None:
    for items in TRICKY:
        assert json.loads(json_array(items)) == items, items


@given(st.lists(st.text()))
def test_any_strings_round_trip(items: list[str]) -> None:
    assert json.loads(json_array(items)) == items
