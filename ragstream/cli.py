"""The ``ragstream`` command line."""

from __future__ import annotations

import functools
import re
import sys
import time
from typing import Any, Callable

import click

from pathlib import Path

from ragstream.settings import PROJECT_ROOT, Settings, SettingsError, get_settings
from schemas.topics import STAGES as DLQ_STAGES
from streams.registry import STAGES as STAGE_REGISTRY


class UserError(click.ClickException):
    """A failure the user can act on: printed without a traceback, exit status 1."""

    def format_message(self) -> str:
        return self.message


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's expected failures into clear messages instead of tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from confluent_kafka import KafkaException

        from infra.stack import StackError
        from ragstream.publisher import PublishError
        from ragstream.admin import AdminError

        try:
            return fn(*args, **kwargs)
        except SettingsError as exc:
            raise UserError(str(exc)) from None
        except (StackError, AdminError, PublishError) as exc:
            raise UserError(f"ragstream: {exc}") from None
        except KafkaException as exc:
            raise UserError(
                f"ragstream: Kafka said: {exc.args[0].str()}\n  → check `ragstream stack status` and the broker log, "
                "then retry."
            ) from None

    return wrapper


def settings() -> Settings:
    """The validated settings, including the files they name (policy, auth): every command
    fails at start-up, with what is wrong, rather than at first use."""
    try:
        s = get_settings()
    except SettingsError as exc:
        raise UserError(str(exc)) from None
    _check_files(s)
    return s


@functools.cache
def _check_files(s: Settings) -> None:
    from ragstream.auth import AuthConfigError, load_auth_config
    from streams.policy import PolicyError, load_policy

    try:
        if s.policy_file is not None:
            load_policy(s.policy_file)
        if s.auth_file is not None:
            load_auth_config(s.auth_file)
    except (PolicyError, AuthConfigError) as exc:
        raise UserError(f"ragstream: invalid configuration:\n  {exc}\n"
                        "Fix the file (or the variable that names it) and run the command again.") from None


