"""The handler registry and the runner's rules, in one process (in-memory broker and
claims); the same runner across real processes and brokers: tests/integration."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from redundancy.config import load_settings
from redundancy.errors import ConfigurationError, InvalidInputError
from redundancy.events.brokers.memory import InMemoryBroker
from redundancy.events.claims import LocalHandlerState, claim_key
from redundancy.events.handlers import BUILTIN_MODULES, HandlerRegistry, load, registry
from redundancy.events.handling import HandlerRunner
from redundancy.events.models import AnalysisCompletedEvent, SimilarityCompletedEvent
from redundancy.retry import FIRST_DELAY, HANDLER_BACKOFF_MAX, RetryPolicy, handler_retry

# --- the registry ----------------------------------------------------------------------------


def test_the_decorator_registers_a_function_for_its_event_types():
    # Given a registry and two decorated functions
    handlers = HandlerRegistry()

    @handlers.handler("analysis.completed", "batch.completed", tries=2)
    def index_scores(event: Any) -> None: ...

    @handlers.handler(name="audit")
    def everything(event: Any) -> None: ...

    # Then each is registered by name, with its types (none: all events) and tries,
    # and stays the plain function it was
    audit, index = list(handlers)
    assert (index.name, index.event_types, index.tries) == (
        "index_scores", frozenset({"analysis.completed", "batch.completed"}), 2,
    )  # fmt: skip
    assert (audit.name, audit.event_types, audit.func) == ("audit", None, everything)
    assert callable(index_scores)


@pytest.mark.parametrize(
    ("types", "name", "tries", "message"),
    [
        (["analysis.complete"], "x", None, "did you mean analysis.completed"),
        ([], "bad name!", None, "handler name"),
        ([], "x", 0, "tries must be 1 to 100"),
    ],
)
def test_a_bad_registration_is_refused_with_a_clear_error(types, name, tries, message):
    handlers = HandlerRegistry()
    with pytest.raises(ConfigurationError, match=message):
        handlers.add(lambda e: None, types, name=name, tries=tries)
    assert len(handlers) == 0


def test_two_functions_cannot_share_a_name_but_a_reimport_replaces_its_own():
    handlers = HandlerRegistry()

    def first(event: Any) -> None: ...

    handlers.add(first, name="same")
    handlers.add(first, name="same")  # the module imported again
    with pytest.raises(ConfigurationError, match="two handlers named 'same'"):
        handlers.add(lambda e: None, name="same")
    assert len(handlers) == 1


def test_selecting_names_an_unknown_handler_and_skips_idle_ones_by_default():
    handlers = HandlerRegistry()
    handlers.add(lambda e: None, name="projector")
    handlers.add(lambda e: None, name="idle", when=lambda: False)
    # Then all but the idle one run by default; named, the idle one runs too
    assert [h.name for h in handlers.select()] == ["projector"]
    assert [h.name for h in handlers.select(["idle"])] == ["idle"]
    with pytest.raises(ConfigurationError, match="did you mean projector"):
        handlers.select(["projecter"])


def test_the_built_in_handlers_are_loaded_and_the_notifier_idles_without_subscriptions():
    load()
    names = {h.name for h in registry}
    assert {"corpus-projector", "webhook-notifier"} <= names
    assert "webhook-notifier" not in {h.name for h in registry.select()}
    assert BUILTIN_MODULES == ("redundancy.corpus.projector", "redundancy.events.notifier")
    with pytest.raises(ConfigurationError, match="cannot import handler module"):
        load(["no_such_module_here"], builtins=False)


def test_webhook_subscriptions_are_validated_without_echoing_their_urls():
    good = load_settings(
        webhook_subscriptions='[{"url": "https://h.example/x?token=t", "events": ["*"]}]'
    )
    assert good.webhook_subscription_list[0].events == ("*",)
    with pytest.raises(ConfigurationError, match="WEBHOOK_SUBSCRIPTIONS") as bad:
        load_settings(
            webhook_subscriptions='[{"url": "https://h.example/x?token=t", "events": ["Nope"]}]'
        )
    assert "token=t" not in str(bad.value)


def test_the_notifier_refuses_an_unknown_subscribed_event_type(monkeypatch):
    from redundancy.config import get_settings
    from redundancy.events.notifier import _subscribed

    monkeypatch.setenv(
        "WEBHOOK_SUBSCRIPTIONS", '[{"url": "https://h.example/", "events": ["analysis.complete"]}]'
    )
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match=r"did you mean analysis\.completed"):
            _subscribed()
    finally:
        monkeypatch.delenv("WEBHOOK_SUBSCRIPTIONS")
        get_settings.cache_clear()


def test_handler_retries_use_the_one_back_off():
    policy = handler_retry(3)
    assert (policy.first, policy.cap, policy.attempts) == (FIRST_DELAY, HANDLER_BACKOFF_MAX, 3)
    assert policy.retries_after(2) and not policy.retries_after(3)


# --- the runner, in one process ------------------------------------------------------------


class Run:
    """A runner over a private in-memory topic with in-process claims."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url = f"memory://{uuid.uuid4().hex}"
        self.broker = InMemoryBroker(self.url)
        self.state = LocalHandlerState()
        self.handlers = HandlerRegistry()
        fast = RetryPolicy(first=0.01, cap=0.02)
        monkeypatch.setattr(
            "redundancy.events.handling.handler_retry",
            lambda tries: RetryPolicy(fast.first, fast.cap, tries),
        )

    def publish(self, *events: Any) -> None:
        for event in events:
            self.broker.publish_sync(event, None)

    def runner(self) -> HandlerRunner:
        return HandlerRunner(
            list(self.handlers),
            lambda: InMemoryBroker(self.url),
            self.state,
            verify=False,
            max_tries=3,
        )


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Run:
    return Run(monkeypatch)


