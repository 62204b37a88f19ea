"""The dsr stage: one request at a time from rag.dsr, dispatched by kind (see the package docstring)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Callable
from ragstream.blobs import BlobStore
from ragstream.metrics import DSR_DURATION, DSR_REQUESTS
from schemas import topics
from schemas.events import AuditEvent, DocumentRecord, DsrKind, DsrRequest, Op, utcnow
from schemas.serde import SerdeError, decode, encode
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consumers.milvus import MilvusIndex
    from ragstream.settings import Settings
    from streams.pii import Detector
    from streams.policy import KeyRing, PolicyConfig
    from streams.stages import Output
from streams.dsr.erasure import ErasureMixin
from streams.dsr.access import AccessMixin
from streams.dsr.rectification import RectificationMixin
from streams.dsr.retention import RetentionMixin
from ragstream.logging import get_logger

log = get_logger(__name__)


def latest_documents(settings: "Settings") -> dict[str, DocumentRecord]:
    """The latest live version of every document on ``rag.documents`` (deletes removed)."""
    from ragstream.consumer import scan_topic

    docs: dict[str, DocumentRecord] = {}
    for msg in scan_topic(settings, topics.DOCUMENTS):
        key = (msg.key() or b"").decode()
        if msg.value() is None:
            docs.pop(key, None)
            continue
        try:
            rec = decode(DocumentRecord, msg.value())
        except SerdeError:
            continue  # not ours to judge here; the chunk stage dead-letters it
        if rec.op is Op.delete:
            docs.pop(rec.doc_id, None)
        elif rec.doc_id not in docs or (rec.version, rec.revision) >= (docs[rec.doc_id].version,
                                                                       docs[rec.doc_id].revision):
            docs[rec.doc_id] = rec
    return docs


class DsrStage(AccessMixin, RectificationMixin, ErasureMixin, RetentionMixin):
    """rag.dsr → receipts on rag.audit.events; also the retention sweep.

    Unlike the other stages this one orchestrates: it publishes as it goes (``publish``
    is the worker's acknowledged publish) and waits for other stages between steps.
    """

    name = "dsr"
    input_topic = topics.DSR
    contract = DsrRequest

    def __init__(self, settings: "Settings", publish: Callable[[list["Output"]], None], *,
                 policy: "PolicyConfig", keys: "KeyRing", index: "MilvusIndex",
                 detector: "Detector | None" = None) -> None:
        from streams.pii import Detector

        self.settings = settings
        self.publish = publish
        self.policy = policy
        self.keys = keys
        self.index = index
        self.detector = detector or Detector(threshold=policy.threshold)
        self.blobs = BlobStore(settings.blob_dir)
        self._swept: dict[str, int] = {}  # doc_id → version a retention delete was sent for

    #: How often the open requests' due dates are read (:meth:`watch_due`).
    WATCH_DUE_S = 60.0

    def timers(self) -> list[tuple[float, Any]]:
        return [*RetentionMixin.timers(self), (self.WATCH_DUE_S, self.watch_due)]

    # -- due dates ---------------------------------------------------------------------------
    def watch_due(self) -> None:
        """Export how many requests are open and the earliest due date among them: those in
        rag.dsr from the group's committed offset on (read, not consumed; the one in hand is
        among them until its offset is committed). Runs on the stage's thread, between
        requests. The alert RagstreamDsrDeadlineNear fires on it."""
        from confluent_kafka import TopicPartition

        from ragstream.consumer import make_consumer
        from ragstream.metrics import DSR_NEXT_DUE, DSR_OPEN

        due: list[datetime] = []
        c = make_consumer(self.settings, "ragstream-dsr", **{"enable.auto.commit": False})
        try:
            parts = c.list_topics(topics.DSR, timeout=10).topics[topics.DSR].partitions
            tps = [TopicPartition(topics.DSR, p) for p in parts]
            for tp in c.committed(tps, timeout=10):
                low, high = c.get_watermark_offsets(tp, timeout=10)
                start = tp.offset if tp.offset >= 0 else low
                if start >= high:
                    continue
                c.assign([TopicPartition(topics.DSR, tp.partition, start)])
                while True:
                    msg = c.poll(5)
                    if msg is None or msg.error():
                        break
                    if msg.value() is not None:
                        try:
                            due.append(decode(DsrRequest, msg.value()).due_at)
                        except SerdeError:
                            pass  # the stage dead-letters it when it gets there
                    if msg.offset() >= high - 1:
                        break
        finally:
            c.close()
        DSR_OPEN.set(len(due))
        DSR_NEXT_DUE.set(min(due).timestamp() if due else 0)

    # -- requests --------------------------------------------------------------------------
    def process(self, req: DsrRequest) -> list["Output"]:
        from streams.stages import Output

        t0 = time.monotonic()
        with DSR_DURATION.labels(req.kind.value).time():
            handler = {DsrKind.access: self.access, DsrKind.portability: self.access,
                       DsrKind.erasure: self.erase, DsrKind.rectification: self.rectify}[req.kind]
            details = handler(req)
        done = utcnow()
        details.update(kind=req.kind.value, framework=req.framework, tenant=req.tenant,
                       subjects=list(req.subject_refs), received_at=req.received_at.isoformat(),
                       due_at=req.due_at.isoformat(), completed_at=done.isoformat(),
                       deadline_met=done <= req.due_at, seconds=round(time.monotonic() - t0, 3))
        outcome = "verified" if details.get("verified", True) else "pending"
        DSR_REQUESTS.labels(req.kind.value, outcome).inc()
        log.info("data-subject request completed", request_id=req.request_id, kind=req.kind.value, outcome=outcome)
        receipt = AuditEvent(actor="stage:dsr", action=f"dsr.{req.kind.value}.completed", target=req.request_id,
                             details=details)
        return [Output(topics.AUDIT_EVENTS, receipt.event_id, encode(receipt))]

    def referencing(self, refs: frozenset[str]) -> list[DocumentRecord]:
        return [d for d in latest_documents(self.settings).values() if refs & set(d.subject_refs)]

    def milvus_rows(self, refs: frozenset[str]) -> list[dict[str, Any]]:
        from consumers.milvus import escape_like, subjects_filter
        from streams.policy import subject_tokens

        expr = subjects_filter(refs) + "".join(f' or text like "%{escape_like(t)}%"' for t in subject_tokens(refs))
        return self.index.rows(expr, ["chunk_id", "doc_id"])
