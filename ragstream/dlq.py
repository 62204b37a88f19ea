"""Dead letters: list them, and replay them once their cause is fixed.

A dead letter in ``rag.dlq.<stage>`` is the original message (payload byte for byte) with
the reason in ``ragstream.dlq.*`` headers. Replaying a stage's letters re-publishes each
payload to the topic it came from, so the stage sees it again. The ``ingest`` stage is the
producers' own: its letters name a source item (by ``doc_id``) that could not be read, and
replaying them makes the source read that item again as it is now (e.g. a corrected PDF).

Replay reads with a consumer group (``ragstream-dlq-replay-<stage>``), so each letter is
replayed once; ``list`` reads everything from the start and changes nothing.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Message, TopicPartition

from ragstream.publisher import Publisher
from ragstream.connector import ConnectorError
from ragstream.consumer import make_consumer
from ragstream.logging import get_logger
from ragstream.settings import Settings
from schemas.events import DeadLetter
from schemas.serde import SerdeError, dead_letter_from_headers
from schemas.topics import dlq_topic

log = get_logger(__name__)


@dataclass
class Letter:
    partition: int
    offset: int
    key: str
    letter: DeadLetter | None  # None: headers unreadable (not written by ragstream)
    size: int


def _to_letter(msg: Message) -> Letter:
    try:
        letter: DeadLetter | None = dead_letter_from_headers(msg.headers())
    except SerdeError:
        letter = None
    key = msg.key().decode("utf-8", errors="replace") if msg.key() else ""
    return Letter(msg.partition(), msg.offset(), key, letter, len(msg.value() or b""))


def _drain(consumer, until: dict[int, int], timeout: float) -> list[Message]:
    out: list[Message] = []
    pending = {p for p, end in until.items() if end > 0}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        out.append(msg)
        if msg.offset() + 1 >= until[msg.partition()]:
            pending.discard(msg.partition())
    return out


def list_letters(settings: Settings, stage: str, timeout: float = 30) -> list[Letter]:
    topic = dlq_topic(stage)
    c = make_consumer(settings, f"ragstream-dlq-list-{uuid.uuid4().hex[:8]}", **{"enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        bounds = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        c.assign([TopicPartition(topic, p, low) for p, (low, _high) in bounds.items()])
        until = {p: high if high > low else 0 for p, (low, high) in bounds.items()}
        return [_to_letter(m) for m in _drain(c, until, timeout)]
    finally:
        c.close()


def replay(settings: Settings, stage: str, timeout: float = 30) -> tuple[int, int]:
    """Replay every letter not replayed before; returns (replayed, not replayed). A letter that
    is not ragstream's is logged and passed over; an ingest letter whose source cannot be
    opened here is put back at the end of the DLQ unchanged (nothing is lost)."""
    topic = dlq_topic(stage)
    c = make_consumer(settings, f"ragstream-dlq-replay-{stage}", **{"enable.auto.commit": False})
    replayed = unreadable = 0
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in parts]
        committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
        bounds = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        starts = {p: committed[p] if committed.get(p, -1) >= 0 else low for p, (low, _h) in bounds.items()}
        c.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
        until = {p: high if high > starts[p] else 0 for p, (_low, high) in bounds.items()}
        messages = _drain(c, until, timeout)
        with Publisher(settings, client_id=f"ragstream-dlq-replay-{stage}") as pub:
            for msg in messages:
                item = _to_letter(msg)
                if item.letter is None:
                    unreadable += 1
                    log.warning("not a ragstream dead letter; left alone", partition=msg.partition(), offset=msg.offset())
                    continue
                if stage == "ingest":
                    try:
                        _reingest(settings, item.key)
                    except (ConnectorError, OSError) as exc:
                        # Its source cannot be opened here (not declared, a mount missing): the
                        # letter goes back to the end of the DLQ as it was, for a later replay.
                        pub.publish_raw(topic, msg.key(), msg.value(), headers=msg.headers())
                        unreadable += 1
                        log.warning("cannot replay now: its source cannot be opened here; kept in the DLQ",
                                    doc_id=item.key, error=str(exc))
                        continue
                else:
                    pub.publish_raw(item.letter.topic, msg.key(), msg.value())
                replayed += 1
                log.info("replayed", stage=stage, doc_id=item.key, to=item.letter.topic)
        if messages:
            c.commit(offsets=[TopicPartition(topic, p, max(m.offset() for m in messages if m.partition() == p) + 1)
                              for p in {m.partition() for m in messages}], asynchronous=False)
    finally:
        c.close()
    return replayed, unreadable


def _reingest(settings: Settings, doc_id: str) -> None:
    """Read the document again from its source (through the connector contract)."""
    from ragstream.connector import open_source, source_of

    open_source(settings, source_of(doc_id)).reread([doc_id])
