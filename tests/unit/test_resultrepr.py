"""The result's text form that Celery's tracer builds for every task."""

from __future__ import annotations

import json

from celery.app import trace
from celery.utils.saferepr import saferepr

import redundancy.workers.resultrepr as resultrepr
from redundancy.core import analyze


def test_a_json_result_is_shown_as_its_json_cut_at_the_limit():
    result = analyze("Gulls argued. Gulls argued. The pier creaked.").model_dump(mode="json")
    text = resultrepr.result_text(result, 60)
    assert text == json.dumps(result, separators=(",", ":"))[:60] + "..."
    short = {"ok": True, "n": 1}
    assert resultrepr.result_text(short, 60) == '{"ok":true,"n":1}'
    assert resultrepr.result_text(short) == '{"ok":true,"n":1}'


def test_anything_else_keeps_celerys_form():
    not_json = {"ids": {1, 2}}  # a set: orjson refuses it
    for value in (None, "text", [1, 2], 3.5, not_json):
        assert resultrepr.result_text(value, 40) == saferepr(value, 40)


def test_the_app_puts_it_where_the_tracer_looks_it_up():
    from redundancy.workers.factory import create_app

    create_app()
    assert trace.saferepr is resultrepr.result_text
