"""The saga's pure part: what a step records before it changes a corpus, and what
undoing it takes (``redundancy.core.saga``)."""

from __future__ import annotations

import pytest

from redundancy.core.saga import plan_step, undo_plan, with_old_texts


def test_a_step_records_what_it_adds_and_replaces_and_leaves_out_what_it_does_not_change():
    # Given a corpus holding a (digest 1) and b (digest 2), and a step of a, b and c
    current = {"a": "d1", "b": "d2", "c": None}
    items = [("a", "d1"), ("b", "d9"), ("c", "d3")]
    # When the step is planned
    record, needed = plan_step(4, items, current)
    # Then it adds c, replaces b (whose old text it still needs) and leaves a alone
    assert (record.step, record.status) == (4, "applying")
    assert record.added == {"c": "d3"}
    assert needed == ["b"]
    assert (record.replaced["b"].old_digest, record.replaced["b"].new_digest) == ("d2", "d9")
    with pytest.raises(ValueError, match="old texts"):
        with_old_texts(record, {})
    full = with_old_texts(record, {"b": "the old text of b"})
    assert full.replaced["b"].old_text == "the old text of b"


def test_undoing_a_step_touches_only_what_is_still_its_own():
    record, _ = plan_step(
        0,
        [("add1", "n1"), ("add2", "n2"), ("add3", "n3"), ("rep1", "r1"), ("rep2", "r2"),
         ("rep3", "r3")],
        {"rep1": "o1", "rep2": "o2", "rep3": "o3"},
    )  # fmt: skip
    record = with_old_texts(record, {"rep1": "old 1", "rep2": "old 2", "rep3": "old 3"})
    # Given the corpus now: add1 and rep1 as the step wrote them; add2 and rep2 changed by
    # another writer since; add3 and rep3 never reached (the step failed before them)
    now = {"add1": "n1", "add2": "other", "add3": None, "rep1": "r1", "rep2": "x", "rep3": "o3"}
    # When the undo is planned
    remove, restore, superseded = undo_plan(record, now)
    # Then the step's own changes are undone, others' kept, unreached ones need nothing
    assert remove == ["add1"]
    assert restore == [("rep1", "old 1")]
    assert superseded == ["add2", "rep2"]
