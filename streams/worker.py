"""The Faust runtime: one app per stage, each its own consumer group.

``ragstream worker <stage>`` runs one; ``ragstream up`` runs them all, one process each.
Agents stay thin: decode, call the stage's plain logic (:mod:`streams.stages`) on a worker
thread, publish through the one :class:`~ragstream.publisher.Publisher`, and wait for the
broker's acknowledgement before the input is acknowledged (at-least-once; every sink is
idempotent, so redeliveries after a crash or rebalance are harmless).

Version guards: the index stage keeps the version applied per document in a registry
collection in Milvus (written after the rows), which survives restarts. We tried Faust
tables for this first: after a ``kill -9`` their changelog recovery hung (the known
faust-streaming recovery stalls), so no stage relies on Faust tables. The compliance stage
guards in memory, which catches reordering while it runs; the index guard is the one that
decides what is searchable. Compliance and index handle one event at a time; chunk and
embed batch.

Failures follow the one classification (:mod:`ragstream.failures`). A message that cannot
be decoded, or that fails permanently, is dead-lettered with its reason at once. A transient
failure (Milvus, the model server, the broker) is retried with exponential backoff while the
partition waits, within ``RAGSTREAM_RETRY_BUDGET_S``; when the budget is spent the message is
dead-lettered (replayable). Every retry and dead-letter line carries doc_id, event_id, stage.

Acknowledgement: agents read with ``noack`` streams (``noack_take`` for the batched stages)
and acknowledge an event only once its outputs — or its dead letter — were acknowledged by
the broker. No exception escapes an agent (Faust's ``take_events`` would acknowledge the
batch in a ``finally``). If even the dead letter cannot be written within the budget, the
worker exits at once without acknowledging (its supervisor restarts it; the input is read
again).

Health: :class:`PartitionHealth` knows, per assigned partition, what is in hand and when it
last moved. ``/healthz`` answers 503 with the reason and the document when a partition has
had input waiting and no progress for ``RAGSTREAM_STALL_AFTER_S``, or when the fetcher or an
agent crashed; ``ragstream_stage_seconds_since_progress`` exports the same per partition.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from structlog.contextvars import bound_contextvars

from ragstream.publisher import Publisher
from ragstream.consumer import blob_claims
from ragstream.failures import BudgetExhausted, Kind, Permanent, RetryBudget, as_permanent, classify, reason
from ragstream.logging import get_logger
from ragstream.metrics import (
    BATCH_SIZE,
    CONSUMER_LAG,
    EVENTS_IN,
    EVENTS_OUT,
    PROCESSING,
    SECONDS_SINCE_PROGRESS,
    STAGE_ERRORS,
    STAGE_RETRIES,
    STALE_DROPPED,
)
from ragstream.settings import Settings
from schemas.serde import decode
from streams.audit import WriterFenced
from streams.registry import ExtraInput, StageSpec, metrics_port, stage as stage_spec
from streams.stages import Output

log = get_logger(__name__)


#: The events the current agent task is working on (each agent is its own asyncio task, so
#: each sees its own): retries report their problem on these partitions.
_IN_HAND: contextvars.ContextVar[list[Any]] = contextvars.ContextVar("in_hand", default=[])

#: Exit code of a worker that could not even dead-letter within the budget (EX_TEMPFAIL).
EXIT_UNACKNOWLEDGED = 75


@dataclass
class _Partition:
    since: float  # last progress (or assignment) time, monotonic
    done_offset: int = -1
    inflight: dict[int, str | None] = field(default_factory=dict)  # offset -> doc_id
    problem: str | None = None


class PartitionHealth:
    """Per partition: what is in hand, when it last moved, the last transient problem."""

    def __init__(self, stage: str, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stage = stage
        self.stall_after_s = stall_after_s
        self.clock = clock
        self.parts: dict[tuple[str, int], _Partition] = {}

    def _part(self, tp: Any) -> _Partition:
        key = (tp.topic, tp.partition)
        if key not in self.parts:
            self.parts[key] = _Partition(since=self.clock())
        return self.parts[key]

    def begin(self, events: Iterable[Any], doc_ids: Iterable[str | None]) -> None:
        for event, doc_id in zip(events, doc_ids):
            self._part(event.message.tp).inflight[event.message.offset] = doc_id

    def retrying(self, events: Iterable[Any], problem: str) -> None:
        for event in events:
            self._part(event.message.tp).problem = problem

    def touch(self) -> None:
        """Work in hand moved on (e.g. a slice of a large document was embedded)."""
        now = self.clock()
        for part in self.parts.values():
            if part.inflight:
                part.since = now
                part.problem = None

    def end(self, event: Any) -> None:
        part = self._part(event.message.tp)
        part.inflight.pop(event.message.offset, None)
        part.done_offset = max(part.done_offset, event.message.offset)
        part.since = self.clock()
        part.problem = None

    def snapshot(self, highwater: Callable[[Any], int | None], assigned: Iterable[Any]) -> list[dict[str, Any]]:
        """One entry per assigned partition: whether input waits, seconds since progress."""
        now = self.clock()
        out = []
        for tp in assigned:
            part = self._part(tp)
            hw = highwater(tp)
            waiting = bool(part.inflight) or (hw is not None and part.done_offset >= 0 and hw - 1 > part.done_offset)
            if not waiting:
                part.since = now  # idle is not stalled: the clock starts when input arrives
            stalled_s = now - part.since if waiting else 0.0
            doc_id = next(iter(part.inflight.values()), None)
            out.append({"topic": tp.topic, "partition": tp.partition, "waiting": waiting,
                        "seconds_since_progress": round(stalled_s, 1), "doc_id": doc_id, "problem": part.problem})
            SECONDS_SINCE_PROGRESS.labels(self.stage, tp.topic, str(tp.partition)).set(stalled_s)
            if hw is not None and (part.done_offset >= 0 or hw == 0):  # else: unknown until the first message
                CONSUMER_LAG.labels(self.stage, str(tp.partition)).set(max(hw - part.done_offset - 1, 0))
        return out

    def verdict(self, parts: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The worst stalled partition, or None when every partition moves."""
        stalled = [p for p in parts if p["waiting"] and p["seconds_since_progress"] > self.stall_after_s]
        if not stalled:
            return None
        # The partition stuck on a document in hand first (it names the cause), then the longest.
        worst = max(stalled, key=lambda p: (p["doc_id"] is not None, p["seconds_since_progress"]))
        why = worst["problem"] or "processing has not finished"
        return {"reason": f"partition {worst['topic']}[{worst['partition']}] has made no progress for "
                          f"{worst['seconds_since_progress']:.0f} s while input waits: {why}",
                "doc_id": worst["doc_id"], "partition": worst["partition"],
                "stalled_s": worst["seconds_since_progress"]}


