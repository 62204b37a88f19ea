"""`ragstream reindex`: replay a topic into a new collection and swap the alias (ragstream/reindex.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import click

from ragstream.cli.app import UserError, cli, friendly, record_admin_action, say, settings


def _when(value: str) -> datetime:
    """ISO 8601 (UTC unless it says otherwise) or a duration ago: 90s, 15m, 2h, 1d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return datetime.now(timezone.utc) - timedelta(seconds=float(value[:-1]) * units[value[-1]])
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"--since {value!r}: give an ISO 8601 time (2026-01-31T08:00) or a duration ago "
                        "(90s, 15m, 2h, 1d)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@cli.command()
@click.option("--from", "source", type=click.Choice(["documents", "chunks"]), default="documents", show_default=True,
              help="Replay rag.documents (re-chunk, re-embed) or rag.chunks (re-embed only; while it still holds "
                   "every document's chunks).")
@click.option("--model", default=None, metavar="MODEL",
              help="The embedding model of the new collection: onnx, onnx-int8, local (backends), or a remote "
                   "model name (RAGSTREAM_EMBED_URL serves it).")
@click.option("--chunk-tokens", type=int, default=None, help="Chunk size in model tokens (RAGSTREAM_CHUNK_MAX_TOKENS).")
@click.option("--chunk-overlap", type=int, default=None, help="Overlap in tokens (RAGSTREAM_CHUNK_OVERLAP_TOKENS).")
@click.option("--since", default=None, metavar="TIME",
              help="Repair instead: replay rag.documents from TIME (ISO 8601 or 15m, 2h, 1d ago) into the current "
                   "collection.")
@click.option("--rollback", is_flag=True, help="Move the alias back to the collection the last reindex replaced "
                                               "(replaying the edits made since into it first).")
@click.option("--gc", "collect", is_flag=True, help="Drop the collections the alias does not point at.")
@click.option("--source-id", "source_ids", multiple=True, metavar="SOURCE",
              help="Verify only these sources before the swap (default: every source of this home that can list).")
@click.option("--verify-timeout", default=300.0, show_default=True, metavar="SECONDS",
              help="How long the new collection may keep differing from the sources before the reindex gives up "
                   "(edits in flight show as drift until applied).")
@click.option("--stall-timeout", default=1800.0, show_default=True, metavar="SECONDS",
              help="Give up (alias untouched) when the replay has not moved for this long; a large topic may "
                   "take hours, which is fine while it moves.")
@click.option("--progress-interval", default=10.0, show_default=True, metavar="SECONDS",
              help="When the output is not a terminal: seconds between two progress lines.")
@friendly
def reindex(source: str, model: str | None, chunk_tokens: int | None, chunk_overlap: int | None, since: str | None,
            rollback: bool, collect: bool, source_ids: tuple[str, ...], verify_timeout: float,
            stall_timeout: float, progress_interval: float) -> None:
    """Rebuild the index from Kafka into a new collection, then swap the alias (blue-green).

    \b
    Searches keep reading the current collection while the new one fills: this process
    replays rag.documents (or rag.chunks) and rag.acl under a new consumer group with the
    new chunker/model, follows them after catching up (edits made meanwhile are applied),
    and when its lag is 0 and verify finds no drift in the new collection it moves the
    alias RAGSTREAM_COLLECTION in one call. Then the local chunk/embed/index (and dsr)
    workers are restarted with the new settings; keep them in your environment (.env)
    so the next `ragstream up` starts the workers with them too. The old collection stays
    until --gc; --rollback swaps back.

    \b
      ragstream reindex --chunk-tokens 120        a new chunk size
      ragstream reindex --from chunks --model X   a new model, chunks as they are
      ragstream reindex --since 2h                repair: replay the last two hours
      ragstream reindex --rollback | --gc
    """
    from ragstream import reindex as ri

    s = settings()
    chosen = [n for n, on in (("--since", since is not None), ("--rollback", rollback), ("--gc", collect)) if on]
    changes: dict[str, Any] = {}
    if chunk_tokens is not None:
        changes["chunk_max_tokens"] = chunk_tokens
    if chunk_overlap is not None:
        changes["chunk_overlap_tokens"] = chunk_overlap
    if model is not None:
        changes.update({"embed_backend": model} if model in ("onnx", "onnx-int8", "local")
                       else {"embed_backend": "openai", "embed_model": model})
    if len(chosen) > 1 or (chosen and changes):
        raise UserError(f"{' and '.join(chosen + (['new settings'] if changes else []))} do not go together")
    progress = ri.ReplayProgress("replay", interval=progress_interval)
    try:
        if collect:
            ri.gc(s, say=say)
            return
        if since is not None:
            when = _when(since)
            ri.repair_since(s, when, say=say, progress=progress)
            record_admin_action(s, "index.repair", s.collection, {"since": when.isoformat()})
            return
        kw: dict[str, Any] = {"verify_timeout": verify_timeout, "stall_timeout": stall_timeout, "progress": progress,
                              "source_ids": list(source_ids) or None}
        out = ri.rollback(s, say=say, **kw) if rollback else ri.reindex(s, changes, source=source, say=say, **kw)
    except ri.ReindexError as exc:
        raise UserError(f"ragstream reindex: {exc}") from None
    record_admin_action(s, "index.rollback" if rollback else "index.reindex", s.collection,
                        {"from": out.before, "to": out.after, "documents": out.documents})
    say(f"done in {out.seconds:.0f}s: search reads {out.after}; the previous collection {out.before} stays until "
        "`ragstream reindex --gc` (`--rollback` swaps back)")