def say(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ragstream")
@click.option("--home", type=click.Path(file_okay=False), default=None,
              help="Local stack home (default: RAGSTREAM_HOME or ./.ragstream).")
def cli(home: str | None) -> None:
    """ragstream keeps a retrieval index (Milvus) in step with its sources, over Apache Kafka.

    \b
    Start here:
      ragstream up [FOLDER]       index a folder and keep it in step (default: the bundled samples)
      ragstream search "text"     search what you may see
      ragstream stack status      what is running, where its logs and metrics are
      ragstream verify [SOURCE]   does the index hold exactly what the source holds?
      ragstream down              stop everything

    Configuration comes from RAGSTREAM_* environment variables (or .env); see the README.
    """
    import os

    from ragstream.logging import configure_logging

    from ragstream.store import private_home

    if home:
        os.environ["RAGSTREAM_HOME"] = home
        get_settings.cache_clear()
    s = settings()
    private_home(s.home)  # the home 0700 (main() set umask 077 for this process and what it starts)
    configure_logging(s.log_level, s.log_format)


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
    """Run the whole pipeline on FOLDER: stack, topics, stage workers, file watcher.

    Starts what is not running yet (Kafka, milvus-lite, the compliance, chunk, embed and
    index workers, the API; each worker restarted by its supervisor if it exits),
    publishes the folder's documents, shows progress until they are searchable — files
    published, documents indexed, chunks embedded, dead letters, ETA; live on a terminal,
    a plain line every --progress-interval seconds otherwise — checks the result with
    `ragstream verify`, then keeps the index in step with the folder. Without FOLDER it
    indexes the bundled samples.
    """
    import threading

    from infra.stack import APPS, INFRA, WORKERS, Stack
    from producers.filesystem import FilesystemSource
    from ragstream.admin import ensure_topics, wait_drained
    from ragstream.progress import Progress, route_logs

    s = settings()
    log_path = route_logs(s, verbose)
    root = Path(folder) if folder else SAMPLES
    t0 = time.monotonic()
    for name, new in Stack(s, INFRA).up(progress=say).items():
        say(f"{name}: {'started' if new else 'already running'}")
    _print_topic_changes(ensure_topics(s))
    if check:
        _run_check(s, 1000)
    say("starting the stage workers and the API (the embed worker loads its model)...")
    for name, new in Stack(s, WORKERS + APPS).up(progress=say).items():
        say(f"{name}: {'started' if new else 'already running'}")

    from prometheus_client import start_http_server

    from streams.registry import PIPELINE, PRODUCER_PORT_OFFSET

    producer_port = s.metrics_port_base + PRODUCER_PORT_OFFSET
    start_http_server(producer_port, addr="127.0.0.1")  # the producer's own metrics
    from producers.filesystem import DEFAULT_EXCLUDE

    source = FilesystemSource(s, root, include=include or ("**",), exclude=DEFAULT_EXCLUDE + exclude)
    listing = source.listing()
    say(f"{source.source_id}: {len(listing)} file(s) under {source.root}  (per-file log: {log_path})")
    progress = Progress(s, source.source_id or "", len(set(listing) | set(source.files) | set(source.skipped_files)),
                        interval=progress_interval)
    stats = source.sync(progress=progress.file_done, on_publish=progress.published)
    caught_up = wait_drained(s, timeout=1800, on_tick=progress.tick)
    snap = progress.close()
    say(f"published: {stats}")
    if not caught_up:
        raise UserError("the pipeline did not catch up within 30 minutes; see `ragstream stack status` and the worker logs")
    say(f"indexed {snap.indexed} of {snap.published} document(s) ({snap.chunks:,} chunks embedded, "
        f"{snap.dead_letters} dead letter(s)) in {time.monotonic() - t0:.1f}s")
    _report_verify(s, source)
    say("")
    say('Search:   ragstream search "your question"        (as you; searching as someone else needs an admin --key)')
    say(f"Metrics:  http://127.0.0.1:{s.metrics_port_base}..{producer_port}/metrics  "
        f"({', '.join(PIPELINE)} workers; this producer)")
    say(f"API:      http://127.0.0.1:{s.api_port}/docs  (keys: ragstream apikey create NAME --role user)")
    say(f"Logs:     {s.home / 'logs'}        Stop: ragstream down")
    if not watch:
        return
    say(f"watching {source.root} (Ctrl-C to stop watching; the workers keep running)")
    stop = threading.Event()
    if s.verify_interval_s > 0:
        threading.Thread(target=_verify_periodically, args=(s, source, stop), daemon=True,
                         name="verify").start()
    try:
        source.watch(stop, on_sync=lambda st: say(f"synced: {st}"))
    except KeyboardInterrupt:
        stop.set()


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
    from infra.stack import APPS, INFRA, WORKERS, Stack

    for name, was_running in Stack(settings(), INFRA + WORKERS + APPS).down().items():
        say(f"{name}: {'stopped' if was_running else 'not running'}")


# ------------------------------------------------------------------------------ search
@cli.command()
@click.argument("query")
@click.option("--limit", "-n", default=5, show_default=True, help="How many results.")
@click.option("--as", "principals", multiple=True, metavar="PRINCIPAL",
              help="Search as user:<id> / group:<id> / public (repeatable). Default: you and your groups. "
                   "Principals that are not yours need --key with an admin key.")
@click.option("--key", envvar="RAGSTREAM_API_KEY", default=None, metavar="API_KEY",
              help="An API key whose role grants principals:assume (admin): lets --as name anyone. "
                   "Read from RAGSTREAM_API_KEY when not given.")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "lexical"]), default=None,
              help="hybrid: words (BM25), meaning (vectors) and verbatim identifiers, fused by rank (default); "
                   "dense: meaning only; lexical: words and identifiers only.")
@click.option("--source", "sources", multiple=True, metavar="SOURCE", help="Only this source (repeatable).")
@click.option("--classification", "classifications", multiple=True,
              type=click.Choice(["public", "internal", "confidential", "restricted"]),
              help="Only documents of this classification (repeatable).")
@click.option("--modified-after", type=click.DateTime(), default=None, metavar="DATE",
              help="Only documents modified at or after this date/time (UTC), e.g. 2026-01-31.")
@click.option("--modified-before", type=click.DateTime(), default=None, metavar="DATE",
              help="Only documents modified before this date/time (UTC).")