def make_stage(stage: str, settings: Settings, publish: Callable[[list[Output]], None] | None = None) -> Any:
    """The plain logic of a stage, as its registry entry builds it."""
    def unset(_outputs: list[Output]) -> None:
        raise ValueError(f"the {stage} stage publishes as it goes: pass publish=")

    return stage_spec(stage).build(settings, publish or unset)


def build_app(stage: str, settings: Settings, loghandlers: list[Any] | None = None,
              web_port: int | None = None) -> faust.App:
    """The Faust app of one stage worker. ``web_port`` (metrics, /healthz) defaults to the
    stage's port; a second worker of the same stage on this host needs another one."""
    spec: StageSpec = stage_spec(stage)  # raises for an unknown stage, naming the known ones
    from ragstream.kafka import faust_credentials, stage_principal

    if settings.kafka_principal is None:  # every Kafka client of this worker is the stage's principal
        settings = settings.model_copy(update={"kafka_principal": stage_principal(stage)})
    web_port = web_port or metrics_port(settings, stage)
    datadir = settings.home / "faust" / (stage if web_port == metrics_port(settings, stage) else f"{stage}-{web_port}")
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"ragstream-{stage}",
        broker=";".join(f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(",")),
        broker_credentials=faust_credentials(settings),  # SASL/TLS as every other client (ragstream/kafka.py)
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=settings.max_message_bytes + 65_536,
        producer_acks=-1,
        broker_commit_interval=0.5,  # commit soon after acks: lag (and `up`'s progress) stays current
        web_host=settings.metrics_host,
        web_bind=settings.metrics_host,  # web_host is only the advertised name; Faust binds 0.0.0.0 by default
        web_port=web_port,
        web_in_thread=False,
        datadir=str(datadir),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        loghandlers=loghandlers or [],
    )
    setup_prometheus_sensors(app, name_prefix=f"ragstream_faust_{stage}")
    for family in (EVENTS_IN, PROCESSING, STAGE_RETRIES, STALE_DROPPED, BATCH_SIZE):
        family.labels(stage)  # exported from the start (at 0), not only after the first input
    publisher = Publisher(settings, client_id=f"ragstream-{stage}", config={"linger.ms": 0})
    health = PartitionHealth(stage, settings.stall_after_s)
    claims = blob_claims(settings)

    def publish(outputs: list[Output]) -> None:
        """Publish and wait for every acknowledgement (raises PublishError otherwise)."""
        Outbox(outputs).send()

    class Outbox:
        """The outputs of one input. A retried send resends only what the broker has not
        acknowledged yet, so a retry never duplicates an acknowledged output."""

        def __init__(self, outputs: list[Output]) -> None:
            self.pending = list(outputs)

        def send(self) -> None:
            acked: set[int] = set()
            for i, o in enumerate(self.pending):
                def delivered(err: Any, _msg: Any, i: int = i) -> None:
                    if err is None:
                        acked.add(i)
                publisher.publish_raw(o.topic, o.key, o.value, partition=o.partition, on_delivery=delivered)
            try:
                publisher.flush()
            finally:
                for i in acked:
                    EVENTS_OUT.labels(stage, self.pending[i].topic).inc()
                self.pending = [o for i, o in enumerate(self.pending) if i not in acked]

    logic = make_stage(stage, settings, publish)
    if hasattr(logic, "on_progress"):
        def progressed() -> None:  # called on the stage's thread
            loop = app.loop
            loop.call_soon_threadsafe(health.touch)
        logic.on_progress = progressed
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=stage)
    source = app.topic(*getattr(logic, "input_topics", (logic.input_topic,)), key_type=bytes, value_type=bytes)
    foreign = getattr(logic, "decode", None)  # a format that is not one of our contracts (Debezium JSON)
    stale = getattr(logic, "stale", None)
    after_publish = getattr(logic, "after_publish", None)

    def assigned() -> list[Any]:
        try:
            return sorted(app.consumer.assignment()) if app.consumer else []
        except Exception:  # noqa: BLE001 - not started yet, or mid-rebalance
            return []

    def highwater(tp: Any) -> int | None:
        try:
            return app.consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - unknown until the first fetch
            return None

    def crashed() -> str | None:
        """A fetcher or agent that died makes the worker useless: say so."""
        if app._fetcher.crashed:
            return f"the Kafka fetcher crashed: {app._fetcher.crash_reason!r}"
        for agent in app.agents.values():
            for actor in getattr(agent, "_actors", ()):
                if actor.crashed:
                    return f"agent {agent.name} crashed: {actor.crash_reason!r}"
        return None

    @app.page("/healthz")
    async def healthz(self: Any, request: Any) -> Any:
        parts = health.snapshot(highwater, assigned())
        body: dict[str, Any] = {"stage": stage, "status": "ok", "partitions": parts}
        dead = crashed()
        if dead:
            body.update(status="failed", reason=dead)
            return self.json(body, status=503)
        stalled = health.verdict(parts)
        if stalled:
            body.update(status="degraded", **stalled)
            return self.json(body, status=503)
        return self.json(body)

    @app.timer(interval=1.0)
    async def watch_progress() -> None:
        health.snapshot(highwater, assigned())  # keeps ragstream_stage_seconds_since_progress current

    async def attempt(fn: Callable[[], Any], events: list[Any], ids: dict[str, Any]) -> Any:
        """Run blocking work on the stage's thread. Transient failures are retried with
        backoff within the budget; the error that ends it is returned as a Permanent."""
        budget = RetryBudget(settings.retry_budget_s)
        events = events or _IN_HAND.get()  # the event handle_one is working on, for /healthz
        while True:
            try:
                return await asyncio.get_running_loop().run_in_executor(executor, fn)
            except WriterFenced as exc:  # another audit worker is the chain's writer now
                log.critical("fenced: another worker writes the audit chain; exiting without acknowledging",
                             **ids, stage=stage, error=str(exc))
                os._exit(EXIT_UNACKNOWLEDGED)
            except Exception as exc:  # noqa: BLE001 - the one classification decides
                STAGE_ERRORS.labels(stage, type(exc).__name__).inc()
                if classify(exc) is Kind.permanent or not budget.spend():
                    raise as_permanent(exc, budget) from exc
                delay = budget.next_delay()
                STAGE_RETRIES.labels(stage).inc()
                health.retrying(events, reason(exc))
                log.warning("transient failure; will retry", **ids, stage=stage, error=reason(exc),
                            attempt=budget.attempts, retry_in_s=delay,
                            budget_left_s=round(max(0.0, settings.retry_budget_s - budget.elapsed_s), 1))
                await asyncio.sleep(delay)

    def ids_of(item: Any, event: Any) -> dict[str, Any]:
        return {"doc_id": getattr(item, "doc_id", None) if item is not None else _key(event),
                "event_id": getattr(item, "event_id", getattr(item, "request_id", None)) if item is not None else None}

    async def dead_letter(event: Any, exc: BaseException, ids: dict[str, Any]) -> None:
        """Write the dead letter (within the budget) — or exit without acknowledging."""
        STAGE_ERRORS.labels(stage, type(exc).__name__).inc()
        msg = event.message

        def send() -> None:
            with bound_contextvars(**ids, stage=stage):
                publisher.dead_letter(stage, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                                      key=msg.key, value=msg.value, error=exc)
            publisher.flush()

        try:
            await attempt(send, [event], ids)
        except Permanent as failed:
            log.critical("cannot write a dead letter; exiting without acknowledging the input (it is read again "
                         "after the restart)", **ids, stage=stage, error=str(failed))
            os._exit(EXIT_UNACKNOWLEDGED)

    async def finish(stream: Any, event: Any) -> None:
        health.end(event)
        await stream.ack(event)

    async def handle_one(stream: Any, event: Any, work: Callable[[Any], Callable[[], Any]],
                         contract: Any = None, decoded: Any = None) -> None:
        """Decode (unless ``decoded`` is given: a batch member, already read and counted),
        process, publish; dead-letter what fails; acknowledge when done."""
        item = decoded
        try:
            if item is None:
                track(event)
                if event.value is None:
                    return  # a tombstone after a delete record: nothing to do
                item = (foreign(event.value) if foreign is not None and contract is None
                        else decode(contract or logic.contract, event.value, claims=claims))
            ids = ids_of(item, event)
            health.begin([event], [ids["doc_id"]])
            _IN_HAND.set([event])
            with bound_contextvars(**ids, stage=stage), PROCESSING.labels(stage).time():
                await work(item)(ids)
        except Exception as exc:  # noqa: BLE001 - nothing escapes an agent (see the module docstring)
            ids = ids_of(item, event)
            with bound_contextvars(**ids, stage=stage):
                await dead_letter(event, as_permanent(exc), ids)
        finally:
            await finish(stream, event)

    def track(event: Any) -> None:
        EVENTS_IN.labels(stage).inc()
        msg = event.message
        hw = highwater(msg.tp)
        if hw is not None:
            CONSUMER_LAG.labels(stage, str(msg.partition)).set(max(hw - msg.offset - 1, 0))

    def process_and_publish(item: Any) -> Callable[[dict[str, Any]], Any]:
        async def run(ids: dict[str, Any]) -> None:
            if stale is not None and stale(item):
                STALE_DROPPED.labels(stage).inc()
                return
            outputs = await attempt(lambda: logic.process(item), [], ids)
            if spec.sink:  # applied to a store; False: stale or a redelivery
                if not outputs:
                    STALE_DROPPED.labels(stage).inc()
                return
            await attempt(Outbox(outputs).send, [], ids)
            if after_publish is not None:
                after_publish(item)
        return run

    if spec.batch is not None:
        batch_of = getattr(logic, "process_batch", None)

        @app.agent(source, name=f"{stage}-agent")
        async def batched(stream: Any) -> None:
            size = spec.batch(settings)
            async for events in stream.noack_take(size, within=0.05):
                try:
                    await handle_batch(stream, events)
                except Exception as exc:  # noqa: BLE001 - a bug here must not acknowledge the batch
                    log.critical("batch handling failed; exiting without acknowledging", stage=stage,
                                 error=reason(exc))
                    os._exit(EXIT_UNACKNOWLEDGED)

        async def handle_batch(stream: Any, events: list[Any]) -> None:
            BATCH_SIZE.labels(stage).observe(len(events))
            good: list[tuple[Any, Any]] = []
            for event in events:
                track(event)
                if event.value is None:
                    await finish(stream, event)
                    continue
                try:
                    good.append((event, decode(logic.contract, event.value, claims=claims)))
                except Exception as exc:  # noqa: BLE001 - undecodable: dead-letter it
                    await dead_letter(event, as_permanent(exc), ids_of(None, event))
                    await finish(stream, event)
            if not good:
                return
            health.begin([e for e, _ in good], [i.doc_id for _, i in good])
            if batch_of is not None and len(good) > 1:
                ids = {"doc_id": [i.doc_id for _, i in good], "event_id": [i.event_id for _, i in good]}
                try:
                    with PROCESSING.labels(stage).time():
                        outputs = await attempt(lambda: batch_of([i for _, i in good]),
                                                [e for e, _ in good], ids)
                except BudgetExhausted as exc:  # a dependency stayed down: every member waited its budget
                    for event, item in good:
                        await dead_letter(event, exc, ids_of(item, event))
                        await finish(stream, event)
                    return
                except Permanent:
                    outputs = None  # isolate the document that breaks the batch: one by one below
                if outputs is not None and spec.sink:  # one "applied" flag per member
                    for (event, _item), applied in zip(good, outputs):
                        if not applied:
                            STALE_DROPPED.labels(stage).inc()
                        await finish(stream, event)
                    return
                if outputs is not None:
                    for (event, item), output in zip(good, outputs):
                        await publish_then_ack(stream, event, item, [output])
                    return
            for event, item in good:
                await handle_one(stream, event, single_batch, decoded=item)

        def single_batch(item: Any) -> Callable[[dict[str, Any]], Any]:
            async def run(ids: dict[str, Any]) -> None:
                fn = (lambda: batch_of([item])) if batch_of is not None else (lambda: logic.process(item))
                outputs = await attempt(fn, [], ids)
                if spec.sink:
                    if not outputs or not outputs[0]:
                        STALE_DROPPED.labels(stage).inc()
                    return
                await attempt(Outbox(outputs).send, [], ids)
            return run

        async def publish_then_ack(stream: Any, event: Any, item: Any, outputs: list[Output]) -> None:
            ids = ids_of(item, event)
            try:
                with bound_contextvars(**ids, stage=stage):
                    await attempt(Outbox(outputs).send, [event], ids)
            except Exception as exc:  # noqa: BLE001 - e.g. the budget spent: dead-letter the input
                await dead_letter(event, as_permanent(exc), ids)
            await finish(stream, event)
    else:
        @app.agent(source, name=f"{stage}-agent")
        async def one_by_one(stream: Any) -> None:
            acks = stream.noack()
            async for event in acks.events():
                try:
                    await handle_one(acks, event, process_and_publish)
                except Exception as exc:  # noqa: BLE001 - handle_one catches all; this is a bug
                    log.critical("event handling failed; exiting without acknowledging", stage=stage,
                                 error=reason(exc))
                    os._exit(EXIT_UNACKNOWLEDGED)

    for extra in spec.extra_inputs:
        add_extra_input(app, extra, logic, stage, attempt, handle_one)

    for n, (interval, fn) in enumerate(getattr(logic, "timers", lambda: [])()):
        add_timer(app, stage, n, interval, fn, attempt, Outbox)

    return app


