"""A plain consumer loop for tools and sinks that do not run in Faust.

At-least-once: an offset is stored only after its message was handled or dead-lettered
(and the dead letter acknowledged), so a crash re-reads rather than skips. A message that
cannot be decoded, or whose handler raises :class:`PermanentError`, goes to
``rag.dlq.<stage>`` with its payload intact and the loop goes on; any other exception
propagates (a transient failure must not be dead-lettered).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from ragstream.publisher import Publisher
from ragstream.blobs import BlobStore
from ragstream.failures import Permanent
from ragstream.kafka import client_config
from ragstream.logging import get_logger
from ragstream.metrics import CONSUMED
from ragstream.settings import Settings
from schemas.events import Contract
from schemas.serde import SerdeError, decode

log = get_logger(__name__)
T = TypeVar("T", bound=Contract)


#: This message will never succeed as it is: dead-letter it, with this message as the reason.
PermanentError = Permanent


@dataclass
class ConsumeStats:
    handled: int = 0
    dead_lettered: int = 0


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    conf = client_config(settings, **{
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
    })
    conf.update(overrides)
    return Consumer(conf)


def consume(
    settings: Settings,
    *,
    topics: list[str],
    contract: type[T],
    stage: str,
    group_id: str,
    handle: Callable[[T, Message], None],
    publisher: Publisher,
    stop: Callable[[], bool] = lambda: False,
    idle_timeout: float | None = None,
) -> ConsumeStats:
    """Run until ``stop()`` is true or nothing arrived for ``idle_timeout`` seconds."""
    stats = ConsumeStats()
    claims = blob_claims(settings)
    consumer = make_consumer(settings, group_id)
    consumer.subscribe(topics)
    last_message = time.monotonic()
    try:
        while not stop():
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_timeout is not None and time.monotonic() - last_message > idle_timeout:
                    break
                continue
            if msg.error():
                if msg.error().fatal():
                    raise KafkaException(msg.error())
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", error=msg.error().str())
                continue
            last_message = time.monotonic()
            try:
                handle(decode(contract, msg.value(), claims=claims), msg)
                stats.handled += 1
                CONSUMED.labels(stage, msg.topic()).inc()
            except (SerdeError, PermanentError) as exc:
                publisher.dead_letter(stage, topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                                      key=msg.key(), value=msg.value(), error=exc)
                publisher.flush()  # the dead letter is durable before the offset moves past it
                stats.dead_lettered += 1
            consumer.store_offsets(msg)
    finally:
        consumer.close()  # commits the stored offsets
    return stats


def blob_claims(settings: Settings) -> Callable[[dict[str, Any]], bytes]:
    """The resolver of claim checks (messages whose payload sits in the blob store)."""
    from ragstream.blobs import BlobError
    from schemas.events import BlobRef

    blobs = BlobStore(settings.blob_dir)

    def resolve(ref: dict[str, Any]) -> bytes:
        try:
            return blobs.get_bytes(BlobRef.model_validate(ref))
        except (BlobError, ValueError) as exc:
            raise Permanent(f"claim check cannot be resolved: {exc}") from None

    return resolve


def scan_topic(settings: Settings, topic: str, timeout: float = 30) -> Iterator[Message]:
    """Every message of ``topic`` now stored, partition by partition, from the first offset
    still kept to the end as of the call; no consumer group, nothing committed.

    Compacted topics have offset gaps and may end in removed records, so the end of each
    partition is found by partition EOF, not by counting offsets.
    """
    import uuid

    from confluent_kafka import TopicPartition

    consumer = Consumer(client_config(settings, **{
        "group.id": f"ragstream-scan-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "enable.partition.eof": True, "isolation.level": "read_committed"}))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaException(f"topic {topic} does not exist; run `ragstream topics ensure`")
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            while True:
                msg = consumer.poll(timeout)
                if msg is None:
                    raise TimeoutError(f"reading {topic}[{p}]: nothing arrived within {timeout} s")
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        break
                    raise KafkaException(msg.error())
                yield msg
                if msg.offset() >= high - 1:
                    break
    finally:
        consumer.close()