@friendly
def search(query: str, limit: int, principals: tuple[str, ...], key: str | None, mode: str | None,
           sources: tuple[str, ...], classifications: tuple[str, ...], modified_after: Any,
           modified_before: Any) -> None:
    """Search the index; only documents the principals may read are considered.

    \b
    Who is trusted with what: you search as yourself (your login and your groups, as the
    file-system producer names them). --as with any other principal is impersonation: it
    needs an API key of a role with principals:assume (admin), checked against the key
    store in RAGSTREAM_HOME. This check is the CLI's; the Kafka broker and milvus-lite of
    the local stack do not yet authenticate clients (see docs/security.md).
    """
    from datetime import timezone

    from consumers.milvus import DEFAULT_MODE, IndexSchemaError, MilvusIndex, SearchFilters
    from ragstream.snippets import snippet
    from streams.embedding import make_embedder, model_dim

    s = settings()
    own = _local_principals()
    who = list(principals) or own
    _may_search_as(s, who, own, key)
    epoch = (lambda d: None if d is None else int(d.replace(tzinfo=timezone.utc).timestamp()))
    filters = SearchFilters(sources=sources, classifications=classifications,
                            modified_after=epoch(modified_after), modified_before=epoch(modified_before))
    index = MilvusIndex(s.resolved_milvus_uri, s.collection, model_dim(s), acl_refresh_s=s.acl_refresh_s)
    mode = index.effective_mode(mode or DEFAULT_MODE)
    vector = make_embedder(s).embed([query])[0] if mode != "lexical" else None
    try:
        hits = index.search(vector, who, limit=limit, query=query, mode=mode, filters=filters)
    except IndexSchemaError as exc:
        raise UserError(str(exc)) from None
    if not hits:
        say(f"no results visible to {', '.join(who)}")
        return
    for rank, h in enumerate(hits, 1):
        click.echo(f"{rank}. [{h.score:.3f}] {h.title}  ({h.source})")
        click.echo(f"   {h.uri}" + (f"  § {h.heading}" if h.heading else ""))
        text, spans = snippet(h.text, query, width=200)
        marked, at = [], 0
        for start, end in spans:
            marked += [text[at:start], click.style(text[start:end], bold=True)]
            at = end
        click.echo("   " + "".join([*marked, text[at:]]))


def _may_search_as(s: Settings, who: list[str], own: list[str], key: str | None) -> None:
    """Raise unless ``who`` are the caller's own principals or ``key`` may assume any."""
    foreign = sorted(set(who) - set(own) - {"public"})
    if not foreign:
        return
    if not key:
        raise UserError(f"--as {', '.join(foreign)}: not your principal(s) (yours: {', '.join(own)}, public); "
                        "searching as someone else needs --key with an admin API key (principals:assume)")
    from ragstream.auth import AuthError, Authenticator, load_auth_config

    auth = Authenticator(load_auth_config(s.auth_file), s.home)
    try:
        caller = auth.api_keys.authenticate(key)
    except AuthError as exc:
        raise UserError(f"--key: {exc}") from None
    if not auth.rbac.allows(caller.roles, "principals:assume"):
        raise UserError(f"--key: {caller.subject} may not search as others (its roles lack principals:assume)")
    _audit(s, "admin.search.as", ",".join(foreign), {"by": caller.subject})


def _local_principals() -> list[str]:
    """You, as the file-system producer names principals (same owner/group mapping)."""
    import os

    from producers.filesystem import group_name, user_name

    groups = {group_name(g) for g in os.getgroups()} | {group_name(os.getgid())}
    return [f"user:{user_name(os.getuid())}", *sorted(f"group:{g}" for g in groups)]


# ------------------------------------------------------------------------------- stack
@cli.group()
def stack() -> None:
    """Run the local stack: a Kafka broker (KRaft) and a milvus-lite server, on loopback."""


SERVICE_OPTION = click.option(
    "--service", "-s", "services", multiple=True,
    type=click.Choice(["kafka", "milvus", *(f"worker-{spec.name}" for spec in STAGE_REGISTRY), "api", "postgres",
                       "connect"]),
    help="Only this service (repeatable). Default: all.",
)


@stack.command("up")
@SERVICE_OPTION
@friendly
def stack_up(services: tuple[str, ...]) -> None:
    """Start the services and wait until they answer (harmless when already running)."""
    from infra.stack import Stack

    t0 = time.monotonic()
    for name, new in Stack(settings(), services or None).up(progress=say).items():
        say(f"{name}: {'started' if new else 'already running'}")
    say(f"ready in {time.monotonic() - t0:.1f}s")


@stack.command("down")
@SERVICE_OPTION
@friendly
def stack_down(services: tuple[str, ...]) -> None:
    """Stop the services and stage workers (SIGTERM, then SIGKILL after 30 s). Data is kept."""
    from infra.stack import APPS, INFRA, WORKERS, Stack

    for name, was_running in Stack(settings(), services or (INFRA + WORKERS + APPS)).down().items():
        say(f"{name}: {'stopped' if was_running else 'not running'}")