def add_extra_input(app: faust.App, extra: ExtraInput, logic: Any, stage: str, attempt: Any, handle_one: Any) -> None:
    """A second input of the stage (e.g. index's rag.acl): same group, same thread, same
    acknowledgement and dead-letter rules."""
    import schemas.events

    contract = getattr(schemas.events, extra.contract)
    method = getattr(logic, extra.method)

    def apply(item: Any) -> Callable[[dict[str, Any]], Any]:
        async def run(ids: dict[str, Any]) -> None:
            if not await attempt(lambda: method(item), [], ids):
                STALE_DROPPED.labels(stage).inc()
        return run

    @app.agent(app.topic(extra.topic, key_type=bytes, value_type=bytes), name=f"{stage}-{extra.method}-agent")
    async def consume(stream: Any) -> None:
        acks = stream.noack()
        async for event in acks.events():
            try:
                await handle_one(acks, event, apply, contract=contract)
            except Exception as exc:  # noqa: BLE001 - handle_one catches all; this is a bug
                log.critical("event handling failed; exiting without acknowledging", stage=stage,
                             input=extra.topic, error=reason(exc))
                os._exit(EXIT_UNACKNOWLEDGED)


def add_timer(app: faust.App, stage: str, n: int, interval: float, fn: Callable[[], Any], attempt: Any,
              outbox: Any) -> None:
    """Periodic work of the stage on its thread; outputs it returns are published. A failure
    is logged and the next tick tries again."""
    async def tick() -> None:
        try:
            outputs = await attempt(fn, [], {})
            if outputs:
                await attempt(outbox(outputs).send, [], {})
        except Permanent as exc:
            log.error("periodic work failed; the next run retries", stage=stage, work=fn.__name__, error=str(exc))

    tick.__name__ = f"{stage}_{fn.__name__}_{n}"
    app.timer(interval=interval)(tick)


def _key(event: Any) -> str | None:
    key = event.message.key
    return key.decode("utf-8", errors="replace") if isinstance(key, bytes) else key


def run_worker(stage: str, settings: Settings, handler: Any = None, web_port: int | None = None) -> None:
    app = build_app(stage, settings, loghandlers=[handler] if handler else None, web_port=web_port)
    worker = faust.Worker(app, loglevel=settings.log_level,
                          logging_config={"version": 1, "disable_existing_loggers": False},
                          redirect_stdouts=False)
    worker.execute_from_commandline()
