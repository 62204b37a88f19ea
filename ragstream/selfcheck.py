"""``ragstream check``: prove a round trip through the broker with the real publisher and serde.

Publishes ``n`` ChangeEvents over ``keys`` documents to ``rag.selftest`` (versions rising
per document), reads them back from the offsets the topic had before, and checks that
none is lost, none duplicated, and each document's versions arrive in order.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from tqdm import tqdm

from ragstream.publisher import Publisher
from ragstream.consumer import make_consumer
from ragstream.settings import Settings
from schemas.events import ChangeEvent, DocMetadata, InlineContent, Op, SourceKind
from schemas.serde import decode
from schemas.topics import SELFTEST


@dataclass
class RoundTrip:
    published: int
    consumed: int
    lost: int
    duplicated: int
    out_of_order: int
    publish_s: float
    total_s: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.consumed == self.published and not (self.lost or self.duplicated or self.out_of_order)


def sample_event(run: str, key: int, version: int) -> ChangeEvent:
    text = f"Round-trip check {run}, document {key}, version {version}."
    return ChangeEvent(
        source="selftest", source_kind=SourceKind.webhook, doc_id=f"selftest:{run}-{key}", op=Op.upsert,
        version=version, changed_at=datetime.now(timezone.utc), content=InlineContent.of(text),
        metadata=DocMetadata(title=f"selftest {key}"),
    )


_NOT_READY_YET = {
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
}


def _high_watermark(reader, partition: int, timeout: float = 30) -> int:
    """The end offset; a partition created moments ago may still be electing its leader."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return reader.get_watermark_offsets(TopicPartition(SELFTEST, partition), timeout=10)[1]
        except KafkaException as exc:
            if exc.args[0].code() not in _NOT_READY_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def round_trip(settings: Settings, n: int = 1000, keys: int = 50, show_progress: bool = True,
               timeout: float = 60.0) -> RoundTrip:
    run = uuid.uuid4().hex[:12]
    reader = make_consumer(settings, f"ragstream-selftest-{run}", **{"enable.auto.commit": False})
    meta = reader.list_topics(SELFTEST, timeout=10).topics[SELFTEST]
    if meta.error is not None:
        raise RuntimeError(f"topic {SELFTEST} is missing: run `ragstream topics ensure` first")
    starts = [TopicPartition(SELFTEST, p, _high_watermark(reader, p)) for p in meta.partitions]

    t0 = time.monotonic()
    with Publisher(settings, client_id="ragstream-selftest") as pub:
        for i in tqdm(range(n), desc="publish", unit="ev", disable=not show_progress):
            pub.publish(SELFTEST, sample_event(run, i % keys, i // keys))
    publish_s = time.monotonic() - t0

    reader.assign(starts)
    seen: dict[str, list[int]] = {}
    consumed = 0
    deadline = time.monotonic() + timeout
    with tqdm(total=n, desc="consume", unit="ev", disable=not show_progress) as bar:
        while consumed < n and time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is None or msg.error():
                continue
            event = decode(ChangeEvent, msg.value())
            if not event.doc_id.startswith(f"selftest:{run}-"):
                continue
            seen.setdefault(event.doc_id, []).append(event.version)
            consumed += 1
            bar.update()
    reader.close()

    problems = []
    duplicated = sum(len(v) - len(set(v)) for v in seen.values())
    out_of_order = sum(1 for v in seen.values() if v != sorted(v))
    expected = {f"selftest:{run}-{k}": set(range(0, (n - k + keys - 1) // keys)) for k in range(min(keys, n))}
    lost = sum(len(want - set(seen.get(doc, []))) for doc, want in expected.items())
    if lost:
        problems.append(f"{lost} event(s) never came back within {timeout:.0f}s")
    if duplicated:
        problems.append(f"{duplicated} event(s) came back more than once")
    if out_of_order:
        problems.append(f"{out_of_order} document(s) saw versions out of order")
    return RoundTrip(n, consumed, lost, duplicated, out_of_order, publish_s, time.monotonic() - t0, problems)