@stack.command("status")
@SERVICE_OPTION
@friendly
def stack_status(services: tuple[str, ...]) -> None:
    """Show each service: state, pid, address, restarts, resident memory and log file.

    \b
    States: ready; degraded (its /healthz answered 503: a partition makes no progress; the
    reason and the document follow on the next line); failed (503: its fetcher or agent
    crashed); restarting (it exited, its supervisor waits to restart it); starting/unhealthy
    (no answer yet); stopped.
    Exit status: 3 if Kafka or Milvus is not ready, 4 if a worker or the API is degraded or failed.
    """
    from infra.stack import APPS, INFRA, WORKERS, Stack

    rows = Stack(settings(), services or (INFRA + WORKERS + APPS)).status()
    for st in rows:
        rss = f"{st.rss / 2**20:.0f} MiB" if st.rss else "-"
        restarts = "-" if st.restarts is None else str(st.restarts)
        click.echo(f"{st.name:<18} {st.state:<19} pid={st.child_pid or st.pid or '-':<8} {st.address:<36} "
                   f"restarts={restarts:<3} rss={rss:<9} log={st.log}")
        if st.state in ("degraded", "failed"):
            click.echo(f"{'':<18} ↳ {st.reason}")
    if not all(st.ready for st in rows if st.name in INFRA):
        sys.exit(3)
    if any(st.state in ("degraded", "failed") for st in rows):
        sys.exit(4)


# ------------------------------------------------------------------------------ topics
@cli.group()
def topics() -> None:
    """The topic catalog (schemas/topics.py) and its application to the cluster."""


@topics.command("ensure")
@friendly
def topics_ensure() -> None:
    """Create missing topics and align partitions and configs with the catalog (idempotent)."""
    from ragstream.admin import ensure_topics

    _print_topic_changes(ensure_topics(settings()))


@topics.command("list")
def topics_list() -> None:
    """Print the catalog: name, partitions, key, cleanup policy, retention, purpose."""
    from schemas.topics import catalog

    for spec in catalog(settings()):
        retention = spec.config.get("retention.ms")
        keep = f"{int(retention) / 86_400_000:g}d" if retention else "-"
        click.echo(f"{spec.name:<20} p={spec.partitions:<3} key={spec.key:<10} "
                   f"{spec.config['cleanup.policy']:<8} retention={keep:<7} {spec.description}")


def _print_topic_changes(changes: list[Any]) -> None:
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
        if c.action != "unchanged":
            say(f"  {c.action:<9} {c.topic} {c.detail}")
    say("topics: " + ", ".join(f"{n} {a}" for a, n in counts.items()))


# ----------------------------------------------------------------------------- schemas
@cli.group()
def schemas() -> None:
    """The event contracts' JSON Schema files (schemas/json)."""


@schemas.command("export")
@click.option("--check", is_flag=True, help="Only report stale files; exit 1 if any.")
def schemas_export(check: bool) -> None:
    """Write schemas/json/<Contract>.schema.json from the pydantic models."""
    from schemas import export as ex

    if check:
        stale = ex.stale()
        if stale:
            raise UserError(f"stale JSON Schema: {', '.join(stale)}; run `ragstream schemas export`")
        say("JSON Schema files are up to date")
        return
    written = ex.export()
    say(f"wrote {len(written)} file(s) to {ex.JSON_DIR}" if written else "JSON Schema files are up to date")


# ------------------------------------------------------------------------------ worker
@cli.command()
@click.argument("stage", type=click.Choice([spec.name for spec in STAGE_REGISTRY]))
@click.option("--metrics-port", type=int, default=None,
              help="Serve metrics and /healthz here instead (a second worker of a stage on one host).")
@friendly
def worker(stage: str, metrics_port: int | None) -> None:
    """Run one pipeline stage as a Faust worker (its own consumer group; run more to scale).

    Metrics and /healthz are served on RAGSTREAM_METRICS_PORT_BASE + the stage's offset
    (compliance 0, chunk 1, embed 2, index 3, audit 4, dsr 5). The audit stage is the chain's
    single writer and dsr carries out data-subject requests and retention deletes: their
    inputs have one partition, so extra audit or dsr workers only stand by.

    \b
    Scale a stage on one host:  ragstream worker embed --metrics-port 9310
    """
    from ragstream.logging import configure_logging
    from streams.worker import run_worker

    s = settings()
    run_worker(stage, s, configure_logging(s.log_level, "json" if s.log_format == "json" else "console"),
               web_port=metrics_port)


