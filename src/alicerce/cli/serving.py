"""Serving commands: `serve`, and `keys create | list | revoke | audit`."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated

import typer

from alicerce.cli.common import HomeOpt, JsonOpt, app, emit, open_home
from alicerce.config import Settings

keys_app = typer.Typer(no_args_is_help=True,
                       help="API keys for the server: create (shown once), list, revoke.")
app.add_typer(keys_app, name="keys")


@app.command()
def serve(home: HomeOpt = None,
          host: Annotated[str | None, typer.Option(help="[default: setting host, 127.0.0.1]")]
          = None,
          port: Annotated[int | None, typer.Option(help="[default: setting port, 8000]")]
          = None,
          no_auth: Annotated[bool, typer.Option(
              "--no-auth", help="No API keys (allowed on a loopback address only).")] = False,
          log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info") -> None:
    """Serve the OpenAI-compatible API, the native routes and the chat page at /."""
    import uvicorn

    from alicerce.server import check_bind, create_app

    settings = Settings.load(home=home, host=host, port=port,
                             auth=False if no_auth else None)
    check_bind(settings.host, settings.auth)
    typer.echo(f"Alicerce on http://{settings.host}:{settings.port}/ (home {settings.home}, "
               f"auth {'on' if settings.auth else 'off'})", err=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=log_level, timeout_graceful_shutdown=5)


@keys_app.command()
def create(name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
           scopes: Annotated[str, typer.Option(help=(
               "Comma-separated: ask, ingest, admin, models (raw models for a key with "
               "--collections), unguarded (raw models without the default rails)."))] = "ask",
           collections: Annotated[str | None, typer.Option(
               help="Comma-separated collections (apps) the key may use [default: all].")]
           = None,
           rpm: Annotated[int | None, typer.Option(help="Requests per minute "
                                                        "[default: setting key_rpm].")] = None,
           tpm: Annotated[int | None, typer.Option(help="Tokens per minute "
                                                        "[default: setting key_tpm].")] = None,
           home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Create a key and print it once: only a salted hash is kept."""
    with open_home(home) as alc:
        s = alc.settings
        key, secret = alc.keys.create(
            name, [x.strip() for x in scopes.split(",") if x.strip()],
            [x.strip() for x in collections.split(",") if x.strip()] if collections else None,
            rpm or s.key_rpm, tpm or s.key_tpm)
    if as_json:
        emit({**asdict(key), "key": secret})
        return
    typer.echo(secret)
    typer.echo(f"id {key.id}, scopes {','.join(key.scopes)}, collections "
               f"{','.join(key.collections) if key.collections else 'all'}, {key.rpm} rpm, "
               f"{key.tpm} tpm. Store it now: it is not shown again.", err=True)


@keys_app.command("list")
def list_(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Every key (never the secret): id, name, scopes, collections, limits, state."""
    with open_home(home) as alc:
        keys = alc.keys.all()
    if as_json:
        emit([asdict(k) for k in keys])
        return
    for k in keys:
        state = "revoked " + _when(k.revoked_at) if k.revoked_at else "active"
        typer.echo(f"{k.id}  {k.name:<20} {','.join(k.scopes):<16} "
                   f"{','.join(k.collections) if k.collections else 'all':<20} "
                   f"{k.rpm:>5} rpm {k.tpm:>8} tpm  {state}")


@keys_app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (see `keys list`).")],
           home: HomeOpt = None) -> None:
    """Revoke a key: the server refuses it from the next request on."""
    with open_home(home) as alc:
        key = alc.keys.revoke(key_id)
    typer.echo(f"revoked {key.id} ({key.name})")


@keys_app.command()
def audit(limit: Annotated[int, typer.Option(help="Newest entries to show.")] = 50,
          home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """The audit log: key changes and ingestion through the server, newest first."""
    with open_home(home) as alc:
        rows = alc.keys.audit_log(limit)
    if as_json:
        emit([asdict(r) for r in rows])
        return
    for r in rows:
        typer.echo(f"{_when(r.at)}  {r.actor:<10} {r.action:<20} {r.target:<20} {r.detail}")


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at or 0))
