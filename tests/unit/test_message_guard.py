"""The message guard's check, on kombu messages built as Celery builds them (protocols 1
and 2) and as a careless or hostile producer could: what Celery accepts passes, what
would stop the worker or leave a caller on PENDING is refused with a reason."""

from __future__ import annotations

import pickle
import uuid
from typing import Any

import pytest
from celery import Celery
from kombu.message import Message
from kombu.serialization import dumps

from redundancy import names
from redundancy.workers.guard import REASONS, inspect_message


def kombu_message(body: Any, headers: dict[str, Any], *, raw: bytes | None = None,
                  content_type: str = "application/json") -> Message:  # fmt: skip
    """A message as the worker's consumer receives it (``accept``: JSON only)."""
    if raw is None:
        content_type, _, raw = dumps(body, serializer="json")
    return Message(
        body=raw,
        content_type=content_type,
        content_encoding="utf-8",
        headers=headers,
        delivery_info={"routing_key": "analysis"},
        accept=["application/json"],
    )


@pytest.fixture(scope="module")
def celery_app() -> Celery:
    return Celery("guard-test", set_as_current=False)


def as_celery_sends(app: Celery, protocol: int, **options: Any) -> tuple[Message, Any]:
    """A message made by Celery's own producer code, and the ``body`` Celery's consumer
    passes a strategy (None for protocol 2, the decoded dict for protocol 1)."""
    build = app.amqp.as_task_v2 if protocol == 2 else app.amqp.as_task_v1
    task = build(str(uuid.uuid4()), names.ANALYZE_CONTENT, ("Some text.",), {"threshold": 0.8},
                 **options)  # fmt: skip
    message = kombu_message(task.body, task.headers)
    return message, (None if protocol == 2 else message.payload)


@pytest.mark.parametrize(
    ("protocol", "options"),
    [
        (2, {}),
        (2, {"time_limit": 30, "soft_time_limit": 20, "retries": 2}),
        (2, {"countdown": 5, "expires": 60}),
        (2, {"callbacks": [{"task": "x", "args": [], "kwargs": {}, "options": {}}]}),
        (1, {}),
        (1, {"time_limit": 30}),
    ],
)
def test_messages_celery_makes_pass(celery_app, protocol, options):
    # Given a message built by Celery's producer code
    message, body = as_celery_sends(celery_app, protocol, **options)
    # When the guard checks it, Then it passes to Celery's strategy
    assert inspect_message(message, body) is None


def test_a_hybrid_message_passes():
    # Given protocol 2 headers over a protocol 1 style body (Celery accepts these)
    message = kombu_message(
        {"args": ["Some text."], "kwargs": {}}, {"task": names.ANALYZE_CONTENT, "id": "abc"}
    )
    # Then it passes
    assert inspect_message(message, None) is None


TASK_ID = "5f0c7e6a-9d7e-4c1e-8a57-1b7f2c1e0e11"
HEADERS = {"task": names.ANALYZE_CONTENT, "id": TASK_ID}
GOOD = [["Some text."], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]