# --------------------------------------------------------------------------------- dlq
@cli.group()
def dlq() -> None:
    """Dead letters: messages a stage could not process, with the reason."""


STAGE_ARG = click.argument("stage", type=click.Choice(DLQ_STAGES))


@dlq.command("list")
@STAGE_ARG
@friendly
def dlq_list(stage: str) -> None:
    """Show STAGE's dead letters: where they came from, when, and why."""
    from ragstream.dlq import list_letters

    letters = list_letters(settings(), stage)
    for item in letters:
        if item.letter is None:
            click.echo(f"p{item.partition}@{item.offset}  {item.key}  (no ragstream headers)")
            continue
        lt = item.letter
        click.echo(f"p{item.partition}@{item.offset}  {item.key}  {lt.failed_at:%Y-%m-%d %H:%M:%S}  "
                   f"from {lt.topic}  {lt.error_type}: {lt.error_message}")
    say(f"{len(letters)} dead letter(s) in rag.dlq.{stage}")


@dlq.command("replay")
@STAGE_ARG
@friendly
def dlq_replay(stage: str) -> None:
    """Replay STAGE's dead letters not replayed before (fix the cause first).

    Letters go back to the topic they came from; `ingest` letters make their source read
    the item again as it is now.
    """
    from ragstream.dlq import replay

    s = settings()
    replayed, unreadable = replay(s, stage)
    _audit(s, "admin.dlq.replay", f"rag.dlq.{stage}", {"replayed": replayed, "unreadable": unreadable})
    say(f"replayed {replayed} dead letter(s) from rag.dlq.{stage}" + (f"; {unreadable} not replayable (see the log)" if unreadable else ""))


def _audit(s: Settings, action: str, target: str, details: dict[str, Any]) -> None:
    """Record an admin action in the audit chain, as the person at this terminal."""
    import getpass

    from ragstream.publisher import Publisher
    from schemas import topics as t
    from schemas.events import AuditEvent
    from schemas.serde import encode

    event = AuditEvent(actor=f"user:{getpass.getuser()}", action=action, target=target, details=details)
    with Publisher(s, client_id="ragstream-cli") as pub:
        pub.publish_raw(t.AUDIT_EVENTS, event.event_id, encode(event))
        pub.flush()


# --------------------------------------------------------------------------------- pii
@cli.group()
def pii() -> None:
    """PII detection: check what the compliance stage would find and do, before turning a policy on."""


@pii.command("scan")
@click.argument("file", type=click.File("r", encoding="utf-8", errors="replace"))
@click.option("--source", default="scan", show_default=True,
              help="Apply the policy of this source id (RAGSTREAM_POLICY_FILE).")
@click.option("--show-text", is_flag=True, help="Also print the matched text (it is PII: mind your terminal).")
@friendly
def pii_scan(file: Any, source: str, show_text: bool) -> None:
    """Print the PII found in FILE (or - for stdin) as JSON lines.

    One line per finding: entity_type, start, end, score, recognizer and the action the
    policy would take (allow, pseudonymize, mask, redact, block). A last line sums it up,
    with the document's classification.
    """
    import json

    from streams.pii import Detector
    from streams.policy import Action, classify, load_policy, required_actions

    s = settings()
    policy_config = load_policy(s.policy_file)
    policy = policy_config.for_source(source)
    text = file.read()
    findings = Detector(threshold=policy_config.threshold).analyze(text)
    needed, results = required_actions(policy, {f.entity_type for f in findings})
    for f in findings:
        row = {"entity_type": f.entity_type, "start": f.start, "end": f.end, "score": f.score,
               "recognizer": f.recognizer, "action": needed.get(f.entity_type, Action.allow).value}
        if show_text:
            row["text"] = text[f.start:f.end]
        click.echo(json.dumps(row))
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.entity_type] = counts.get(f.entity_type, 0) + 1
    click.echo(json.dumps({"summary": {"findings": len(findings), "by_type": counts,
                                       "classification": classify(findings, text, False, policy.classification_floor).value,
                                       "frameworks": list(policy.frameworks),
                                       "compliant_as_found": {r.framework: r.compliant for r in results}}}))


