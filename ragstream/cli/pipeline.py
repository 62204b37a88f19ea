"""`ragstream up`, `down`, `verify`, `check`: run the pipeline and check what it did."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from ragstream.cli.app import cli, friendly, print_topic_changes, say, settings, UserError
from ragstream.settings import PROJECT_ROOT, Settings


# ---------------------------------------------------------------------------------- up
SAMPLES = PROJECT_ROOT / "samples"


@cli.command()
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--watch/--no-watch", default=True, show_default=True,
              help="Keep watching the folder after the initial load (Ctrl-C stops).")
@click.option("--check/--no-check", default=False, show_default=True, help="Also run a broker round trip first.")
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching (repeatable; default: all).")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Skip files matching (repeatable; hidden, temporary and editor files are always skipped).")
@click.option("--verbose", "-v", is_flag=True,
              help="Also print the per-file log lines (always written to <home>/logs/up.log).")
@click.option("--progress-interval", default=10.0, show_default=True, metavar="SECONDS",
              help="When the output is not a terminal: seconds between two progress lines.")
@friendly
def up(folder: str | None, watch: bool, check: bool, include: tuple[str, ...], exclude: tuple[str, ...],
       verbose: bool, progress_interval: float) -> None:
    """Run the whole pipeline on FOLDER (or the declared sources): stack, topics, workers, watchers.

    Starts what is not running yet (Kafka, milvus-lite, the compliance, chunk, embed and
    index workers, the API; each worker restarted by its supervisor if it exits),
    publishes the folder's documents, shows progress until they are searchable — files
    published, documents indexed, chunks embedded, dead letters, ETA; live on a terminal,
    a plain line every --progress-interval seconds otherwise — checks the result with
    `ragstream verify`, then keeps the index in step with the folder. Without FOLDER it
    runs the sources RAGSTREAM_SOURCES_FILE declares, one after the other, then watches
    them all; without either, it indexes the bundled samples.
    """
    import threading

    from infra.stack import APPS, INFRA, WORKERS, Stack
    from ragstream.admin import ensure_topics, wait_drained
    from ragstream.connector import Capability
    from ragstream.progress import Progress, route_logs
    from ragstream.verify import can_verify

    s = settings()
    log_path = route_logs(s, verbose)
    sources = _sources(s, folder, include, exclude)
    t0 = time.monotonic()
    for name, new in Stack(s, INFRA).up(progress=say).items():
        say(f"{name}: {'started' if new else 'already running'}")
    print_topic_changes(ensure_topics(s))
    if check:
        _run_check(s, 1000)
    say("starting the stage workers and the API (the embed worker loads its model)...")
    for name, new in Stack(s, WORKERS + APPS).up(progress=say).items():
        say(f"{name}: {'started' if new else 'already running'}")

    from prometheus_client import start_http_server

    from streams.registry import PIPELINE, PRODUCER_PORT_OFFSET

    producer_port = s.metrics_port_base + PRODUCER_PORT_OFFSET
    start_http_server(producer_port, addr="127.0.0.1")  # the producer's own metrics
    pulled = [src for src in sources if {Capability.full_listing, Capability.incremental} & src.capabilities]
    for src in sources:
        if src not in pulled:
            say(f"{src.source_id} ({src.kind}): receives pushes at POST /v1/webhooks/{src.source_id} on the API")
    for source in pulled:
        total = source.estimate()
        where = f" under {source.root}" if source.kind == "filesystem" else ""  # type: ignore[attr-defined]
        say(f"{source.source_id} ({source.kind}): {total if total is not None else 'an unknown number of'} "
            f"item(s){where}  (per-item log: {log_path})")
        progress = Progress(s, source.source_id, total, interval=progress_interval)
        stats = source.sync(progress=progress.file_done, on_publish=progress.published)
        caught_up = wait_drained(s, timeout=1800, on_tick=progress.tick)
        snap = progress.close()
        say(f"published: {stats}")
        if not caught_up:
            raise UserError("the pipeline did not catch up within 30 minutes; see `ragstream stack status` and the "
                            "worker logs")
        say(f"indexed {snap.indexed} of {snap.published} document(s) ({snap.chunks:,} chunks embedded, "
            f"{snap.dead_letters} dead letter(s)) in {time.monotonic() - t0:.1f}s")
        if can_verify(source):
            _report_verify(s, source)
    say("")
    say('Search:   ragstream search "your question"        (as you; searching as someone else needs an admin --key)')
    say(f"Metrics:  http://127.0.0.1:{s.metrics_port_base}..{producer_port}/metrics  "
        f"({', '.join(PIPELINE)} workers; this producer)")
    say(f"API:      http://127.0.0.1:{s.api_port}/docs  (keys: ragstream apikey create NAME --role user)")
    say(f"Logs:     {s.home / 'logs'}        Stop: ragstream down")
    live = [src for src in pulled if Capability.incremental in src.capabilities]
    if not watch or not live:
        return
    say(f"watching {', '.join(src.source_id for src in live)} (Ctrl-C to stop watching; the workers keep running)")
    stop = threading.Event()
    for source in live:
        if s.verify_interval_s > 0 and can_verify(source):
            threading.Thread(target=_verify_periodically, args=(s, source, stop), daemon=True,
                             name=f"verify-{source.source_id}").start()
        threading.Thread(target=source.watch, args=(stop,), kwargs={"on_sync": _synced(source)}, daemon=True,
                         name=f"watch-{source.source_id}").start()
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        stop.set()


def _synced(source: Any) -> Any:
    return lambda stats: say(f"{source.source_id}: synced: {stats}")


def _sources(s: Settings, folder: str | None, include: tuple[str, ...], exclude: tuple[str, ...]) -> list[Any]:
    """FOLDER if given; else the sources RAGSTREAM_SOURCES_FILE declares; else the samples."""
    from producers.filesystem import DEFAULT_EXCLUDE, FilesystemSource
    from ragstream.connector import SourcesFileError, declared_sources

    if folder or s.sources_file is None:
        root = Path(folder) if folder else SAMPLES
        return [FilesystemSource(s, root, include=include or ("**",), exclude=DEFAULT_EXCLUDE + exclude)]
    if include or exclude:
        raise UserError("--include/--exclude apply to FOLDER; a declared source has its own in the sources file")
    try:
        declared = declared_sources(s)
    except SourcesFileError as exc:
        raise UserError(f"ragstream: {exc}") from None
    if not declared:
        raise UserError(f"{s.sources_file} declares no source; add a [sources.<id>] table or give a FOLDER")
    return declared


def _verify_periodically(s: Settings, source: Any, stop: Any) -> None:
    """Keep ragstream_verify_drift_documents current on this process's metrics page while
    watching; only when nothing is in flight (documents on their way are not drift)."""
    from ragstream.admin import stage_lag
    from ragstream.logging import get_logger
    from ragstream.verify import IndexView, chunker_ids, verify_source

    log = get_logger("ragstream.up")
    index = ids = None
    while not stop.wait(s.verify_interval_s):
        try:
            if any(stage_lag(s, ("compliance", "chunk", "embed", "index")).values()):
                continue
            index, ids = index or IndexView(s), ids or chunker_ids(s)
            report = verify_source(s, source, index=index, chunk_ids=ids)
            (log.warning if report.drift else log.info)("verified", source=report.source, drift=len(report.drift),
                                                        **report.counts())
        except Exception as exc:  # noqa: BLE001 - a check that failed now is tried again next interval
            log.warning("verify failed; trying again next interval", error=f"{type(exc).__name__}: {exc}")


def _report_verify(s: Settings, source: Any) -> None:
    """One line from the reconciler after a load (its gauge goes on this process's metrics page)."""
    from ragstream.verify import verify_source

    report = verify_source(s, source)
    counts = report.counts()
    excluded = (f"{counts['skipped']} skipped, {counts['dead_lettered']} dead-lettered, {counts['blocked']} blocked "
                f"(reasons: ragstream verify {source.source_id})")
    if report.drift:
        say(f"verify: DRIFT in {len(report.drift)} document(s): " + ", ".join(
            f"{counts[k]} {k}" for k in ("missing", "stale", "orphan") if counts[k]) + f"; {excluded}")
    else:
        say(f"verify: the index holds the source's {report.listed} document(s), no drift; {excluded}")


@cli.command()
@friendly
def down() -> None:
    """Stop the API, the stage workers and the local stack (data is kept)."""
    from infra.stack import APPS, INFRA, WORKERS, Stack, running_replicas

    s = settings()
    for name, was_running in Stack(s, INFRA + WORKERS + running_replicas(s) + APPS).down().items():
        say(f"{name}: {'stopped' if was_running else 'not running'}")


# ------------------------------------------------------------------------------ verify
@cli.command()
@click.argument("source", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--all-findings/--drift-only", default=True, show_default=True,
              help="Also list the documents skipped, dead-lettered or blocked on purpose (not drift).")
@friendly
def verify(source: str | None, as_json: bool, all_findings: bool) -> None:
    """Compare a source's current state with the index; exit 1 on drift.

    SOURCE is a source id (fs-docs-1a2b3c, as `ragstream up` prints it) or the folder a
    file-system source indexes; without it, every source known in this home. For each
    document the source holds, the index must hold the version the source published, the
    chunk ids its compliant text (rag.documents) chunks into, and the source's ACL.

    \b
    Reported: missing (in the source, not the index), stale (another version, other
    chunk ids, another ACL), orphan (in the index, not the source); and, as not drift,
    skipped and dead-lettered documents with their reasons and documents the compliance
    policy blocks. Run it when the pipeline is idle: documents in flight show as drift.
    The counts also go to <home>/metrics/verify.prom (ragstream_verify_drift_documents).
    """
    import json

    from producers.filesystem import FilesystemSource
    from ragstream.connector import ConnectorError, known_sources, open_source
    from ragstream.verify import IndexView, can_verify, chunker_ids, format_report, verify_source, write_textfile

    s = settings()

    class _NoPublisher:  # verify reads; it never publishes
        def flush(self) -> None:
            pass

    none: Any = _NoPublisher()
    if source is None:
        if not known_sources(s):
            raise UserError(f"no source has synced into {s.home} yet; run `ragstream up FOLDER` first")
        sources = []
        for sid in known_sources(s):
            try:
                sources.append(open_source(s, sid, publisher=none))
            except ConnectorError as exc:  # one source that cannot be opened does not hide the others
                say(f"{sid}: not verified — {exc}")
    elif source not in known_sources(s) and Path(source).is_dir():  # a folder, given by its path
        sources = [FilesystemSource(s, Path(source), publisher=none)]
    else:
        try:
            sources = [open_source(s, source, publisher=none)]
        except ConnectorError as exc:
            known = ", ".join(known_sources(s)) or "none"
            raise UserError(f"ragstream: {exc}; known sources: {known}. Give a source id or a folder.") from None
    for src in [src for src in sources if not can_verify(src)]:
        say(f"{src.source_id}: not verified — a {src.kind} source cannot list its documents")
    sources = [src for src in sources if can_verify(src)]
    index, ids = IndexView(s), chunker_ids(s)
    reports = [verify_source(s, src, index=index, chunk_ids=ids) for src in sources]
    write_textfile(s)
    drift = sum(len(r.drift) for r in reports)
    if as_json:
        click.echo(json.dumps({"drift": drift, "sources": [r.to_dict() for r in reports]}, indent=2))
    else:
        for r in reports:
            for line in format_report(r, show_excluded=all_findings):
                click.echo(line)
        say(f"drift: {drift} document(s)" if drift else "no drift: the index holds what the source holds")
    if drift:
        sys.exit(1)


# ------------------------------------------------------------------------------- check
@cli.command()
@click.option("-n", "--events", default=1000, show_default=True, help="How many events to send round.")
@friendly
def check(events: int) -> None:
    """Publish events to rag.selftest and read them back: nothing lost, duplicated or reordered."""
    _run_check(settings(), events)


def _run_check(s: Settings, n: int) -> None:
    from ragstream.selfcheck import round_trip

    result = round_trip(s, n=n, show_progress=sys.stderr.isatty())
    say(f"round trip: {result.published} published, {result.consumed} consumed in {result.total_s:.2f}s "
        f"(publish {result.published / max(result.publish_s, 1e-9):,.0f} ev/s); "
        f"lost={result.lost} duplicated={result.duplicated} out_of_order={result.out_of_order}")
    if not result.ok:
        raise UserError("round trip FAILED: " + "; ".join(result.problems))
