"""Corpus settings and commands that need no service."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from redundancy.cli import cli
from redundancy.config import load_settings
from redundancy.errors import ConfigurationError


def test_corpus_settings_default_to_redis_url_and_the_redis_store():
    settings = load_settings(redis_url="redis://r:6379/0")
    assert settings.corpus_redis == "redis://r:6379/0" and settings.event_store == "redis"
    own = load_settings(redis_url="redis://r/0", corpus_redis_url="redis://c:7000/0")
    assert own.corpus_redis == "redis://c:7000/0"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"event_store": "kafka"}, "EVENT_STORE=kafka needs KAFKA_BOOTSTRAP_SERVERS"),
        ({"event_store": "postgres"}, "EVENT_STORE: Input should be 'redis' or 'kafka'"),
        ({"corpus_redis_url": "http://x"}, "CORPUS_REDIS_URL: expected a Redis URL"),
        ({"corpus_apply_batch": 0}, "CORPUS_APPLY_BATCH"),
    ],
)
def test_bad_corpus_settings_fail_at_start_naming_the_variable(fields, message):
    with pytest.raises(ConfigurationError, match=message):
        load_settings(**fields)


def test_without_redis_a_corpus_command_says_what_to_set():
    # Given no CORPUS_REDIS_URL and no REDIS_URL (the unit tests' environment)
    result = CliRunner().invoke(cli, ["corpus", "list"])
    # Then the command stops with a usage error naming the variables
    assert result.exit_code == 2
    assert "set CORPUS_REDIS_URL (or REDIS_URL)" in result.output


def test_the_corpus_group_lists_its_commands():
    result = CliRunner().invoke(cli, ["corpus", "--help"])
    assert result.exit_code == 0
    for command in (
        "create",
        "add",
        "query",
        "remove",
        "stats",
        "list",
        "drop",
        "rebuild",
        "export",
    ):
        assert command in result.output
