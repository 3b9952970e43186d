"""The crd command fails in one clear line, with the documented exit code: bad options,
bad paths, unreadable FILEs, refused or failed webhooks (embedded default, no servers)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from redundancy.cli import EXIT_FAILED, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "corpus"


def crd(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``crd`` in a fresh process (the real entry point, nothing inherited from the shell)."""
    return subprocess.run(
        [sys.executable, "-m", "redundancy", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], **env},
        cwd=ROOT,
        check=False,
    )


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text
    return lines[-1] if lines else ""


def test_an_embedded_command_writes_nothing_on_stderr():
    # kombu warned "No hostname was supplied" on every embedded command
    out = crd("analyze", "-", stdin="The cat sat. The cat sat.")
    assert out.returncode == 0
    assert json.loads(out.stdout)["redundancy_score"] == 0.5
    assert out.stderr == ""


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (("--log-level", "FOO", "analyze", "-"), {}, "'FOO' is not one of"),
        (("batch", "--threshold", "nan", "examples/corpus"), {}, "NaN is not a threshold"),
        (("batch", "/nope"), {}, "'/nope' does not exist"),
        (("--correlation-id", "two words", "analyze", "-"), {}, "use 1-128 characters"),
        (
            ("analyze", "-"),
            {"CELERY_CONFIG_MODULE": "no_such_crd_settings"},
            "CELERY_CONFIG_MODULE=no_such_crd_settings: no module named",
        ),
    ],
)
def test_bad_options_and_configuration_are_one_line_and_exit_2(args, env, says):
    out = crd(*args, stdin="text", **env)
    assert out.returncode == EXIT_USAGE
    assert says in one_line(out.stderr)


def test_analyze_refuses_a_binary_file_and_a_fifo_without_blocking(tmp_path):
    # Given a binary file and a FIFO nobody writes to
    binary = tmp_path / "image.bin"
    binary.write_bytes(b"\x89PNG\x00\x01")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # When crd analyze reads each, Then it refuses each in one line (the subprocess
    # timeout bounds a read that would block on the FIFO)
    for path, says in ((binary, "not text (binary file)"), (fifo, "not a regular file (a FIFO)")):
        out = crd("analyze", str(path))
        assert out.returncode == EXIT_USAGE
        assert says in one_line(out.stderr)


def test_a_folder_reports_what_it_cannot_read_instead_of_skipping_it(tmp_path):
    # Given a folder with a text, a symlink loop, a broken link, a link to a folder and a FIFO
    (tmp_path / "a.txt").write_text("Text here. Text here.")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "broken").symlink_to(tmp_path / "missing")
    (tmp_path / "self").symlink_to(tmp_path)
    os.mkfifo(tmp_path / "pipe")

    # When crd batch reads it
    out = crd("batch", "--json", str(tmp_path))

    # Then each is a failed item with its reason, and the text is analysed
    assert out.returncode == 3, out.stderr
    result = json.loads(out.stdout)
    errors = {i["id"]: i["error"]["message"] for i in result["items"] if i["error"]}
    assert errors == {
        "loop1": "symbolic link loop",
        "loop2": "symbolic link loop",
        "broken": "broken symbolic link",
        "self": "symbolic link to a folder: not followed (may loop)",
        "pipe": "not a regular file (a FIFO)",
    }
    assert result["succeeded"] == 1


def test_a_refused_webhook_is_a_usage_error_before_anything_runs():
    out = crd("batch", "--webhook", "http://10.20.30.40/hook", "examples/corpus/policies")
    assert out.returncode == EXIT_USAGE
    assert "webhook refused: 10.20.30.40 resolves to 10.20.30.40" in one_line(out.stderr)
    assert out.stdout == ""  # no batch ran


def test_a_webhook_that_is_not_delivered_fails_the_command():
    # Given a webhook URL on loopback (allowed) where nothing listens
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"

    # When a batch runs with it (one attempt)
    out = crd(
        "batch", "--webhook", url, "examples/corpus/policies",
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1", WEBHOOK_ALLOWED_PORTS=str(port),
        WEBHOOK_MAX_ATTEMPTS="1",
    )  # fmt: skip

    # Then the summary is printed, and the command fails naming the webhook
    assert out.returncode == EXIT_FAILED
    assert "near-duplicate pairs" in out.stdout
    assert f"webhook to {url} not delivered: failed" in one_line(out.stderr)


def test_input_larger_than_any_text_is_refused_unread_and_odd_names_keep_their_file(tmp_path):
    # Given, with MAX_TEXT_CHARS=1000: a file over 4 bytes a character (a sparse 5 GB one,
    # which reading would take 5 GB), a JSONL file with a line over 6 bytes a character
    # between two good lines, a line with an unusable id, and a text file whose name is
    # not UTF-8 and holds a newline
    folder = tmp_path / "in"
    folder.mkdir()
    with (folder / "huge.txt").open("wb") as fh:
        fh.truncate(5 * 1024**3)
    good = {"id": "g1", "text": "First line. First line."}
    long_line = json.dumps({"id": "long", "text": "x" * 100_000})
    bad_id = json.dumps({"id": "a\tb", "text": "Tabbed id."})
    last = {"id": "g2", "text": "Last line."}
    (tmp_path / "docs.jsonl").write_text(
        "\n".join([json.dumps(good), long_line, bad_id, json.dumps(last)]) + "\n"
    )
    (folder / os.fsdecode(b"caf\xe9\nname.txt")).write_text("Latin-1 named. Latin-1 named.")
    (folder / "ok.txt").write_text("Fine text.")

    # When crd batch reads them
    out = crd("batch", "--json", str(folder), str(tmp_path / "docs.jsonl"),
              MAX_TEXT_CHARS="1000")  # fmt: skip

    # Then the oversized inputs and the bad id fail alone, with why; the rest is analysed
    assert out.returncode == 3, out.stderr
    result = json.loads(out.stdout)
    items = {i["id"]: i for i in result["items"]}
    errors = {k: i["error"]["message"] for k, i in items.items() if i["error"]}
    jsonl = str(tmp_path / "docs.jsonl")
    assert errors[str(folder / "huge.txt")].startswith("5,368,709,120 bytes: more than a text")
    assert errors[f"{jsonl}:2"].startswith("line over 71,536 bytes: more than a text")
    assert errors[f"{jsonl}:3"] == "id 'a\\tb' contains a control character"
    named = str(folder / "caf\\xe9\\x0aname.txt")
    assert items[named]["error"] is None and items["g1"]["error"] is None
    assert items["g2"]["error"] is None and items[str(folder / "ok.txt")]["error"] is None
    assert result["succeeded"] == 4 and result["failed"] == 3


def test_analyze_refuses_a_file_larger_than_any_text_without_reading_it(tmp_path):
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as fh:
        fh.truncate(5 * 1024**3)  # sparse: reading it would take 5 GB
    out = crd("analyze", str(huge), MAX_TEXT_CHARS="1000")
    assert out.returncode == EXIT_USAGE
    assert one_line(out.stderr).endswith(
        "5,368,709,120 bytes: more than a text of MAX_TEXT_CHARS=1,000 characters can take"
    )
