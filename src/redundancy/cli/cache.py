"""``crd cache stats|clear`` and ``crd sessions list|revoke``: the cache and sessions for ops."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from redundancy import keys


def _cache() -> Any:
    from redundancy.cache import get_cache

    return get_cache()


def _memory_note(console: Console, url: str) -> None:
    console.print(
        f"[yellow]note:[/] the cache is {url}: set REDIS_CACHE_URL (or REDIS_URL) to "
        "share it between processes; this command only sees its own process"
    )


@click.group("cache")
def cache_group() -> None:
    """Inspect or clear the results cache (REDIS_CACHE_URL, else REDIS_URL)."""


@cache_group.command("stats")
@click.option("--keys", "count", is_flag=True, help="also count stored entries (a full SCAN)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def cache_stats(count: bool, as_json: bool) -> None:
    """Hits, misses, errors and hit rate per cache type, summed over every process."""
    cache = _cache()
    stats = cache.shared_stats()
    if count:
        stats["keys"] = cache.count_keys()
    if as_json:
        click.echo(json.dumps({"cache": cache.url, **stats}, indent=2))
        return
    console = Console()
    if cache.core.connector.is_memory:
        _memory_note(console, cache.url)
    table = Table(title=f"cache {cache.url}", title_justify="left")
    for column in ("type", "hits", "misses", "hit rate", "errors", "sets", "deletes"):
        table.add_column(column, justify="left" if column == "type" else "right")
    if count:
        table.add_column("keys", justify="right")
    rows = [*stats["namespaces"].items(), ("all", stats)]
    for name, row in rows:
        cells = [
            name,
            *(f"{row[f]:,}" for f in ("hits", "misses")),
            f"{row['hit_rate']:.1%}",
            *(f"{row[f]:,}" for f in ("errors", "sets", "deletes")),
        ]
        if count:
            total = sum(stats["keys"].values())
            cells.append(f"{total if name == 'all' else stats['keys'].get(name, 0):,}")
        table.add_row(*cells, style="bold" if name == "all" else None)
    console.print(table)
    console.print("counts are shared by each process about once a second")


@cache_group.command("clear")
@click.argument("pattern", default="*")
@click.option(
    "--prefix",
    default=keys.CACHE_PREFIX,
    show_default=True,
    help="cache namespace (keys redundancy:<prefix>:v1:...)",
)
def cache_clear(pattern: str, prefix: str) -> None:
    """Delete the entries whose key matches PATTERN (a glob, default: all).

    Example: `crd cache clear 'analysis:*'` drops every cached analysis. Uses SCAN and
    UNLINK in batches, never KEYS; other namespaces are never touched.
    """
    cache = _cache()
    try:
        deleted = cache.delete_pattern(pattern, prefix=prefix)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if cache.core.connector.is_memory:
        _memory_note(Console(stderr=True), cache.url)
    click.echo(f"deleted {deleted:,} entries matching {keys.cache_key(prefix, pattern)}")


@click.group("sessions")
def sessions_group() -> None:
    """List or revoke a user's sessions (REDIS_URL)."""


@sessions_group.command("list")
@click.argument("user_id")
def sessions_list(user_id: str) -> None:
    """A user's live sessions as JSON lines (ids, IPs, times; not their data)."""
    from redundancy.sessions import get_session_manager

    for s in get_session_manager().sync.list_sessions(user_id):
        click.echo(s.model_dump_json(exclude={"data"}))


@sessions_group.command("revoke")
@click.argument("user_id")
def sessions_revoke(user_id: str) -> None:
    """End every session of USER_ID (log out everywhere)."""
    from redundancy.sessions import get_session_manager

    click.echo(f"revoked {get_session_manager().sync.revoke_all_sessions(user_id)} sessions")
