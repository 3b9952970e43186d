"""The ``crd`` command: analyse, compare and batch-process text; run and check workers.

Exit codes: 0 success; 1 the job failed (or a service is unreachable, or no worker
answers, or the webhook was not delivered); 2 usage or configuration error; 3 the batch
finished but some items failed (listed in the report); 130 interrupted (Ctrl+C). Every
error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import math
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
from redundancy.errors import (
    ConfigurationError,
    InvalidInputError,
    JobInterruptedError,
    RedundancyError,
)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ITEMS_FAILED = 3
EXIT_INTERRUPTED = 130

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

err_console = Console(stderr=True, highlight=False)


def _fail(ctx: click.Context, message: str, code: int) -> None:
    err_console.print(f"[red]error:[/] {message}", soft_wrap=True)
    ctx.exit(code)


class _Group(click.Group):
    """Turns our own errors, unreachable services and Ctrl+C into one clear line instead
    of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from redundancy.cli.cluster import infrastructure_problem

        try:
            return super().invoke(ctx)
        except ConfigurationError as exc:
            _fail(ctx, str(exc), EXIT_USAGE)
        except JobInterruptedError as exc:
            err_console.print(str(exc), soft_wrap=True)
            ctx.exit(EXIT_INTERRUPTED)
        except RedundancyError as exc:
            _fail(ctx, f"{type(exc).__name__}: {exc}", EXIT_FAILED)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            problem = infrastructure_problem(exc)
            if problem is None:
                raise
            _fail(ctx, problem, EXIT_FAILED)