@pii.command("eval")
@click.argument("labelled", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@friendly
def pii_eval(labelled: str | None, as_json: bool) -> None:
    """Score detection on a labelled set: precision, recall and F2 per entity type.

    LABELLED is a JSON-lines file, one document per line:
    {"text": "...", "spans": [{"start": 0, "end": 8, "entity_type": "PERSON"}]}.
    Default: the repository's generated set, bench/data/pii_eval.jsonl (regenerate with
    `python -m bench.pii_evalset`).
    """
    import json

    from streams.pii_eval import evaluate, format_table, load

    path = Path(labelled) if labelled else PROJECT_ROOT / "bench" / "data" / "pii_eval.jsonl"
    try:
        docs = load(path)
    except ValueError as exc:
        raise UserError(f"ragstream: {exc}") from None
    summary = evaluate(docs).summary()
    click.echo(json.dumps(summary, indent=2) if as_json else format_table(summary))


# ------------------------------------------------------------------------------- audit
@cli.group()
def audit() -> None:
    """The tamper-evident audit log (rag.audit): verify and export the hash chain."""


@audit.command("verify")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False),
              help="Verify an exported chain (JSON lines) instead of the topic.")
@friendly
def audit_verify(path: str | None) -> None:
    """Walk the chain from the first record; report the first break and exit 1 if there is one.

    Also checks the signed checkpoints the audit writer keeps outside Kafka
    (<home>/audit/checkpoints.jsonl), which catch a chain rewritten as a whole.
    """
    import json

    from streams.audit import Checkpoints, read_chain, verify

    s = settings()
    records: Any = ([json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
                    if path else read_chain(s))
    verdict = verify(records, Checkpoints(s.home))
    if verdict.ok:
        say(f"audit chain OK: {verdict.records} record(s), {verdict.checkpoints_checked} signed checkpoint(s) "
            f"matched, {verdict.repeats} re-delivered event(s); head {verdict.last_hash}")
        return
    where = f"record #{verdict.break_at} (seq {verdict.seq})" if verdict.break_at is not None else f"seq {verdict.seq}"
    raise UserError(f"audit chain BROKEN at {where}: {verdict.problem}")


@audit.command("export")
@friendly
def audit_export() -> None:
    """Print every audit record as JSON lines, oldest first (for archives and `verify --file`)."""
    from streams.audit import read_chain

    for record in read_chain(settings()):
        click.echo(record.model_dump_json())


# --------------------------------------------------------------------------------- api
@cli.command()
@click.option("--host", default=None, help="Interface to listen on (default: RAGSTREAM_API_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: RAGSTREAM_API_PORT, 8800).")
@friendly
def api(host: str | None, port: int | None) -> None:
    """Serve the retrieval API: ACL-filtered search, documents, admin (OpenAPI at /docs).

    Authentication and roles come from RAGSTREAM_AUTH_FILE (OIDC issuers, LDAP, sessions,
    rate limit, RBAC); API keys from `ragstream apikey create`. See docs/api.md and
    docs/security.md. X-Forwarded-For is believed only from RAGSTREAM_API_TRUSTED_PROXIES.
    """
    from ragstream.api import serve

    s = settings()
    say(f"retrieval API on http://{host or s.api_host}:{port or s.api_port}  (OpenAPI: /openapi.json, docs: /docs)")
    serve(s, host or s.api_host, port or s.api_port)


@cli.group()
def apikey() -> None:
    """API keys for service accounts: shown once at creation, stored only as a hash."""


@apikey.command("create")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help="Role(s) of the account (repeatable).")
@click.option("--group", "groups", multiple=True, help="Group principal(s) for document ACLs (repeatable).")
@friendly
def apikey_create(name: str, roles: tuple[str, ...], groups: tuple[str, ...]) -> None:
    """Create a key for service account NAME and print it (the only time it is shown).

    The account is the principal service:NAME — never user:NAME, so `apikey create root`
    reads nothing of root's — and it reads documents of exactly the groups given with
    --group (and public ones). Keys live hashed in RAGSTREAM_HOME/keys/auth.db (0600).
    """
    from ragstream.auth import Authenticator, load_auth_config

    s = settings()
    auth = Authenticator(load_auth_config(s.auth_file), s.home)
    unknown = [r for r in roles if r not in auth.rbac.roles]
    if unknown:
        raise UserError(f"unknown role(s) {unknown}; roles are {', '.join(auth.rbac.roles)}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise UserError("NAME may hold letters, digits, '.', '_' and '-' (at most 64)")
    try:
        key = auth.api_keys.create(name, roles, groups)
    except ValueError as exc:
        raise UserError(f"ragstream: {exc}") from None
    _audit(s, "admin.apikey.create", f"service:{name}", {"roles": list(roles), "groups": list(groups),
                                                           "key_id": key.split("_")[1]})
    say(f"service:{name}: roles {', '.join(roles)}; reads documents of "
        + ", ".join(["public", *(f"group:{g}" for g in groups)]))
    click.echo(key)


@apikey.command("list")
@friendly
def apikey_list() -> None:
    """List keys (id, account, roles, groups); never the secrets."""
    from ragstream.store import AuthStore

    keys = AuthStore(settings().home / "keys").keys()
    for k in keys:
        click.echo(f"{k.key_id}  service:{k.name:<24} roles={','.join(k.roles)}  groups={','.join(k.groups)}")
    say(f"{len(keys)} key(s)")


@apikey.command("revoke")
@click.argument("key_id")
@friendly
def apikey_revoke(key_id: str) -> None:
    """Revoke a key by its id (the part after 'rsk_', before the next '_')."""
    from ragstream.store import AuthStore

    s = settings()
    if not AuthStore(s.home / "keys").revoke_key(key_id):
        raise UserError(f"no key with id {key_id} (see `ragstream apikey list`)")
    _audit(s, "admin.apikey.revoke", key_id, {})
    say(f"revoked {key_id}")


# --------------------------------------------------------------------------------- dsr
@cli.group()
def dsr() -> None:
    """Data-subject requests (GDPR Art. 15-20, CCPA): access, erase, rectify, export.

    The subject is named by what identifies them in documents (--name, --email, ...). Only
    pseudonyms of those values (keyed HMAC, the tenant's key) leave this command; the dsr
    worker carries the request out and writes a receipt into the audit chain. Deadlines:
    GDPR one month, CCPA 45 days, tracked by `ragstream dsr list`.
    """


def _subject_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--name", multiple=True, help="A name the subject appears under (repeatable)."),
        click.option("--email", multiple=True, help="An email address of the subject (repeatable)."),
        click.option("--phone", multiple=True, help="A phone number of the subject (repeatable)."),
        click.option("--ssn", multiple=True, help="A US social security number of the subject."),
        click.option("--mrn", multiple=True, help="A medical record number of the subject."),
        click.option("--ref", "refs", multiple=True, metavar="TYPE:HEX",
                     help="A pseudonymous subject ref already known (e.g. from an access export)."),
        click.option("--framework", type=click.Choice(["GDPR", "CCPA"]), default="GDPR", show_default=True,
                     help="Sets the deadline: GDPR one month, CCPA 45 days."),
        click.option("--tenant", default="default", show_default=True, help="Whose pseudonym key to use."),
        click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the receipt."),
        click.option("--timeout", default=1800.0, show_default=True, help="Seconds to wait for the receipt."),
    ]):
        fn = opt(fn)
    return fn