def analysis(content_hash: str) -> AnalysisCompletedEvent:
    return AnalysisCompletedEvent(
        content_hash=content_hash, redundancy_score=0.1, analysis_result={}
    )


def test_a_flaky_handler_is_retried_until_it_succeeds(run):
    # Given a handler that fails twice, then works
    calls: list[str] = []

    @run.handlers.handler("analysis.completed", name="flaky")
    def flaky(event: Any) -> None:
        calls.append(event.payload.content_hash)
        if len(calls) < 3:
            raise ConnectionError("down for a moment")

    run.publish(analysis("h1"))
    # When it runs
    outcomes = run.runner().run(timeout=0.3)
    # Then the third try handled it and nothing was dead-lettered
    assert calls == ["h1", "h1", "h1"]
    assert outcomes.counts == {"flaky": {"retried": 2, "handled": 1}}
    assert run.state.dead_letter_count() == 0


def test_invalid_input_is_dead_lettered_at_once_and_the_next_event_flows(run):
    # Given a handler that refuses one event as invalid input
    seen: list[str] = []

    @run.handlers.handler("analysis.completed", name="picky")
    def picky(event: Any) -> None:
        seen.append(event.payload.content_hash)
        if event.payload.content_hash == "bad":
            raise InvalidInputError("this event can never succeed")

    run.publish(analysis("bad"), analysis("good"))
    # When it runs
    outcomes = run.runner().run(timeout=0.3)
    # Then the bad event was tried once and dead-lettered, the good one handled
    assert seen == ["bad", "good"]
    assert outcomes.counts == {"picky": {"dead_lettered": 1, "handled": 1}}
    [letter] = run.state.dead_letters(10)
    assert (letter.handler, letter.tries) == ("picky", 1)
    assert "InvalidInputError: this event can never succeed" in letter.error


def test_handlers_see_only_their_types_and_skip_what_another_process_finished(run):
    # Given an event another process of the group handled already, and one of another type
    seen: list[str] = []

    @run.handlers.handler("analysis.completed", name="mine")
    def mine(event: Any) -> None:
        seen.append(event.event_type)

    done, fresh = analysis("done"), analysis("fresh")
    other = SimilarityCompletedEvent(
        text1_hash="a", text2_hash="b", similarity_score=1.0, is_similar=True
    )
    key = claim_key("crd-handlers", "mine", str(done.event_id))
    run.state.claim(key, "another-process", 30)
    run.state.done(key)
    run.publish(done, other, fresh)
    # When the handler runs
    outcomes = run.runner().run(timeout=0.3)
    # Then only the fresh event of its type ran
    assert seen == ["analysis.completed"]
    assert outcomes.counts == {"mine": {"duplicate": 1, "handled": 1}}


def test_max_events_stops_the_run_and_leaves_the_rest_for_later(run):
    seen: list[str] = []

    @run.handlers.handler("analysis.completed", name="counting")
    def counting(event: Any) -> None:
        seen.append(event.payload.content_hash)

    run.publish(*(analysis(f"h{i}") for i in range(5)))
    first = run.runner().run(max_events=2, timeout=5)
    rest = run.runner().run(timeout=0.3)
    assert first.counts == {"counting": {"handled": 2}}
    assert rest.counts == {"counting": {"handled": 3}}
    assert seen == [f"h{i}" for i in range(5)]


def test_a_configuration_error_stops_every_handler(run):
    @run.handlers.handler(name="a")
    def a(event: Any) -> None: ...

    runner = run.runner()
    runner.verify = True  # and no key is configured: consume_sync refuses to read
    outcomes = runner.run(timeout=5)
    assert outcomes.errors and isinstance(outcomes.errors[0], ConfigurationError)
