"""Ids callers give (batch items, corpus documents, users) are checked at the boundary by
one rule (``core.text.validate_identifier``): anything a Redis write, a JSON result or a
log line could not carry fails at once with its name, never half-way through a write."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redundancy.batch.staging import MAX_ITEM_ID_CHARS, item_id, iter_items
from redundancy.core.corpus import MAX_DOC_ID_CHARS, validate_doc_id
from redundancy.core.text import validate_identifier
from redundancy.errors import InvalidInputError
from redundancy.sessions.core import MAX_USER_ID, check_user_id

BAD: list[tuple[Any, str]] = [
    ("", "non-empty string"),
    (None, "non-empty string"),
    ({"a": 1}, "non-empty string"),
    (["a"], "non-empty string"),
    (1.5, "non-empty string"),
    ("\ud800", "unpaired surrogate"),
    ("ok\udcffok", "unpaired surrogate"),
    ("a\0b", "control character"),
    ("line\nbreak", "control character"),
    ("tab\there", "control character"),
    ("del\x7f", "control character"),
]


CHECKS = {
    "rule": lambda v: validate_identifier(v, name="thing", max_chars=10),
    "document id": validate_doc_id,
    "user_id": check_user_id,
    "batch item id": lambda v: item_id(v, 0),
}


@pytest.mark.parametrize("where", list(CHECKS))
@pytest.mark.parametrize(("value", "says"), BAD)
def test_every_boundary_refuses_what_no_write_could_carry(where, value, says):
    check = CHECKS[where]
    if value is None and where == "batch item id":
        assert check(value) == "0"  # no id: the item's position
        return
    with pytest.raises(InvalidInputError, match=says):
        check(value)


@pytest.mark.parametrize(
    ("check", "limit"),
    [(validate_doc_id, MAX_DOC_ID_CHARS), (check_user_id, MAX_USER_ID),
     (lambda v: item_id(v, 0), MAX_ITEM_ID_CHARS)],
)  # fmt: skip
def test_ids_are_bounded(check, limit):
    assert check("x" * limit) == "x" * limit
    with pytest.raises(InvalidInputError, match=f"at most {limit} characters"):
        check("x" * (limit + 1))


def test_batch_items_take_numbers_as_strings_and_position_when_no_id():
    items = [{"id": 7, "text": "a"}, {"id": None, "text": "b"}, "c", {"text": "d"}]
    assert [doc_id for doc_id, _ in iter_items(items)] == ["7", "1", "2", "3"]
    with pytest.raises(InvalidInputError, match="item 1: id 'x\\\\ny' contains a control"):
        list(iter_items([{"id": "a", "text": "a"}, {"id": "x\ny", "text": "b"}]))
    with pytest.raises(InvalidInputError):
        item_id(True, 0)  # a bool is not a number id


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_accepted_id_round_trips_through_utf8_and_json(value):
    import json

    try:
        accepted = validate_identifier(value, name="id", max_chars=40)
    except InvalidInputError:
        return
    assert accepted.encode("utf-8").decode("utf-8") == value
    assert json.loads(json.dumps(accepted)) == value
    assert "\n" not in accepted and "\0" not in accepted
