"""`ragstream sources`: the sources RAGSTREAM_SOURCES_FILE declares — list, test, sync."""

from __future__ import annotations

from typing import Any

import click

from ragstream.cli.app import UserError, cli, friendly, say, settings


@cli.group()
def sources() -> None:
    """The sources declared in RAGSTREAM_SOURCES_FILE (one [sources.<id>] table each)."""


def _declared() -> list[Any]:
    from ragstream.connector import SourcesFileError, declared_sources

    s = settings()
    if s.sources_file is None:
        raise UserError("no sources file: set RAGSTREAM_SOURCES_FILE to a TOML file with one [sources.<id>] table "
                        "per source (see docs/sources.md)")
    try:
        return declared_sources(s)
    except SourcesFileError as exc:
        raise UserError(f"ragstream: {exc}") from None


def _one(source_id: str) -> Any:
    found = {src.source_id: src for src in _declared()}
    if source_id not in found:
        raise UserError(f"no source {source_id!r} is declared in {settings().sources_file}; "
                        f"declared: {', '.join(found) or 'none'}")
    return found[source_id]


@sources.command("list")
@friendly
def sources_list() -> None:
    """Each declared source: its kind and capabilities; and sources known here but no longer declared."""
    from ragstream.connector import known_sources

    declared = _declared()
    for src in declared:
        caps = ", ".join(sorted(c.value for c in src.capabilities)) or "push only"
        click.echo(f"{src.source_id}\t{src.kind}\t{caps}")
    ids = {src.source_id for src in declared}
    for sid, kind in known_sources(settings()).items():
        if sid not in ids:
            click.echo(f"{sid}\t{kind}\t(not declared; its cursor is in {settings().home / 'sources'})")


@sources.command("test")
@click.argument("source_id")
@friendly
def sources_test(source_id: str) -> None:
    """Reach SOURCE_ID with its credentials and say what was found (nothing is published)."""
    from ragstream.connector import ConnectorError

    src = _one(source_id)
    try:
        say(f"{source_id}: ok — {src.test_connection()}")
    except ConnectorError as exc:
        raise UserError(f"{source_id}: {exc}") from None


@sources.command("sync")
@click.argument("source_id")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the pipeline has indexed what was published.")
@friendly
def sources_sync(source_id: str, wait: bool) -> None:
    """One full sync of SOURCE_ID: publish what changed since its cursor (deletions included)."""
    from ragstream.admin import wait_drained
    from ragstream.connector import ConnectorError
    from ragstream.progress import Progress

    s = settings()
    src = _one(source_id)
    progress = Progress(s, src.source_id, src.estimate())
    try:
        stats = src.sync(progress=progress.file_done, on_publish=progress.published)
    except ConnectorError as exc:
        progress.close()
        raise UserError(f"{source_id}: {exc}") from None
    if wait and not wait_drained(s, timeout=1800, on_tick=progress.tick):
        progress.close()
        raise UserError("the pipeline did not catch up within 30 minutes; see `ragstream stack status`")
    progress.close()
    say(f"{source_id}: {stats}")