def _file_dsr(kind: str, name: tuple[str, ...], email: tuple[str, ...], phone: tuple[str, ...],
              ssn: tuple[str, ...], mrn: tuple[str, ...], refs: tuple[str, ...], framework: str, tenant: str,
              wait: bool, timeout: float) -> None:
    import getpass
    import json

    from pydantic import ValidationError

    from schemas.events import DsrKind
    from streams.dsr import submit, subject_refs_for, wait_receipt
    from streams.policy import KeyRing

    s = settings()
    given = {"name": list(name), "email": list(email), "phone": list(phone), "ssn": list(ssn), "mrn": list(mrn)}
    from streams.dsr import UnknownTenant
    from streams.policy import load_policy

    try:
        mine = subject_refs_for(KeyRing(s.home / "keys"), tenant, given, tenants=load_policy(s.policy_file).tenants)
    except UnknownTenant as exc:
        raise UserError(str(exc)) from None
    all_refs = tuple(sorted(set(mine) | set(refs)))
    if not all_refs:
        raise UserError("name the subject: give at least one of --name, --email, --phone, --ssn, --mrn or --ref")
    try:
        req = submit(s, DsrKind(kind), all_refs, framework=framework, tenant=tenant, actor=f"user:{getpass.getuser()}")
    except ValidationError as exc:
        raise UserError("; ".join(e["msg"] for e in exc.errors())) from None
    say(f"request {req.request_id}: {kind} for {len(req.subject_refs)} subject ref(s); "
        f"due {req.due_at:%Y-%m-%d} ({framework})")
    if not wait:
        say(f"follow it with: ragstream dsr show {req.request_id}")
        return
    say("waiting for the dsr worker's receipt (an erasure waits for compaction; see --timeout)...")
    receipt = wait_receipt(s, req.request_id, timeout)
    if receipt is None:
        raise UserError(f"no receipt for {req.request_id} within {timeout:.0f} s; is `ragstream worker dsr` running? "
                        f"Check later with `ragstream dsr show {req.request_id}`.")
    click.echo(json.dumps(receipt, indent=2, sort_keys=True))
    if receipt.get("verified") is False:
        raise UserError(f"request {req.request_id} is not verified yet: see 'remaining' above")


