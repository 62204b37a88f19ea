"""`ragstream scale STAGE N`: N workers of a stage in its consumer group, on this host."""

from __future__ import annotations

import time

import click

from ragstream.cli.app import UserError, cli, friendly, say, settings
from streams.registry import STAGES as STAGE_REGISTRY


def input_partitions(s: object, stage: str) -> dict[str, int]:
    """Partitions of each input topic of ``stage`` as the broker has them now."""
    from ragstream.admin import admin_client
    from streams.registry import stage as stage_spec

    spec = stage_spec(stage)
    names = [t for t in (*spec.inputs, *(e.topic for e in spec.extra_inputs)) if "*" not in t]
    found = admin_client(s).list_topics(timeout=10).topics  # type: ignore[arg-type]
    missing = [t for t in names if t not in found]
    if missing:
        raise UserError(f"topic(s) {', '.join(missing)} do not exist yet; run `ragstream topics ensure`")
    return {t: len(found[t].partitions) for t in names}


@cli.command()
@click.argument("stage", type=click.Choice([spec.name for spec in STAGE_REGISTRY]))
@click.argument("n", type=click.IntRange(1, 64))
@click.option("--force", is_flag=True, help="Start them even when N exceeds the input's partitions (the extra "
                                            "workers stand by: they take over a partition when a worker stops).")
@friendly
def scale(stage: str, n: int, force: bool) -> None:
    """Run N workers of STAGE on this host, all in its consumer group (ragstream-STAGE).

    \b
    Kafka gives each partition of the stage's input to one worker of the group, so a stage
    scales up to its input's partition count (RAGSTREAM_PARTITIONS; rag.audit.events and
    rag.dsr have one); beyond that the extra workers only stand by, and the command refuses
    unless --force. Worker 1 is the stage's own (`stack status` lists it as worker-STAGE,
    metrics on RAGSTREAM_METRICS_PORT_BASE + the stage's offset); worker i serves its
    metrics and /healthz 10 * (i - 1) ports above it (worker-STAGE-i). Each is supervised
    (restarted when it exits) and stopped by `ragstream down`. Scaling down stops the
    highest-numbered workers; the group rebalances, and every input a stopped worker had
    not acknowledged is read again by another (the sinks are idempotent).

    \b
      ragstream scale embed 3     three embed workers
      ragstream scale embed 1     back to one
    """
    from infra.stack import Stack, replica_name, running_replicas
    from streams.registry import replica_port

    s = settings()
    parts = input_partitions(s, stage)
    most = max(parts.values()) if parts else n
    if n > most:
        where = ", ".join(f"{t} has {p}" for t, p in parts.items())
        advice = (f"{stage} reads {where} partition(s): a consumer group gives each partition to one worker, so "
                  f"{n - most} of {n} workers would have nothing to do.")
        if not force:
            raise UserError(f"ragstream scale: {advice}\n  → scale to at most {most}, or raise RAGSTREAM_PARTITIONS "
                            "and run `ragstream topics ensure` (keys move between partitions: drain the pipeline "
                            "first), or add --force to keep standbys.")
        say(f"warning: {advice} Starting them anyway (--force): they stand by.")
    want = [replica_name(stage, i) for i in range(1, n + 1)]
    extra = tuple(r for r in running_replicas(s, (stage,)) if r not in want)
    t0 = time.monotonic()
    if extra:  # (Stack(s, ()) means the infrastructure)
        for name, was in Stack(s, extra).down().items():
            say(f"{name}: {'stopped' if was else 'not running'}")
    for name, new in Stack(s, tuple(want)).up(progress=say).items():
        say(f"{name}: {'started' if new else 'already running'}")
    ports = ", ".join(str(replica_port(s, stage, i)) for i in range(1, n + 1))
    say(f"{stage}: {n} worker(s) in consumer group ragstream-{stage} (metrics on {ports}) in "
        f"{time.monotonic() - t0:.1f}s; `ragstream status` shows the lag they work off")
