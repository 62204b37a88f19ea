"""Erasure (GDPR Art. 17) and the erased-subjects list every compliance worker honours."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from ragstream.blobs import BlobError
from ragstream.kafka import client_config
from schemas import topics
from schemas.events import DocumentRecord, DsrRequest, ErasedSubject, InlineContent, Op, new_event_id, utcnow
from schemas.serde import SerdeError, decode, encode
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ragstream.settings import Settings
    from streams.stages import Output
from ragstream.logging import get_logger

log = get_logger(__name__)


#: Topics downstream of compliance that an erasure must leave clean (DESIGN.md).
DOWNSTREAM = (topics.DOCUMENTS, topics.CHUNKS, topics.VECTORS, topics.dlq_topic("chunk"),
              topics.dlq_topic("embed"), topics.dlq_topic("index"))
#: Derived topics truncated after an erasure, and the consumer group that must have read them.
DERIVED = ((topics.CHUNKS, "ragstream-embed"), (topics.VECTORS, "ragstream-index"))
ROLL_KEY = b"__ragstream_roll__"


class ErasedSubjects:
    """The suppression list, kept current by a background reader of ``rag.dsr.erased``.

    No consumer group: every compliance worker reads the whole (one-partition) topic.
    :meth:`start` returns once the topic has been read to its end, so a worker never
    processes a document before it knows every subject erased so far.
    """

    def __init__(self, settings: "Settings") -> None:
        self.settings = settings
        self._refs: set[str] = set()
        self._snapshot: frozenset[str] = frozenset()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="erased-subjects", daemon=True)

    def start(self, timeout: float = 60) -> "ErasedSubjects":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"could not read {topics.DSR_ERASED} within {timeout:.0f} s"
                               + (f": {self._error}" if self._error else "; is the broker up and the topic created?"))
        return self

    def __call__(self) -> frozenset[str]:
        return self._snapshot

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        consumer = Consumer(client_config(self.settings, **{
            "group.id": f"ragstream-erased-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "enable.partition.eof": True}))
        consumer.assign([TopicPartition(topics.DSR_ERASED, 0, OFFSET_BEGINNING)])
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        self._ready.set()
                    else:
                        self._error = RuntimeError(msg.error().str())
                        log.warning("reading the erased-subjects list failed; retrying", error=msg.error().str())
                    continue
                key = (msg.key() or b"").decode()
                if msg.value() is None:
                    self._refs.discard(key)
                else:
                    try:
                        self._refs.add(decode(ErasedSubject, msg.value()).ref)
                    except SerdeError as exc:
                        log.error("ignoring a malformed erased-subject record", offset=msg.offset(), error=str(exc))
                self._snapshot = frozenset(self._refs)
        finally:
            consumer.close()



class ErasureMixin:
    """Art. 17: erasure across every store downstream of compliance."""

    def erase(self, req: DsrRequest) -> dict[str, Any]:
        """Art. 17: remove the subject from every store downstream of compliance."""
        from ragstream.admin import wait_drained
        from streams.graph import erase_from_graph, graph_contributions
        from streams.stages import Output

        refs = frozenset(req.subject_refs)
        self.publish([Output(topics.DSR_ERASED, ref, encode(ErasedSubject(ref=ref, request_id=req.request_id)))
                      for ref in sorted(refs)])
        wait_drained(self.settings, timeout=600, stages=("compliance",))
        rows_before = len(self.milvus_rows(refs))
        graph_before = graph_contributions(self.settings, refs)  # the knowledge graph (0s when disabled)
        rewritten = restricted = blobs = 0
        last_write = time.monotonic()
        for _ in range(3):  # a document compliance published just before it saw the list
            docs = self.referencing(refs)
            if not docs and not self.milvus_rows(refs):
                break
            for doc in docs:
                outputs, kind, old_blob = self._erase_from(doc, refs)
                self.publish(outputs)
                last_write = time.monotonic()
                rewritten += kind == "rewritten"
                restricted += kind == "restricted"
                if old_blob is not None:
                    blobs += self._drop_blob(old_blob)
            wait_drained(self.settings, timeout=600, stages=("chunk", "embed", "index"))
        truncated = self._truncate_derived()
        graph = erase_from_graph(self.settings, refs, graph_before)
        remaining, waited = self._verify(refs, last_write)
        remaining["graph"] = graph["after"]
        raw_until = utcnow() + timedelta(days=self.settings.raw_retention_days)
        return {
            "documents_rewritten": rewritten, "documents_restricted": restricted,
            "milvus_rows_before": rows_before, "milvus_rows_after": remaining.get("milvus", 0),
            "records_truncated": truncated, "blobs_deleted": blobs, "graph": graph, "remaining": remaining,
            "verified": not any(remaining.values()), "verify_seconds": round(waited, 1),
            "raw_changes_forgotten_by": raw_until.isoformat(),
        }

    def _erase_from(self, doc: DocumentRecord, refs: frozenset[str]) -> tuple[list["Output"], str, Any]:
        from streams.policy import erase_subjects
        from streams.stages import Output

        policy = self.policy.for_source(doc.source)
        # The same version, one revision more: a rewrite never shadows the source's next version.
        base = dict(event_id=new_event_id(), version=doc.version, revision=doc.revision + 1)
        if policy.legal_hold or "SOX" in doc.frameworks:
            # A duty to retain overrides erasure: restrict (leave the index), keep at the source.
            gone = DocumentRecord(**{**base, "source": doc.source, "source_kind": doc.source_kind,
                                     "doc_id": doc.doc_id, "op": Op.delete, "changed_at": utcnow(), "acl": doc.acl})
            return [Output.of(topics.DOCUMENTS, gone), Output(topics.DOCUMENTS, doc.doc_id, None)], "restricted", \
                doc.content if doc.content is not None and doc.content.kind == "blob" else None
        key = self.keys.key(policy.tenant)
        text = self._text(doc)
        text, _ = erase_subjects(text, self.detector.analyze(text), key, refs)
        title = doc.metadata.title
        if title:
            title, _ = erase_subjects(title, self.detector.analyze(title), key, refs)
        content = (InlineContent.of(text) if len(text.encode("utf-8")) <= self.settings.inline_max_bytes
                   else self.blobs.put(text))
        new = doc.model_copy(update={
            **base, "content": content, "content_hash": content.sha256,
            "metadata": doc.metadata.model_copy(update={"title": title}),
            "subject_refs": tuple(r for r in doc.subject_refs if r not in refs),
            "actions": tuple(sorted(set(doc.actions) | {"erase:SUBJECT"})),
        })
        old_blob = doc.content if doc.content is not None and doc.content.kind == "blob" \
            and doc.content.sha256 != content.sha256 else None
        return [Output.of(topics.DOCUMENTS, new)], "rewritten", old_blob

    def _text(self, doc: DocumentRecord) -> str:
        if doc.content is None:
            return ""
        if doc.content.kind == "inline":
            return doc.content.text
        try:
            return self.blobs.get(doc.content)
        except BlobError as exc:
            log.warning("a document's blob cannot be read", doc_id=doc.doc_id, error=str(exc))
            return ""

    def _drop_blob(self, ref: Any) -> int:
        from urllib.parse import unquote, urlparse

        path = Path(unquote(urlparse(ref.uri).path))
        if path.exists():
            path.unlink()
            return 1
        return 0

    def _truncate_derived(self) -> dict[str, int]:
        """Delete records of the derived topics up to what their consumers committed."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        from ragstream.admin import admin_client

        admin = admin_client(self.settings)
        reader = Consumer(client_config(self.settings, **{"group.id": "ragstream-dsr-probe"}))
        out: dict[str, int] = {}
        try:
            for topic, group in DERIVED:
                parts = sorted(admin.list_topics(topic, timeout=10).topics[topic].partitions)
                req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in parts])
                committed = admin.list_consumer_group_offsets([req])[group].result(timeout=10).topic_partitions
                cut, count = [], 0
                for tp in committed:
                    low, _high = reader.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
                    if tp.offset > low:
                        cut.append(TopicPartition(topic, tp.partition, tp.offset))
                        count += tp.offset - low
                if cut:
                    for fut in admin.delete_records(cut, request_timeout=30).values():
                        fut.result(timeout=60)
                out[topic] = count
        finally:
            reader.close()
        return out

    def leftovers(self, refs: frozenset[str]) -> dict[str, int]:
        """Where the subject is still found: Milvus rows and downstream topics from their start."""
        from ragstream.consumer import scan_topic
        from streams.policy import subject_tokens

        needles = [r.encode() for r in refs] + [t.encode() for t in subject_tokens(refs)]
        found = {"milvus": len(self.milvus_rows(refs))}
        for topic in DOWNSTREAM:
            found[topic] = sum(1 for m in scan_topic(self.settings, topic)
                               if m.value() is not None and any(n in m.value() for n in needles))
        return found

    def _verify(self, refs: frozenset[str], last_write: float) -> tuple[dict[str, int], float]:
        """Re-check until clean; roll rag.documents' segments so compaction can run."""
        segment_s = self.settings.compaction_lag_hours * 3600
        t0 = time.monotonic()
        deadline = t0 + self.settings.erasure_verify_timeout_s
        rolled_at = 0.0
        while True:
            remaining = self.leftovers(refs)
            if not any(remaining.values()) or time.monotonic() > deadline:
                return remaining, time.monotonic() - t0
            since = time.monotonic() - max(last_write, rolled_at)
            if remaining.get(topics.DOCUMENTS) and since > segment_s:
                self._roll_documents()
                rolled_at = time.monotonic()
            time.sleep(min(5.0, max(1.0, segment_s / 4)))

    def _roll_documents(self) -> None:
        """Append a tombstone to each partition: the active segment, older than segment.ms,
        rolls, and the superseded values in it become compactable."""
        from ragstream.admin import admin_client
        from streams.stages import Output

        parts = admin_client(self.settings).list_topics(topics.DOCUMENTS, timeout=10).topics[topics.DOCUMENTS].partitions
        self.publish([Output(topics.DOCUMENTS, ROLL_KEY.decode(), None, partition=p) for p in sorted(parts)])

    # -- retention -------------------------------------------------------------------------