BAD: list[tuple[str, dict[str, Any], str, str | None]] = [
    # (case, message, reason, the id it is recorded under)
    ("a JSON object body", {"body": {"not": "a celery body"}}, "malformed_body", TASK_ID),
    ("two parts", {"body": [["x"], {}]}, "malformed_body", TASK_ID),
    ("four parts", {"body": [["x"], {}, {}, {}]}, "malformed_body", TASK_ID),
    ("args not a list", {"body": ["x", {}, {}]}, "malformed_body", TASK_ID),
    ("kwargs not a mapping", {"body": [[], ["x"], {}]}, "malformed_body", TASK_ID),
    ("embed not a mapping", {"body": [[], {}, "x"]}, "malformed_body", TASK_ID),
    ("callbacks not a list", {"body": [[], {}, {"callbacks": "x"}]}, "malformed_body", TASK_ID),
    ("a number", {"body": 42}, "malformed_body", TASK_ID),
    ("a string holding 'args'", {"body": "args"}, "malformed_body", TASK_ID),
    ("null", {"body": None}, "malformed_body", TASK_ID),
    ("hybrid, kwargs a list", {"body": {"args": [], "kwargs": []}}, "malformed_body", TASK_ID),
    ("hybrid, args a string", {"body": {"args": "x"}}, "malformed_body", TASK_ID),
    ("no id", {"headers": {"task": names.ANALYZE_CONTENT}}, "malformed_headers", None),
    ("id not a string", {"headers": {**HEADERS, "id": 7}}, "malformed_headers", None),
    ("id too long", {"headers": {**HEADERS, "id": "x" * 300}}, "malformed_headers", None),
    ("timelimit a string", {"headers": {**HEADERS, "timelimit": "soon"}}, "malformed_headers",
     TASK_ID),
    ("timelimit of one", {"headers": {**HEADERS, "timelimit": [5]}}, "malformed_headers", TASK_ID),
    ("timelimit as text", {"headers": {**HEADERS, "timelimit": ["5", None]}},
     "malformed_headers", TASK_ID),
    ("timelimit negative", {"headers": {**HEADERS, "timelimit": [-1, None]}},
     "malformed_headers", TASK_ID),
    ("retries a string", {"headers": {**HEADERS, "retries": "2"}}, "malformed_headers", TASK_ID),
    ("eta a number", {"headers": {**HEADERS, "eta": 5}}, "malformed_headers", TASK_ID),
    ("pickle", {"raw": pickle.dumps(GOOD), "content_type": "application/x-python-serialize"},
     "refused_content", TASK_ID),
    ("YAML", {"raw": b"- []\n- {}\n- {}\n", "content_type": "application/x-yaml"},
     "refused_content", TASK_ID),
    ("truncated JSON", {"raw": b'[["x"], {}, {', "content_type": "application/json"},
     "undecodable", TASK_ID),
    ("not UTF-8", {"raw": b'[["\xff\xfe"], {}, {}]', "content_type": "application/json"},
     "undecodable", TASK_ID),
]  # fmt: skip


@pytest.mark.parametrize(("case", "parts", "reason", "recorded_id"), BAD, ids=[b[0] for b in BAD])
def test_bad_messages_are_refused_with_a_reason(case, parts, reason, recorded_id):
    # Given a protocol 2 message with one thing wrong
    message = kombu_message(
        parts.get("body", GOOD),
        parts.get("headers", HEADERS),
        raw=parts.get("raw"),
        content_type=parts.get("content_type", "application/json"),
    )
    # When the guard checks it
    rejection = inspect_message(message, None)
    # Then it is refused, with the reason, and the id its caller waits on when it has one
    assert rejection is not None
    assert rejection.reason == reason and reason in REASONS
    assert rejection.task_id == recorded_id
    assert rejection.task_name == names.ANALYZE_CONTENT
    assert rejection.detail


def test_a_protocol_1_body_without_an_id_is_refused(celery_app):
    # Given a protocol 1 message whose body lacks the id (Celery would raise KeyError)
    message, body = as_celery_sends(celery_app, 1)
    del body["id"]
    # Then the guard refuses it
    rejection = inspect_message(message, body)
    assert rejection is not None and rejection.reason == "malformed_headers"


def test_every_task_of_the_app_has_the_guard_celery_built_ins_included():
    # Given the worker's app with its tasks imported
    from redundancy.workers import create_app

    app = create_app()
    app.loader.import_default_modules()
    # Then every registered task, ours and Celery's (chord_unlock, chord, group ...), is
    # started with the guarded strategy
    assert any(name.startswith("celery.") for name in app.tasks)
    assert {name: task.Strategy for name, task in app.tasks.items()} == dict.fromkeys(
        app.tasks, "redundancy.workers.guard:guarded_strategy"
    )


