"""``ragstream connect ...``: the Debezium PostgreSQL connector on Kafka Connect, by its REST API.

Every command is idempotent: ``apply`` twice changes nothing the second time, ``delete``
of a connector that is gone only makes sure its replication slot is gone too.
"""

from __future__ import annotations

import json
import sys

import click


@click.group()
def connect() -> None:
    """The Debezium PostgreSQL connector (database CDC): apply, status, restart, delete.

    \b
    The connector config is connect/debezium-postgres.properties, filled from the settings
    (RAGSTREAM_CDC_DSN, RAGSTREAM_PARTITIONS, ...) and the tables of the normalize mapping
    (RAGSTREAM_CDC_MAPPING_FILE). Kafka Connect: RAGSTREAM_CONNECT_URL or the local worker
    (`ragstream stack up -s kafka -s postgres -s connect`).
    """


@connect.command("up")
@click.option("--sample", is_flag=True,
              help="Use the sample database and mapping (connect/sample/), loading its tables if missing.")
def connect_up(sample: bool) -> None:
    """Everything for database CDC in one go: Kafka, PostgreSQL, Kafka Connect, the topics,
    the connector (snapshot, then streaming) and the normalize worker. Idempotent.

    The rest of the pipeline (Milvus, the stage workers) comes from `ragstream up`.
    """
    from infra.cdc import CONNECTOR_NAME, SAMPLE_DIR, apply_connector, load_sample, running, wait_running
    from infra.stack import Stack
    from ragstream.admin import ensure_topics
    from ragstream.cli import UserError, friendly, say, settings

    @friendly
    def run() -> None:
        s = settings()
        if sample:
            s = s.model_copy(update={"cdc_mapping_file": SAMPLE_DIR / "mapping.toml"})
        elif s.cdc_mapping_file is None:
            raise UserError("ragstream: set RAGSTREAM_CDC_MAPPING_FILE to your table mapping (docs/cdc.md), "
                            "or try the sample database with --sample")
        mapping = _mapping(s)
        names = ("kafka", "postgres", "connect") if s.connect_url is None else ("kafka",)
        for name, new in Stack(s, names).up(progress=say).items():
            say(f"{name}: {'started' if new else 'already running'}")
        ensure_topics(s)
        if sample:
            say(f"sample database: {load_sample(s)}")
        say(f"{CONNECTOR_NAME}: {apply_connector(s, mapping)} (tables: {', '.join(mapping.captured())})")
        _register(s, mapping)
        if not running(st := wait_running(s)):
            raise UserError(f"ragstream: {CONNECTOR_NAME} is not running:\n{_describe(st)}")
        for name, new in Stack(s, ("worker-normalize",)).up(progress=say).items():
            say(f"{name}: {'started' if new else 'already running'}")
        say(f"database CDC running: {s.cdc_dsn_shown} → {mapping.topic_prefix}.* → normalize → rag.changes "
            f"(source {mapping.source}); stop: ragstream stack down -s worker-normalize -s connect -s postgres")

    run()


def _mapping(s=None):  # -> Mapping
    from ragstream.cli import UserError, settings
    from ragstream.cdc_mapping import MappingError, load_mapping

    try:
        return load_mapping((s or settings()).cdc_mapping_file)
    except MappingError as exc:
        raise UserError(f"ragstream: {exc}") from None


def _register(s, mapping) -> None:
    """The database as a source of this home (its cursor): `ragstream verify` lists its tables."""
    from producers.postgres import PostgresSource
    from ragstream.cli import UserError, say
    from ragstream.connector import ConnectorError

    try:
        path = PostgresSource.register(s, s.cdc_mapping_file, mapping)
    except ConnectorError as exc:
        raise UserError(f"ragstream: {exc}") from None
    say(f"source {mapping.source}: registered ({path}); `ragstream verify {mapping.source}` compares the tables "
        "with the index")


@connect.command("apply")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the connector and its task run.")
def connect_apply(wait: bool) -> None:
    """Create the connector, or update it to match the files; unchanged when it already does."""
    from infra.cdc import CONNECTOR_NAME, apply_connector, running, wait_running
    from ragstream.cli import UserError, friendly, say, settings

    @friendly
    def run() -> None:
        s = settings()
        mapping = _mapping(s)
        say(f"{CONNECTOR_NAME}: {apply_connector(s, mapping)} (tables: {', '.join(mapping.captured())})")
        _register(s, mapping)
        if wait:
            st = wait_running(s)
            if not running(st):
                raise UserError(f"ragstream: {CONNECTOR_NAME} is not running:\n{_describe(st)}\n"
                                "  → see `ragstream connect status` and the Connect log")
            say(f"{CONNECTOR_NAME}: running")

    run()


