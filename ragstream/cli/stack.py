"""`ragstream stack`, `topics`, `schemas`, `worker`: the local services and stage workers."""

from __future__ import annotations

import sys
import time

import click

from ragstream.cli.app import cli, friendly, print_topic_changes, say, settings, UserError
from streams.registry import STAGES as STAGE_REGISTRY


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
    from infra.stack import APPS, INFRA, WORKERS, Stack, running_replicas

    s = settings()
    for name, was_running in Stack(s, services or (INFRA + WORKERS + running_replicas(s) + APPS)).down().items():
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
    from infra.stack import APPS, INFRA, WORKERS, Stack, running_replicas

    s = settings()
    rows = Stack(s, services or (INFRA + WORKERS + running_replicas(s) + APPS)).status()
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
    """Create missing topics and align partitions and configs with the catalog (idempotent);
    on the local broker also its users and per-component ACLs (ragstream/kafka_acls.py)."""
    from ragstream.admin import ensure_topics
    from ragstream.kafka import uses_local_credentials
    from ragstream.kafka_acls import secure_broker

    s = settings()
    print_topic_changes(ensure_topics(s))
    if uses_local_credentials(s):
        secure_broker(s, say)


@topics.command("list")
def topics_list() -> None:
    """Print the catalog: name, partitions, key, cleanup policy, retention, purpose."""
    from schemas.topics import catalog

    for spec in catalog(settings()):
        retention = spec.config.get("retention.ms")
        keep = f"{int(retention) / 86_400_000:g}d" if retention else "-"
        click.echo(f"{spec.name:<20} p={spec.partitions:<3} key={spec.key:<10} "
                   f"{spec.config['cleanup.policy']:<8} retention={keep:<7} {spec.description}")


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


# ------------------------------------------------------------------------------ status
@cli.command()
@click.option("--window", default=5.0, show_default=True, metavar="SECONDS",
              help="How long to watch the workers' counters for rates.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@friendly
def status(window: float, as_json: bool) -> None:
    """Per stage: lag, throughput, busy share, errors, dead letters, time to drain; and advice.

    The advice is computed from those numbers: the bottleneck (the busiest stage with lag),
    how many workers a stage needs to drain its lag within a minute (at most its input's
    partitions), dead letters to look at, workers that are down or degraded.
    """
    import json

    from ragstream.status import collect, format_status

    result = collect(settings(), window_s=window)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for line in format_status(result):
            click.echo(line)