@dsr.command("access", short_help="Right of access: export what is indexed about a subject.")
@_subject_options
@friendly
def dsr_access(**kw: Any) -> None:
    """Right of access (GDPR Art. 15, CCPA right to know): a JSON export of everything
    indexed that references the subject, written by the dsr worker (mode 0600)."""
    _file_dsr("access", **kw)


@dsr.command("export", short_help="Data portability: a machine-readable export of a subject's data.")
@_subject_options
@friendly
def dsr_export(**kw: Any) -> None:
    """Right to data portability (GDPR Art. 20): the same structured, machine-readable export."""
    _file_dsr("portability", **kw)


@dsr.command("erase", short_help="Right to erasure: remove a subject from every store.")
@_subject_options
@friendly
def dsr_erase(**kw: Any) -> None:
    """Right to erasure (GDPR Art. 17, CCPA right to delete).

    Removes the subject from Milvus, rag.documents (rewritten, then compacted), rag.chunks and
    rag.vectors (truncated), and keeps them out of later versions. Documents under a legal
    hold or SOX leave the index instead. The receipt gives per-store counts and whether a
    re-read of every store found nothing.
    """
    _file_dsr("erasure", **kw)


@dsr.command("rectify", short_help="Rectification: reprocess a subject's documents from source.")
@_subject_options
@friendly
def dsr_rectify(**kw: Any) -> None:
    """Right to rectification (GDPR Art. 16): once the data is corrected at the source,
    re-read the subject's documents from it and reprocess them."""
    _file_dsr("rectification", **kw)


@dsr.command("list")
@friendly
def dsr_list() -> None:
    """Every request with its deadline and status (open, done, overdue, not verified)."""
    from schemas.events import utcnow
    from streams.dsr import receipts, requests

    s = settings()
    done = receipts(s)
    reqs = requests(s)
    if not reqs:
        say("no data-subject requests")
        return
    now = utcnow()
    click.echo(f"{'request':<34}{'kind':<15}{'fw':<6}{'received':<18}{'due':<12}status")
    for r in sorted(reqs, key=lambda r: r.received_at):
        rc = done.get(r.request_id)
        if rc is None:
            status = "OVERDUE" if now > r.due_at else "open"
        elif rc.get("verified") is False:
            status = "done, not verified: " + ", ".join(k for k, v in rc.get("remaining", {}).items() if v)
        else:
            status = "done" + ("" if rc.get("deadline_met", True) else " (late)")
        click.echo(f"{r.request_id:<34}{r.kind.value:<15}{r.framework:<6}{r.received_at:%Y-%m-%d %H:%M}  "
                   f"{r.due_at:%Y-%m-%d}  {status}")


@dsr.command("show")
@click.argument("request_id")
@friendly
def dsr_show(request_id: str) -> None:
    """Print a request's receipt (from the audit chain)."""
    import json

    from streams.dsr import receipts

    receipt = receipts(settings()).get(request_id)
    if receipt is None:
        raise UserError(f"no receipt for {request_id} yet: it is still open, or the id is wrong "
                        "(see `ragstream dsr list`)")
    click.echo(json.dumps(receipt, indent=2, sort_keys=True))


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
        sources = [open_source(s, sid, publisher=none) for sid in known_sources(s)]
        if not sources:
            raise UserError(f"no source has synced into {s.home} yet; run `ragstream up FOLDER` first")
    elif Path(source).is_dir():
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


from ragstream.cli_connect import connect as _connect  # noqa: E402 - database CDC (ragstream/cli_connect.py)

cli.add_command(_connect)


def main() -> None:
    import os

    # Everything ragstream creates (and the broker, milvus-lite, workers and API it starts,
    # which inherit this) is its owner's only. Here, not in cli(), so that invoking the
    # group in-process (tests) does not change the caller's umask.
    os.umask(0o077)
    cli(prog_name="ragstream")


if __name__ == "__main__":
    main()