class _Threshold(click.FloatRange):
    """A similarity threshold: a number in [MIN_THRESHOLD, 1] (NaN is not one)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail("NaN is not a threshold: give a number in [0.01, 1]", param, ctx)
        return number


threshold_option = click.option(
    "--threshold",
    "-t",
    type=_Threshold(MIN_THRESHOLD, 1.0),
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


def _correlation_id_option(_ctx: click.Context, _param: Any, value: str | None) -> str | None:
    from redundancy.observability.context import usable_correlation_id

    if value is not None and usable_correlation_id(value) is None:
        raise click.BadParameter("use 1-128 characters of A-Z a-z 0-9 . _ : -")
    return value


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crd")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default=None,
    help="log lines on stderr: text or one JSON object per line (env LOG_FORMAT)",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="WARNING",
    show_default=True,
    help="log level on stderr",
)
@click.option(
    "--correlation-id",
    default=None,
    callback=_correlation_id_option,
    help="correlation id of the jobs this command sends (default: a new one; 1-128 of "
    "A-Z a-z 0-9 . _ : -)",
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
    from redundancy.batch.runner import release

    try:
        return result.get(timeout=timeout)
    except (RedundancyError, KeyboardInterrupt):
        raise
    except Exception as exc:
        from redundancy.cli.cluster import infrastructure_problem

        if infrastructure_problem(exc) is not None:
            raise
        raise click.ClickException(f"job {result.id} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        release(result)


def _text_argument(value: str) -> str:
    """FILE's text (``-``: stdin); a FIFO, a binary or non-UTF-8 file is a usage error."""
    from redundancy.cli.inputs import read_text_argument

    try:
        return read_text_argument(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.argument("file")
@threshold_option
@algorithm_option
@timeout_option
def analyze(file: str, threshold: float, algorithm: str, timeout: float | None) -> None:
    """How much FILE (or - for stdin) repeats itself, as JSON."""
    from redundancy.tasks import analyze_content

    text = _text_argument(file)
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
        return value if literal else _text_argument(value)

    result = compare_texts.delay(load(a), load(b), algorithm=algorithm, threshold=threshold)
    _print_json(_wait(result, timeout))


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, allow_dash=True))
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
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write the results page: one self-contained HTML file (charts, clusters, diffs)",
)
@click.option("--webhook", "webhook_url", default=None, help="POST the summary here when done")
@click.option("--json", "as_json", is_flag=True, help="print the full result as JSON")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: on a TTY)")
@click.option(
    "--expand-identical",
    is_flag=True,
    help="list every pair of identical documents too, up to EXPAND_IDENTICAL_MAX_PAIRS "
    "(default: each identical text is one duplicate group)",
)
@click.option(
    "--mode",
    type=click.Choice(list(MODES)),
    default="auto",
    show_default=True,
    help="near-duplicate search: exact finds every pair; indexed (MinHash LSH) scales "
    "further with estimated recall; auto = exact below 10,000 documents, else indexed",
)
@click.option(
    "--on-interrupt",
    type=click.Choice(["revoke", "leave"]),
    default="revoke",
    show_default=True,
    help="on Ctrl+C during a cluster batch: revoke its tasks, or leave it running",
)
@click.option("--corpus", default=None, help="also report each document's matches in this corpus")
@click.option(
    "--add",
    is_flag=True,
    help="with --corpus: add the batch to it, all or nothing (crd corpus jobs shows it)",
)
@click.option(
    "--corpus-mode",
    type=click.Choice(["indexed", "exact"]),
    default="indexed",
    show_default=True,
    help="with --corpus: exact finds every match (slower); indexed uses its LSH index",
)
@click.option(
    "--corpus-limit",
    type=click.IntRange(1, 10_000),
    default=20,
    show_default=True,
    help="with --corpus: matches listed per document at most",
)
@timeout_option
def batch(
    paths: tuple[str, ...],
    threshold: float,
    algorithm: str,
    out: Path | None,
    fmt: str | None,
    report: Path | None,
    webhook_url: str | None,
    as_json: bool,
    progress: bool | None,
    expand_identical: bool,
    mode: str,
    on_interrupt: str,
    corpus: str | None,
    add: bool,
    corpus_mode: str,
    corpus_limit: int,
    timeout: float | None,
) -> None:
    """Analyse files, folders (recursively) or JSONL (id, text) and find near duplicates.

    PATH may be - for JSONL on stdin; inputs are read as a stream. Exits 3 when some
    items failed, 1 when the webhook was not delivered or the batch could not be added
    to the corpus (--add: the corpus is then as before), 130 on Ctrl+C (printing the
    batch id: revoked, or left running with --on-interrupt leave).

    --corpus NAME also lists each document's matches among NAME's documents (at
    --threshold, which must not be below NAME's minimum, with NAME's scorer); --add then
    adds the batch to NAME as a saga: every document or none.
    """
    from redundancy.batch.runner import BatchRunError, no_progress, run_batch
    from redundancy.cli.inputs import read_inputs
    from redundancy.cli.output import (
        JsonlStream,
        output_format,
        print_summary,
        progress_bar,
        write_result,
    )
    from redundancy.report import TextSpool, write_batch_report

    console = Console()
    if webhook_url:
        _check_webhook(webhook_url)
    if add and not corpus:
        raise click.BadParameter("--add needs --corpus NAME", param_hint="--add")
    if corpus:
        _check_corpus(corpus, threshold, corpus_mode, corpus_limit)
    started = time.perf_counter()
    stream = JsonlStream(out) if out and output_format(out, fmt) == "jsonl" else None
    show_progress = err_console.is_terminal if progress is None else progress
    webhook: dict[str, Any] = {}
    if report and not report.resolve().parent.is_dir():
        raise click.BadParameter(f"no folder {report.parent} to write it in", param_hint="--report")
    spool = TextSpool() if report else None

    def on_document(doc_id: str, text: Any) -> None:
        if stream:
            stream.document(doc_id, text)
        if spool is not None:
            spool.add(doc_id, text)

    try:
        result = run_batch(
            read_inputs(list(paths)),
            threshold=threshold,
            algorithm=algorithm,
            webhook_url=webhook_url,
            progress=progress_bar if show_progress else no_progress,
            timeout=timeout,
            mode=mode,
            on_pairs=stream.pairs if stream else None,
            on_document=on_document if stream or spool is not None else None,
            on_webhook=webhook.update,
            on_interrupt="leave" if on_interrupt == "leave" else "revoke",
            expand_identical=expand_identical,
            corpus=corpus,
            add=add,
            corpus_mode=corpus_mode,
            corpus_limit=corpus_limit,
        )
    except BaseException as exc:
        if stream:
            stream.close()  # keeps the pairs found so far
        if spool is not None:
            spool.close()
        if isinstance(exc, BatchRunError):
            raise click.ClickException(str(exc)) from exc
        raise
    seconds = time.perf_counter() - started
    if stream:
        stream.finish(result)
    elif out:
        write_result(result, out, output_format(out, fmt))
    if report and spool is not None:
        with spool:
            write_batch_report(report, result, spool)
    if as_json:
        _print_json(result.model_dump(mode="json"))
    else:
        print_summary(console, result, mode=_mode(), seconds=seconds)
        for path in (out, report):
            if path:
                console.print(f"wrote {path}")
    if webhook_url and webhook.get("status") != "delivered":
        err_console.print(
            f"[red]error:[/] webhook to {webhook_url} not delivered: "
            f"{webhook.get('status', 'unknown')}: {webhook.get('error') or 'no report'}",
            soft_wrap=True,
        )
        sys.exit(EXIT_FAILED)
    saga = result.corpus.saga if result.corpus else None
    if saga is not None and saga.state != "completed":
        err_console.print(
            f"[red]error:[/] the batch was not added to corpus {corpus}: saga {saga.saga_id} "
            f"{saga.state}: {saga.cause or 'still running (crd corpus jobs)'}",
            soft_wrap=True,
        )
        sys.exit(EXIT_FAILED)
    if result.failed:
        sys.exit(EXIT_ITEMS_FAILED)