def test_task_queues_dead_letter_to_one_exchange_unless_turned_off(settings_env):
    from redundancy.workers.celeryconfig import celery_settings

    # Given the default settings, Then every task queue of ours dead-letters to the
    # exchange, and Celery's default queue keeps Celery's own declaration (no arguments: a
    # plain producer declares it so, and RabbitMQ refuses a redeclaration with others)
    settings_env()
    queues = celery_settings()["task_queues"]
    assert {q.name for q in queues} == set(names.QUEUES)
    assert all(
        q.queue_arguments == {"x-dead-letter-exchange": names.DEAD_LETTER_EXCHANGE}
        for q in queues
        if q.name != names.CELERY_QUEUE
    )
    assert not next(q for q in queues if q.name == names.CELERY_QUEUE).queue_arguments
    # Given TASK_QUEUE_DEAD_LETTERING=false (queues of an older version), Then no argument
    settings_env(TASK_QUEUE_DEAD_LETTERING="false")
    assert all(not q.queue_arguments for q in celery_settings()["task_queues"])


# --- the time budget from the input size -----------------------------------------------


def test_the_hard_limit_grows_with_the_input_and_stops_at_the_task_limit(settings_env):
    from redundancy.config import get_settings
    from redundancy.workers.budget import time_limits

    # Given the defaults: 10 s, plus 120 s per million characters, at most TASK_TIME_LIMIT
    settings_env()
    settings = get_settings()
    # Then a short text gets about the base, a long one more, and nothing beyond the limit
    assert time_limits(1_000, settings) == (10.12, 9.108)
    assert time_limits(1_000_000, settings) == (130.0, 117.0)
    assert time_limits(50_000_000, settings) == (600.0, 540.0)


@pytest.mark.parametrize(
    ("protocol", "given", "expected"),
    [
        (2, {}, [10.0012, 9.001]),  # the producer set none: the budget
        (2, {"time_limit": 5, "soft_time_limit": 4}, [5.0, 4.0]),  # smaller: kept
        (2, {"time_limit": 3600, "soft_time_limit": 3000}, [10.0012, 9.001]),  # larger: cut
        (1, {}, [10.0012, 9.001]),
    ],
)
def test_the_guard_sets_the_budget_where_celery_reads_it(celery_app, protocol, given, expected):
    from redundancy.workers.guard import set_budget

    # Given an analyze_content message of 10 characters, as Celery's producer makes it
    message, body = as_celery_sends(celery_app, protocol, **given)
    # When the guard passes it on
    assert inspect_message(message, body) is None
    set_budget(message, body, names.ANALYZE_CONTENT)
    # Then the time limits Celery's request reads are the budget (or the producer's smaller)
    fields = message.headers if protocol == 2 else {**body, **message.headers}
    assert [round(x, 3) for x in fields["timelimit"]] == [round(x, 3) for x in expected]


def test_compare_texts_counts_both_texts_and_keyword_arguments():
    from redundancy.workers.budget import input_chars

    assert input_chars(names.COMPARE_TEXTS, ["abc"], {"text_b": "de", "algorithm": "x"}) == 5
    assert input_chars(names.ANALYZE_CONTENT, [], {"text": "abcd"}) == 4
    assert input_chars(names.PROCESS_BATCH, [["a" * 100]], {}) is None


def test_other_tasks_get_at_most_the_global_limits(settings_env):
    from redundancy.config import get_settings
    from redundancy.workers.budget import budget_headers

    settings_env()
    # Given a producer asking a day for a batch, or nothing, or less than the limit
    for given, expected in (
        ([86_400, 80_000], [600.0, 540.0]),
        (None, [600.0, 540.0]),
        ([30, None], [30.0, 540.0]),
    ):
        headers = {"timelimit": given}
        budget_headers(headers, names.PROCESS_BATCH, [["a"]], {}, get_settings())
        # Then it gets no more than TASK_TIME_LIMIT / TASK_SOFT_TIME_LIMIT
        assert headers["timelimit"] == expected
