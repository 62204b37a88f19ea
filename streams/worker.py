"""The Faust runtime: one app per stage, each its own consumer group.

``ragstream worker <stage>`` runs one; ``ragstream up`` runs them all, one process each.
Agents stay thin: decode, call the stage's plain logic (:mod:`streams.stages`) on a worker
thread, publish through the one :class:`~producers.publisher.Publisher`, and wait for the
broker's acknowledgement before the input is acknowledged (at-least-once; every sink is
idempotent, so redeliveries after a crash or rebalance are harmless).

Version guards: the index stage keeps the version applied per document in a registry
collection in Milvus (written after the rows), which survives restarts. We tried Faust
tables for this first: after a ``kill -9`` their changelog recovery hung (the known
faust-streaming recovery stalls), so no stage relies on Faust tables. The compliance stage
guards in memory, which catches reordering while it runs; the index guard is the one that
decides what is searchable. Compliance and index handle one event at a time; chunk and
embed batch.

Failures: a message that cannot be decoded, or that the logic rejects (:class:`Permanent`),
is dead-lettered with its reason. A transient failure (Milvus, the model server, the
broker) is retried with exponential backoff while the stream waits — consumption pauses,
nothing is skipped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Callable

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from structlog.contextvars import bound_contextvars

from producers.publisher import PublishError, Publisher
from ragstream.blobs import BlobStore
from ragstream.logging import get_logger
from ragstream.metrics import (
    BATCH_SIZE,
    CONSUMER_LAG,
    EVENTS_IN,
    EVENTS_OUT,
    PROCESSING,
    STAGE_ERRORS,
    STALE_DROPPED,
)
from ragstream.settings import Settings
from schemas.serde import SerdeError, decode
from streams.stages import TRANSIENT, ChunkStage, ComplianceStage, EmbedStage, IndexStage, Output, Permanent

log = get_logger(__name__)

STAGES = ("compliance", "chunk", "embed", "index", "audit", "dsr")
#: Run only where configured (database CDC: RAGSTREAM_CDC_MAPPING); not part of every pipeline.
OPTIONAL_STAGES = ("normalize",)
BATCHED = {"chunk", "embed"}


def permanent(exc: BaseException) -> Permanent:
    """What a dead letter records: a Permanent as it is, anything else (transients were
    retried inside off_loop, so this failed for good) wrapped with its type."""
    return exc if isinstance(exc, Permanent) else Permanent(f"{type(exc).__name__}: {exc}")


def metrics_port(settings: Settings, stage: str) -> int:
    # base + 6 is the producer's (`ragstream up`), so normalize, added later, takes base + 7.
    return settings.metrics_port_base + (7 if stage == "normalize" else STAGES.index(stage))


def make_stage(stage: str, settings: Settings, publish: Callable[[list[Output]], None] | None = None) -> Any:
    if stage == "normalize":  # Debezium's cdc.* topics → rag.changes / rag.acl (streams/normalize.py)
        from streams.normalize import NormalizeStage

        return NormalizeStage.from_settings(settings)
    blobs = BlobStore(settings.blob_dir)
    if stage == "compliance":
        from streams.dsr import ErasedSubjects
        from streams.policy import KeyRing, load_policy

        return ComplianceStage(blobs, settings.inline_max_bytes, policy=load_policy(settings.policy_file),
                               keys=KeyRing(settings.home / "keys"), erased=ErasedSubjects(settings).start())
    if stage == "audit":
        from streams.audit import AuditStage, Checkpoints, tail

        return AuditStage(tail(settings), Checkpoints(settings.home))
    if stage == "chunk":
        from streams.chunking import Chunker
        from streams.embedding import token_counter

        return ChunkStage(Chunker(count=token_counter(settings), max_tokens=settings.chunk_max_tokens,
                                  overlap_tokens=settings.chunk_overlap_tokens), blobs)
    from consumers.milvus import MilvusIndex
    from streams.embedding import make_embedder, model_dim

    if stage == "embed":
        embedder = make_embedder(settings)
        index = MilvusIndex(settings.resolved_milvus_uri, settings.collection, embedder.dim)
        index.ensure()
        return EmbedStage(embedder, index)
    if stage == "index":
        index = MilvusIndex(settings.resolved_milvus_uri, settings.collection, model_dim(settings))
        index.ensure()
        return IndexStage(index)
    if stage == "dsr":
        from streams.dsr import DsrStage
        from streams.policy import KeyRing, load_policy

        if publish is None:
            raise ValueError("the dsr stage publishes as it goes: pass publish=")
        index = MilvusIndex(settings.resolved_milvus_uri, settings.collection, model_dim(settings))
        index.ensure()
        return DsrStage(settings, publish, policy=load_policy(settings.policy_file),
                        keys=KeyRing(settings.home / "keys"), index=index)
    raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")


def build_app(stage: str, settings: Settings, loghandlers: list[Any] | None = None,
              web_port: int | None = None) -> faust.App:
    """The Faust app of one stage worker. ``web_port`` (metrics, /healthz) defaults to the
    stage's port; a second worker of the same stage on this host needs another one."""
    if stage not in STAGES + OPTIONAL_STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES + OPTIONAL_STAGES)}")
    web_port = web_port or metrics_port(settings, stage)
    datadir = settings.home / "faust" / (stage if web_port == metrics_port(settings, stage) else f"{stage}-{web_port}")
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"ragstream-{stage}",
        broker=";".join(f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(",")),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=0.5,  # commit soon after acks: lag (and `up`'s progress) stays current
        web_host="127.0.0.1",
        web_port=web_port,
        web_in_thread=False,
        datadir=str(datadir),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        loghandlers=loghandlers or [],
    )
    setup_prometheus_sensors(app, name_prefix=f"ragstream_faust_{stage}")
    publisher = Publisher(settings, client_id=f"ragstream-{stage}", config={"linger.ms": 0})

    def publish(outputs: list[Output]) -> None:
        for o in outputs:
            publisher.publish_raw(o.topic, o.key, o.value, partition=o.partition)
            EVENTS_OUT.labels(stage, o.topic).inc()
        publisher.flush()  # acknowledged before the input is

    logic = make_stage(stage, settings, publish)
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=stage)
    source = app.topic(*getattr(logic, "input_topics", (logic.input_topic,)), key_type=bytes, value_type=bytes)
    seen_versions: dict[bytes, int] = {}  # compliance's in-memory guard

    @app.page("/healthz")
    async def healthz(self: Any, request: Any) -> Any:
        return self.json({"stage": stage, "status": "ok"})

    async def off_loop(fn: Callable[[], Any]) -> Any:
        """Run blocking work on the stage's thread; retry transient failures forever."""
        delay = 0.5
        while True:
            try:
                return await asyncio.get_running_loop().run_in_executor(executor, fn)
            except (*TRANSIENT, PublishError) as exc:
                STAGE_ERRORS.labels(stage, type(exc).__name__).inc()
                log.warning("transient failure; will retry", stage=stage, error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    async def dead_letter(event: Any, exc: BaseException) -> None:
        STAGE_ERRORS.labels(stage, type(exc).__name__).inc()
        msg = event.message

        def send() -> None:
            publisher.dead_letter(stage, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                                  key=msg.key, value=msg.value, error=exc)
            publisher.flush()

        await off_loop(send)

    def track(event: Any) -> None:
        EVENTS_IN.labels(stage).inc()
        msg = event.message
        hw = app.consumer.highwater(msg.tp) if app.consumer else None
        if hw is not None:
            CONSUMER_LAG.labels(stage, str(msg.partition)).set(max(hw - msg.offset - 1, 0))

    if stage in BATCHED:
        @app.agent(source, name=f"{stage}-agent")
        async def batched(stream: Any) -> None:
            async for events in stream.take_events(settings.embed_batch_size if stage == "embed" else 64,
                                                   within=0.05):
                with PROCESSING.labels(stage).time():
                    BATCH_SIZE.labels(stage).observe(len(events))
                    good = []
                    for event in events:
                        track(event)
                        if event.value is None:
                            continue  # a tombstone after a delete record: nothing to do
                        try:
                            good.append((event, decode(logic.contract, event.value)))
                        except SerdeError as exc:
                            await dead_letter(event, exc)
                    if stage == "embed":
                        await _embed(good)
                    else:
                        for event, item in good:
                            await _single(event, item)

        async def _embed(good: list[tuple[Any, Any]]) -> None:
            if not good:
                return
            try:
                outputs = await off_loop(lambda: logic.process_batch([item for _, item in good]))
            except Exception:  # noqa: BLE001 - isolate the document that breaks the batch
                for event, item in good:
                    await _single(event, item, batch=True)
                return
            await off_loop(lambda: publish(outputs))

        async def _single(event: Any, item: Any, batch: bool = False) -> None:
            with bound_contextvars(doc_id=item.doc_id, event_id=item.event_id, stage=stage):
                try:
                    if batch:
                        outputs = await off_loop(lambda: logic.process_batch([item]))
                    else:
                        outputs = await off_loop(lambda: logic.process(item))
                except Exception as exc:  # noqa: BLE001 - permanent by elimination: transients retry inside off_loop
                    await dead_letter(event, permanent(exc))
                    return
                await off_loop(lambda: publish(outputs))
    else:
        @app.agent(source, name=f"{stage}-agent")
        async def one_by_one(stream: Any) -> None:
            async for event in stream.events():
                track(event)
                if event.value is None:
                    continue
                with PROCESSING.labels(stage).time():
                    try:
                        item = (logic.decode(event.value) if stage == "normalize"  # Debezium JSON, not a contract
                                else decode(logic.contract, event.value))
                    except SerdeError as exc:
                        await dead_letter(event, exc)
                        continue
                    with bound_contextvars(doc_id=getattr(item, "doc_id", None), stage=stage,
                                           event_id=getattr(item, "event_id", getattr(item, "request_id", None))):
                        try:
                            if stage in ("audit", "dsr", "normalize"):
                                outputs = await off_loop(lambda: logic.process(item))
                                await off_loop(lambda: publish(outputs))
                                if stage == "audit":
                                    logic.committed()
                            elif stage == "compliance":
                                if item.version <= seen_versions.get(event.key, -1):
                                    STALE_DROPPED.labels(stage).inc()
                                    continue
                                outputs = await off_loop(lambda: logic.process(item))
                                await off_loop(lambda: publish(outputs))
                                seen_versions[event.key] = item.version
                            elif not await off_loop(lambda: logic.process(item)):
                                STALE_DROPPED.labels(stage).inc()
                        except Exception as exc:  # noqa: BLE001 - transients were retried inside off_loop
                            await dead_letter(event, permanent(exc))

    if stage == "index":
        from schemas import topics as _topics
        from schemas.events import AclChange

        @app.agent(app.topic(_topics.ACL, key_type=bytes, value_type=bytes), name="index-acl-agent")
        async def permissions(stream: Any) -> None:
            """Permission-only changes: same consumer group, applied on the stage's thread."""
            async for event in stream.events():
                EVENTS_IN.labels("index").inc()
                if event.value is None:
                    continue
                try:
                    change = decode(AclChange, event.value)
                except SerdeError as exc:
                    await dead_letter(event, exc)
                    continue
                with bound_contextvars(doc_id=change.doc_id, event_id=change.event_id, stage=stage):
                    try:
                        if not await off_loop(lambda: logic.apply_acl(change)):
                            STALE_DROPPED.labels(stage).inc()
                    except Exception as exc:  # noqa: BLE001 - transients were retried inside off_loop
                        await dead_letter(event, permanent(exc))

    if stage == "audit":
        @app.timer(interval=5.0)
        async def checkpoint() -> None:
            await off_loop(logic.checkpoint)  # only records already acknowledged are vouched for

    if stage == "dsr":
        @app.timer(interval=settings.retention_sweep_s)
        async def retention() -> None:
            outputs = await off_loop(logic.sweep_retention)
            if outputs:
                await off_loop(lambda: publish(outputs))

    if stage == "index":
        @app.timer(interval=1.0)
        async def flush_index() -> None:
            # Searches right after unflushed inserts are slow on milvus-lite: seal writes
            # within a second, but only when there were any.
            if logic.dirty:
                logic.dirty = False
                await off_loop(logic.index.flush)

    return app


def run_worker(stage: str, settings: Settings, handler: Any = None, web_port: int | None = None) -> None:
    app = build_app(stage, settings, loghandlers=[handler] if handler else None, web_port=web_port)
    worker = faust.Worker(app, loglevel=settings.log_level,
                          logging_config={"version": 1, "disable_existing_loggers": False},
                          redirect_stdouts=False)
    worker.execute_from_commandline()