def _check_corpus(corpus: str, threshold: float, mode: str, limit: int) -> None:
    """An unknown corpus, or a threshold below its minimum, is a usage error (exit 2),
    found before anything is read or sent."""
    from redundancy.batch.corpus import check_corpus_options

    try:
        check_corpus_options(corpus, threshold, mode, limit)
    except InvalidInputError as exc:
        raise click.BadParameter(str(exc), param_hint="'--corpus'") from None


def _check_webhook(url: str) -> None:
    """Refuse a webhook the workers would refuse (not http(s), private or loopback and
    not in WEBHOOK_ALLOWED_HOSTS, or a port not in WEBHOOK_ALLOWED_PORTS) before anything
    is read or sent."""
    from redundancy.config import get_settings
    from redundancy.events.errors import WebhookRefusedError
    from redundancy.events.webhooks import resolve_target

    settings = get_settings()
    try:
        resolve_target(url, settings.webhook_allow_list, settings.webhook_ports)
    except WebhookRefusedError as exc:
        raise click.BadParameter(f"webhook refused: {exc}", param_hint="'--webhook'") from None


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
    settings.require_broker(
        "a worker needs a broker (redis://... or amqp://...). "
        "Without one, jobs already run in-process: try `crd batch PATH`."
    )
    if settings.worker_metrics_port is not None:
        from redundancy.cli.ops import check_port_free

        check_port_free(settings.metrics_bind_address, settings.worker_metrics_port)
    from redundancy.workers import app
    from redundancy.workers.guard import check_task_queues
    from redundancy.workers.routing import QUEUES

    check_task_queues(app)  # RabbitMQ queues of an older version: say how to upgrade

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
from redundancy.cli.api import keys_group, serve  # noqa: E402

cli.add_command(serve)
cli.add_command(keys_group)
from redundancy.cli.corpus import corpus_group  # noqa: E402

cli.add_command(corpus_group)


def main() -> None:
    cli(prog_name="crd")


__all__ = ["cli", "main"]