@connect.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print Connect's status document and the slot as JSON.")
def connect_status(as_json: bool) -> None:
    """The connector's and its task's state (with the error of a failed task), its replication
    slot's retained WAL and what automatic recovery is doing (restarts so far, or that it
    stopped: retry budget spent). Exit 3 unless everything runs and recovery has not stopped."""
    from infra.cdc import CONNECTOR_NAME, connector_status, describe_recovery, read_recovery_state, running, slot_lag
    from ragstream.cli import friendly, settings

    @friendly
    def run() -> None:
        s = settings()
        st = connector_status(s)
        slot = slot_lag(s)
        recovery = read_recovery_state(s)
        if as_json:
            click.echo(json.dumps({"connector": st, "slot": slot, "recovery": recovery}, indent=2))
        elif st is None:
            click.echo(f"{CONNECTOR_NAME}: not created (run `ragstream connect apply`)")
        else:
            click.echo(_describe(st))
        if slot and not as_json:
            click.echo(f"slot {slot['slot']}: {'active' if slot['active'] else 'INACTIVE'}, "
                       f"retained WAL {slot['retained_wal_bytes'] or 0:,} bytes")
        if not as_json:
            for line in describe_recovery(recovery):
                click.echo(line)
        if not running(st) or (recovery and recovery.get("exhausted")):
            sys.exit(3)

    run()


@connect.command("restart")
def connect_restart() -> None:
    """Restart the connector and its task (e.g. after a FAILED task's cause is fixed)."""
    from infra.cdc import CONNECTOR_NAME, restart_connector, running, wait_running
    from ragstream.cli import UserError, friendly, say, settings

    @friendly
    def run() -> None:
        s = settings()
        restart_connector(s)
        st = wait_running(s, fail_fast=False)
        if not running(st):
            raise UserError(f"ragstream: {CONNECTOR_NAME} did not come back:\n{_describe(st)}")
        say(f"{CONNECTOR_NAME}: restarted, running")

    run()


@connect.command("watch")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between two looks at the connector.")
@click.option("--metrics-port", type=int, default=None,
              help="Serve ragstream_connect_task_restarts_total on this port (/metrics).")
def connect_watch(interval: float, metrics_port: int | None) -> None:
    """Restart the connector's failed tasks automatically, within the retry budget, in the
    foreground (Ctrl-C stops). The local Connect worker (`stack up -s connect`) already runs
    this next to itself; use it for a Connect cluster of your own (RAGSTREAM_CONNECT_URL).

    \b
    Budget: RAGSTREAM_RETRY_BUDGET_S from the first failure, restarts spaced from
    RAGSTREAM_RESTART_BACKOFF_S doubling to RAGSTREAM_RESTART_BACKOFF_MAX_S; renewed after
    RAGSTREAM_RESTART_RESET_AFTER_S of running. When it is spent, restarts stop and
    `ragstream connect status` says so until the connector runs again.
    """
    import threading

    from infra.cdc import WATCH_REGISTRY, TaskRecovery
    from ragstream.cli import friendly, say, settings

    @friendly
    def run() -> None:
        s = settings()
        if metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(metrics_port, addr="127.0.0.1", registry=WATCH_REGISTRY)
            say(f"metrics: http://127.0.0.1:{metrics_port}/metrics")
        recovery = TaskRecovery(s, interval_s=interval, textfile=s.home / "metrics" / "connect.prom")
        stop = threading.Event()
        say(f"watching {recovery.connector} at {s.resolved_connect_url} (Ctrl-C stops)")
        try:
            recovery.run(stop)
        except KeyboardInterrupt:
            stop.set()

    run()


@connect.command("delete")
@click.option("--keep-slot", is_flag=True,
              help="Keep the replication slot and publication (PostgreSQL then keeps WAL for them).")
def connect_delete(keep_slot: bool) -> None:
    """Delete the connector and drop its replication slot and publication.

    A re-created connector then snapshots the tables again (same documents, same ids)."""
    from infra.cdc import CONNECTOR_NAME, delete_connector
    from ragstream.cli import friendly, say, settings

    @friendly
    def run() -> None:
        existed, slot = delete_connector(settings(), drop=not keep_slot)
        say(f"{CONNECTOR_NAME}: {'deleted' if existed else 'not there'}"
            + ("" if keep_slot else f"; replication slot {'dropped' if slot else 'not there'}"))

    run()


def _describe(st: dict | None) -> str:
    if st is None:
        return "  (no connector)"
    lines = [f"{st['name']}: {st['connector']['state']} on {st['connector'].get('worker_id', '?')}"]
    for t in st.get("tasks", []):
        lines.append(f"  task {t['id']}: {t['state']}")
        if t.get("trace"):
            lines.append("    " + t["trace"].strip().splitlines()[0][:400])
            cause = [ln for ln in t["trace"].splitlines() if ln.startswith("Caused by:")]
            if cause:
                lines.append("    " + cause[-1][:400])
            lines.append("    → restarted automatically within the retry budget (below); otherwise fix the cause, then "
                         "`ragstream connect restart` (it resumes from the replication slot)")
    return "\n".join(lines)
