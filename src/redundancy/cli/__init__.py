"""The ``crd`` command: analyse, compare and batch-process text; run and check workers.

Exit codes: 0 success; 1 the job failed; 2 usage or configuration error;
3 the batch finished but some items failed (listed in the report).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from redundancy import __version__
from redundancy.config import LOG_FORMATS
from redundancy.core import DEFAULT_ALGORITHM, DEFAULT_THRESHOLD, MODES, SCORERS
from redundancy.core.scorers import MIN_THRESHOLD
from redundancy.errors import ConfigurationError, RedundancyError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ITEMS_FAILED = 3

err_console = Console(stderr=True)


class _Group(click.Group):
    """Turns our own errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigurationError as exc:
            err_console.print(f"[red]error:[/] {exc}")
            ctx.exit(EXIT_USAGE)
        except RedundancyError as exc:
            err_console.print(f"[red]error:[/] {type(exc).__name__}: {exc}")
            ctx.exit(EXIT_FAILED)


threshold_option = click.option(
    "--threshold",
    "-t",
    type=click.FloatRange(MIN_THRESHOLD, 1.0),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="similarity (0..1) at which two sentences/texts count as near duplicates",
)
algorithm_option = click.option(
    "--algorithm",
    "-a",
    type=click.Choice(list(SCORERS)),
    default=DEFAULT_ALGORITHM,
    show_default=True,
    help="rapidfuzz scorer",
)
timeout_option = click.option(
    "--timeout", type=float, default=None, help="seconds to wait for a cluster result"
)


PRODUCER_COMMANDS = frozenset({"analyze", "compare", "batch", "corpus"})


def _set_env(**values: object) -> None:
    """Pass a CLI option on as its environment setting (read by workers and pool processes
    alike) before the app is imported."""
    import os

    from redundancy.config import get_settings

    changed = False
    for name, value in values.items():
        if value is not None:
            os.environ[name] = str(value)
            changed = True
    if changed:
        get_settings.cache_clear()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crd")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default=None,
    help="log lines on stderr: text or one JSON object per line (env LOG_FORMAT)",
)
@click.option("--log-level", default="WARNING", show_default=True, help="log level on stderr")
@click.option(
    "--correlation-id",
    default=None,
    help="correlation id of the jobs this command sends (default: a new one)",
)
@click.pass_context
def cli(
    ctx: click.Context, log_format: str | None, log_level: str, correlation_id: str | None
) -> None:
    """Find redundant and near-duplicate text.

    Without CELERY_BROKER_URL every command runs in-process (the embedded default);
    with it, jobs go to Celery workers started with `crd worker`.
    """
    _set_env(LOG_FORMAT=log_format)
    if ctx.invoked_subcommand in PRODUCER_COMMANDS:
        from redundancy.cli.ops import start_producer

        start_producer(ctx, log_level, correlation_id)


def _mode() -> str:
    from redundancy.config import get_settings
    from redundancy.kv.clients import sanitize

    s = get_settings()
    return (
        "embedded default (in-process)"
        if s.embedded
        else f"Celery at {sanitize(s.broker_url or '')}"
    )


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _wait(result: Any, timeout: float | None) -> Any:
    """The task's value, or exit 1 with the task's error (read from AsyncResult)."""
    try:
        return result.get(timeout=timeout)
    except RedundancyError:
        raise
    except Exception as exc:
        raise click.ClickException(f"job {result.id} failed: {type(exc).__name__}: {exc}") from exc


