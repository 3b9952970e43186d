"""``crd serve`` (the HTTP gateway) and ``crd keys`` (its API keys)."""

from __future__ import annotations

import click

from redundancy.errors import ConfigurationError


@click.command()
@click.option("--host", default=None, help="address to bind (env API_HOST, default 127.0.0.1)")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="env API_PORT (8000)")
@click.option(
    "--workers", type=click.IntRange(1, 64), default=None, help="processes (env API_WORKERS, 1)"
)
@click.option(
    "--forwarded-allow-ips",
    default=None,
    help="proxies trusted for X-Forwarded-For/-Proto (client IP, TLS: Secure cookies)",
)
def serve(
    host: str | None, port: int | None, workers: int | None, forwarded_allow_ips: str | None
) -> None:
    """Run the HTTP API (needs CELERY_BROKER_URL and REDIS_URL; see README "HTTP API")."""
    from redundancy.api.server import serve as run_server
    from redundancy.config import get_settings

    s = get_settings()
    run_server(
        host or s.api_host,
        port or s.api_port,
        workers or s.api_workers,
        settings=s,
        forwarded_allow_ips=forwarded_allow_ips,
    )


@click.group("keys")
def keys_group() -> None:
    """Create, list or revoke a user's API keys (stored hashed in REDIS_URL)."""
    from redundancy.config import get_settings

    if not get_settings().sessions_url:
        raise ConfigurationError(
            "REDIS_URL is not set: API keys live there, where `crd serve` reads them"
        )


@keys_group.command("create")
@click.argument("user_id")
@click.option("--name", default="", help="a label to tell keys apart in `crd keys list`")
def keys_create(user_id: str, name: str) -> None:
    """A new key for USER_ID, printed once (only its digest is stored)."""
    from redundancy.api import apikeys
    from redundancy.api.store import run_blocking

    key, info = run_blocking(apikeys.create(user_id, name))
    click.echo(key)
    click.echo(
        f"key {info.key_id} for {user_id}: shown once, keep it secret "
        f"(send it as 'Authorization: Bearer <key>')",
        err=True,
    )


@keys_group.command("list")
@click.argument("user_id")
def keys_list(user_id: str) -> None:
    """USER_ID's keys as JSON lines (ids, names, times; never the keys)."""
    from redundancy.api import apikeys
    from redundancy.api.store import run_blocking

    for info in run_blocking(apikeys.list_keys(user_id)):
        click.echo(info.model_dump_json())


@keys_group.command("revoke")
@click.argument("user_id")
@click.option("--key", "key_id", default=None, help="only this key id (default: all keys)")
def keys_revoke(user_id: str, key_id: str | None) -> None:
    """Revoke USER_ID's keys: the next request with one is refused on every instance,
    and sessions opened with one end."""
    from redundancy.api import apikeys
    from redundancy.api.store import run_blocking

    revoked = run_blocking(apikeys.revoke(user_id, key_id))
    click.echo(f"revoked {len(revoked)} keys" + (f": {', '.join(revoked)}" if revoked else ""))
