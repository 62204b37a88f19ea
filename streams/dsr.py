"""Data-subject requests (GDPR Art. 15-20, CCPA) and retention: the ``dsr`` worker.

Requests arrive on ``rag.dsr`` (one partition, keyed by request id) from ``ragstream dsr``.
They name the subject only by pseudonymous refs (``person:<hmac>``, the same refs the
compliance stage records in ``DocumentRecord.subject_refs`` and Milvus' ``subjects``
field), so no raw identifier travels through Kafka. Every request ends in a receipt, an
``AuditEvent`` ``dsr.<kind>.completed`` chained into ``rag.audit``, with per-store counts,
the deadline (GDPR one month, CCPA 45 days) and whether it was met.

Erasure, in order (each step is idempotent, so a redelivered request is harmless):

1. the refs go on ``rag.dsr.erased`` (compacted, the suppression list): every compliance
   worker reads it and redacts these subjects in every later version of every document;
2. wait until compliance has consumed ``rag.changes``: anything it published before it saw
   the list is now on ``rag.documents``;
3. every latest document on ``rag.documents`` that references the subject is re-published
   with a higher version and the subject removed from text and title (an allowed value
   becomes ``[PERSON]``, a pseudonym token ``[PERSON:ab12…]`` too). Under a legal hold or
   SOX the document is *restricted* instead: dropped from the index (a delete record and a
   tombstone), kept at its source. Old redacted blobs are deleted;
4. wait until chunk, embed and index have applied that: Milvus rows of the old versions
   are gone (Strong-consistency query);
5. ``rag.chunks`` and ``rag.vectors`` (derived, replayable from ``rag.documents``) are
   truncated up to the offsets their consumers committed (Kafka ``DeleteRecords``);
6. old values on the compacted ``rag.documents`` disappear by compaction: the topic rolls
   its segments after ``segment.ms`` (= ``max.compaction.lag.ms``) — when nothing else is
   written, the worker appends a tombstone per partition so the roll happens — and the
   cleaner removes the superseded values. The worker re-reads every downstream topic from
   its first offset until the subject is found nowhere, or ``erasure_verify_timeout_s``
   passes (then the receipt says ``verified: false`` and what remains).

``rag.changes`` holds raw content for ``raw_retention_days`` and forgets it by retention;
the receipt gives that date. Rectification re-reads the subject's documents from their
source (file-system sources; others are listed as pending). Access and portability write
a JSON export (mode 0600) under ``<home>/dsr/`` and record its sha256.

Retention: every ``retention_sweep_s`` the worker asks Milvus for rows whose
``retain_until`` has passed and publishes a delete for each such document (not under a
legal hold), with a ``retention.delete`` audit record.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from ragstream.blobs import BlobError, BlobStore
from ragstream.kafka import client_config
from ragstream.logging import get_logger
from ragstream.metrics import DSR_DURATION, DSR_REQUESTS, RETENTION_DELETED, RETENTION_HELD
from schemas import topics
from schemas.events import (
    AuditEvent,
    DocumentRecord,
    DsrKind,
    DsrRequest,
    ErasedSubject,
    InlineContent,
    Op,
    new_event_id,
    utcnow,
)
from schemas.serde import SerdeError, decode, encode

if TYPE_CHECKING:
    from consumers.milvus import MilvusIndex
    from ragstream.settings import Settings
    from streams.pii import Detector
    from streams.policy import KeyRing, PolicyConfig
    from streams.stages import Output

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


class DsrStage:
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

    def access(self, req: DsrRequest) -> dict[str, Any]:
        """Art. 15 / Art. 20: everything indexed that references the subject, as JSON."""
        refs = frozenset(req.subject_refs)
        docs = self.referencing(refs)
        rows = self.milvus_rows(refs)
        per_doc: dict[str, int] = {}
        for r in rows:
            per_doc[r["doc_id"]] = per_doc.get(r["doc_id"], 0) + 1
        export = {
            "request_id": req.request_id, "kind": req.kind.value, "framework": req.framework,
            "generated_at": utcnow().isoformat(), "subject_refs": list(req.subject_refs),
            "purpose": "enterprise search and retrieval-augmented generation over the listed sources",
            "documents": [{
                "doc_id": d.doc_id, "source": d.source, "source_kind": str(d.source_kind),
                "title": d.metadata.title, "uri": d.metadata.uri, "changed_at": d.changed_at.isoformat(),
                "classification": d.classification.value, "frameworks": list(d.frameworks),
                "actions_applied": list(d.actions),
                "retain_until": d.retain_until.isoformat() if d.retain_until else None,
                "chunks_indexed": per_doc.get(d.doc_id, 0), "text": self._text(d),
            } for d in sorted(docs, key=lambda d: d.doc_id)],
        }
        data = json.dumps(export, indent=2, ensure_ascii=False).encode("utf-8")
        path = self.settings.home / "dsr" / f"{req.request_id}.{req.kind.value}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return {"documents": len(docs), "milvus_rows": len(rows), "export": str(path),
                "export_sha256": hashlib.sha256(data).hexdigest()}

    def rectify(self, req: DsrRequest) -> dict[str, Any]:
        """Art. 16: re-read the subject's documents from their (corrected) sources, each
        through its connector (:mod:`ragstream.connector`); a source that cannot be opened
        here is reported as pending at the source."""
        from ragstream.admin import wait_drained
        from ragstream.connector import ConnectorError, open_source

        refs = frozenset(req.subject_refs)
        by_source: dict[str, list[str]] = {}
        for d in self.referencing(refs):
            by_source.setdefault(d.source, []).append(d.doc_id)
        pending: dict[str, int] = {}
        reread = 0
        for source, doc_ids in by_source.items():
            try:
                open_source(self.settings, source).reread(doc_ids)
                reread += len(doc_ids)
            except (ConnectorError, OSError) as exc:
                log.warning("cannot re-read a source for rectification", source=source, error=str(exc))
                pending[source] = pending.get(source, 0) + len(doc_ids)
        drained = wait_drained(self.settings, timeout=600, stages=("compliance", "chunk", "embed", "index"))
        return {"documents_reread": reread, "pending_at_source": pending, "applied": drained,
                "verified": drained and not pending}

    def erase(self, req: DsrRequest) -> dict[str, Any]:
        """Art. 17: remove the subject from every store downstream of compliance."""
        from ragstream.admin import wait_drained
        from streams.stages import Output

        refs = frozenset(req.subject_refs)
        self.publish([Output(topics.DSR_ERASED, ref, encode(ErasedSubject(ref=ref, request_id=req.request_id)))
                      for ref in sorted(refs)])
        wait_drained(self.settings, timeout=600, stages=("compliance",))
        rows_before = len(self.milvus_rows(refs))
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
        remaining, waited = self._verify(refs, last_write)
        raw_until = utcnow() + timedelta(days=self.settings.raw_retention_days)
        return {
            "documents_rewritten": rewritten, "documents_restricted": restricted,
            "milvus_rows_before": rows_before, "milvus_rows_after": remaining.get("milvus", 0),
            "records_truncated": truncated, "blobs_deleted": blobs, "remaining": remaining,
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
    def timers(self) -> list[tuple[float, Any]]:
        return [(self.settings.retention_sweep_s, self.sweep_retention)]

    def sweep_retention(self) -> list["Output"]:
        """Deletes for documents past ``retain_until`` (not under a legal hold), audited."""
        from streams.stages import Output

        now = datetime.now(timezone.utc)
        rows = self.index.first_rows(f"retain_until > 0 and retain_until <= {int(now.timestamp())}",
                                     ["doc_id", "source", "source_kind", "version", "retain_until"])
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r["doc_id"] not in latest or r["version"] > latest[r["doc_id"]]["version"]:
                latest[r["doc_id"]] = r
        out: list[Output] = []
        held = 0
        for doc_id, r in sorted(latest.items()):
            if self.policy.for_source(r["source"]).legal_hold:
                held += 1
                continue
            if self._swept.get(doc_id) == r["version"]:
                continue  # sent already; the index has not applied it yet
            state = self.index.doc_state(doc_id)
            gone = DocumentRecord(event_id=new_event_id(), source=r["source"], source_kind=r["source_kind"],
                                  doc_id=doc_id, op=Op.delete, version=r["version"],
                                  revision=(state["revision"] if state else 0) + 1, changed_at=now)
            until = datetime.fromtimestamp(r["retain_until"], timezone.utc).isoformat()
            audit = AuditEvent(actor="stage:dsr", action="retention.delete", target=doc_id,
                               details={"source": r["source"], "version": r["version"], "retain_until": until})
            out += [Output.of(topics.DOCUMENTS, gone), Output(topics.DOCUMENTS, doc_id, None),
                    Output(topics.AUDIT_EVENTS, audit.event_id, encode(audit))]
            self._swept[doc_id] = r["version"]
            RETENTION_DELETED.inc()
        RETENTION_HELD.set(held)
        if out or held:
            log.info("retention sweep", deleted=len(out) // 3, held=held)
        return out


# -- filing and following requests (the CLI and API side) ---------------------------------------

#: CLI option → the entity type whose pseudonym identifies the subject.
IDENTIFIERS = {"name": "PERSON", "email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "ssn": "US_SSN",
               "mrn": "MEDICAL_RECORD_NUMBER"}


class UnknownTenant(ValueError):
    """A request names a tenant that neither the policy nor any key knows (a typo would
    otherwise get a fresh key, match nothing, and still report "verified")."""


def subject_refs_for(keys: "KeyRing", tenant: str, identifiers: dict[str, list[str]],
                     tenants: Iterable[str] = ("default",)) -> tuple[str, ...]:
    """Pseudonymous refs of the identifiers a requester gave (``{"name": ["Jane Roe"]}``).
    ``tenants``: those the policy names; any other tenant must already have a key."""
    from streams.policy import subject_ref

    known = set(tenants)
    if tenant not in known and not keys.known(tenant):
        raise UnknownTenant(f"unknown tenant {tenant!r}: no policy names it and it has no pseudonym key, so no "
                            f"document can reference this subject under it. Tenants: {', '.join(sorted(known))}")
    key = keys.key(tenant)
    refs = {subject_ref(key, IDENTIFIERS[kind], value) for kind, values in identifiers.items() for value in values}
    return tuple(sorted(refs))


def submit(settings: "Settings", kind: DsrKind, refs: tuple[str, ...], *, framework: str = "GDPR",
           tenant: str = "default", actor: str) -> DsrRequest:
    """Publish a request to ``rag.dsr`` and record its receipt (``dsr.<kind>.received``)."""
    from ragstream.publisher import Publisher
    from schemas.events import DSR_DEADLINE_DAYS

    received = utcnow()
    req = DsrRequest(kind=kind, framework=framework, tenant=tenant, subject_refs=refs, received_at=received,
                     due_at=received + timedelta(days=DSR_DEADLINE_DAYS[framework]), requested_by=actor)
    audit = AuditEvent(actor=actor, action=f"dsr.{kind.value}.received", target=req.request_id,
                       details={"kind": kind.value, "framework": framework, "tenant": tenant,
                                "subjects": list(req.subject_refs), "due_at": req.due_at.isoformat()})
    with Publisher(settings, client_id="ragstream-dsr-client") as pub:
        pub.publish(topics.DSR, req, key=req.request_id)
        pub.publish_raw(topics.AUDIT_EVENTS, audit.event_id, encode(audit))
        pub.flush()
    return req


def requests(settings: "Settings") -> list[DsrRequest]:
    from ragstream.consumer import scan_topic

    out = []
    for msg in scan_topic(settings, topics.DSR):
        try:
            out.append(decode(DsrRequest, msg.value()))
        except SerdeError:
            continue
    return out


def receipts(settings: "Settings") -> dict[str, dict[str, Any]]:
    """Completed requests, from the audit chain: request id → receipt details (+ ``seq``)."""
    from streams.audit import read_chain

    return {r.target: {**r.details, "seq": r.seq} for r in read_chain(settings)
            if r.action.startswith("dsr.") and r.action.endswith(".completed")}


def wait_receipt(settings: "Settings", request_id: str, timeout: float,
                 tick: Callable[[], None] | None = None) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = receipts(settings).get(request_id)
        if found is not None:
            return found
        if tick:
            tick()
        time.sleep(2)
    return None