@cli.command()
@click.argument("file", type=click.File("r", encoding="utf-8"))
@threshold_option
@algorithm_option
@timeout_option
def analyze(file: Any, threshold: float, algorithm: str, timeout: float | None) -> None:
    """How much FILE (or - for stdin) repeats itself, as JSON."""
    from redundancy.tasks import analyze_content

    text = file.read()
    _print_json(
        _wait(analyze_content.delay(text, threshold=threshold, algorithm=algorithm), timeout)
    )


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--text", "literal", is_flag=True, help="A and B are texts, not file paths")
@threshold_option
@algorithm_option
@timeout_option
def compare(
    a: str, b: str, literal: bool, threshold: float, algorithm: str, timeout: float | None
) -> None:
    """Similarity of files A and B (or of two texts with --text), as JSON."""
    from redundancy.tasks import compare_texts

    def load(value: str) -> str:
        if literal:
            return value
        try:
            return Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {value}: {exc}") from exc

    result = compare_texts.delay(load(a), load(b), algorithm=algorithm, threshold=threshold)
    _print_json(_wait(result, timeout))


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@threshold_option
@algorithm_option
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write every item, pair and cluster (.jsonl) or the pairs (.csv)",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default=None,
    help="output format (default: from --out's extension)",
)
@click.option("--webhook", "webhook_url", default=None, help="POST the summary here when done")
@click.option("--json", "as_json", is_flag=True, help="print the full result as JSON")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: on a TTY)")
@click.option(
    "--mode",
    type=click.Choice(list(MODES)),
    default="auto",
    show_default=True,
    help="near-duplicate search: exact finds every pair; indexed (MinHash LSH) scales "
    "further with estimated recall; auto = exact below 10,000 documents, else indexed",
)
@timeout_option
def batch(
    paths: tuple[str, ...],
    threshold: float,
    algorithm: str,
    out: Path | None,
    fmt: str | None,
    webhook_url: str | None,
    as_json: bool,
    progress: bool | None,
    mode: str,
    timeout: float | None,
) -> None:
    """Analyse files, folders (recursively) or JSONL (id, text) and find near duplicates.

    PATH may be - for JSONL on stdin; inputs are read as a stream. Exits 3 when some
    items failed.
    """
    from redundancy.cli.batchrun import run_batch
    from redundancy.cli.inputs import read_inputs
    from redundancy.cli.output import JsonlStream, output_format, print_summary, write_result

    console = Console()
    started = time.perf_counter()
    stream = JsonlStream(out) if out and output_format(out, fmt) == "jsonl" else None
    try:
        result = run_batch(
            read_inputs(list(paths)),
            threshold=threshold,
            algorithm=algorithm,
            webhook_url=webhook_url,
            show_progress=console.is_terminal if progress is None else progress,
            timeout=timeout,
            mode=mode,
            on_pairs=stream.pairs if stream else None,
            on_document=stream.document if stream else None,
        )
    except BaseException:
        if stream:
            stream.close()  # keeps the pairs found so far
        raise
    seconds = time.perf_counter() - started
    if stream:
        stream.finish(result)
    elif out:
        write_result(result, out, output_format(out, fmt))
    if as_json:
        _print_json(result.model_dump(mode="json"))
    else:
        print_summary(console, result, mode=_mode(), seconds=seconds)
        if out:
            console.print(f"wrote {out}")
    if result.failed:
        sys.exit(EXIT_ITEMS_FAILED)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--concurrency", "-c", type=int, default=None, help="worker processes (default: CPUs)"
)
@click.option("--queues", "-Q", default=None, help="comma-separated queues (default: all)")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="serve Prometheus /metrics on this port (env WORKER_METRICS_PORT)",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default=None,
    help="text (Celery's) or json lines (env LOG_FORMAT)",
)
@click.pass_context
def worker(
    ctx: click.Context,
    concurrency: int | None,
    queues: str | None,
    loglevel: str,
    metrics_port: int | None,
    log_format: str | None,
) -> None:
    """Start a Celery worker for our app (extra arguments go to `celery worker`)."""
    from redundancy.config import get_settings

    _set_env(WORKER_METRICS_PORT=metrics_port, LOG_FORMAT=log_format)
    settings = get_settings()
    if settings.embedded:
        raise ConfigurationError(
            "CELERY_BROKER_URL is not set: a worker needs a broker (redis://... or amqp://...). "
            "Without one, jobs already run in-process: try `crd batch PATH`."
        )
    if settings.worker_metrics_port is not None:
        from redundancy.cli.ops import check_port_free

        check_port_free(settings.metrics_bind_address, settings.worker_metrics_port)
    from redundancy.workers import app
    from redundancy.workers.routing import QUEUES

    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--queues={queues or ','.join(QUEUES)}",
        "--hostname=crd@%h",
    ]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if settings.log_format == "json":
        argv.insert(0, "--quiet")  # celery's global option: no banner, every line is JSON
    app.worker_main(argv + list(ctx.args))


@cli.command()
def doctor() -> None:
    """Check every configured service and say in one line each what is wrong."""
    from redundancy.cli.doctor import run_checks

    sys.exit(0 if run_checks(Console()) else EXIT_FAILED)


# --- command groups of other areas (events, cache, sessions, ops) register here ---
from redundancy.cli.cache import cache_group, sessions_group  # noqa: E402

cli.add_command(cache_group)
cli.add_command(sessions_group)
from redundancy.cli.events import events as _events  # noqa: E402

cli.add_command(_events)
from redundancy.cli.ops import flower  # noqa: E402

cli.add_command(flower)
from redundancy.cli.corpus import corpus_group  # noqa: E402  (corpora, issue 14)

cli.add_command(corpus_group)


def main() -> None:
    cli(prog_name="crd")


__all__ = ["cli", "main"]
