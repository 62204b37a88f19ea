"""The stages' logic, as plain classes: no Kafka, no Faust, unit-testable.

Each stage turns one decoded input into zero or more :class:`Output` messages; the Faust
runtime (:mod:`streams.worker`) does the reading, batching, publishing, version state
and retries around it. Exceptions mean:

* whatever :func:`ragstream.failures.classify` calls permanent (:class:`Permanent`,
  :class:`schemas.serde.SerdeError`, invalid data for Milvus, a bug on this input) — this
  message will never succeed: dead-letter it and go on;
* whatever it calls transient (Milvus, the model server or the broker unavailable) — retry
  with backoff within the budget, then dead-letter (replayable).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

from consumers.milvus import MilvusIndex
from ragstream.blobs import BlobError, BlobStore
from ragstream.failures import Permanent
from ragstream.metrics import (
    ACL_ROWS_UPDATED,
    CHUNKS_EMBEDDED,
    CHUNKS_REUSED,
    DOCS_BLOCKED,
    DOCS_CLASSIFIED,
    INDEX_DOCS_APPLIED,
    INDEX_DOCS_DELETED,
    INDEX_ROWS_WRITTEN,
    PII_FINDINGS,
)
from schemas import topics
from schemas.events import (
    AclChange,
    AuditEvent,
    ChangeEvent,
    ChunkSet,
    Contract,
    DocMetadata,
    DocumentRecord,
    EmbeddedChunk,
    InlineContent,
    Op,
    VectorSet,
)
from schemas.serde import encode
from streams.chunking import CHUNKER_ID, Chunker
from streams.embedding import Embedder

if TYPE_CHECKING:
    from streams.pii import Detector
    from streams.policy import KeyRing, PolicyConfig, SourcePolicy

__all__ = ["Permanent", "Output", "ComplianceStage", "ChunkStage", "EmbedStage", "IndexStage"]


@dataclass(frozen=True)
class Output:
    topic: str
    key: str
    value: bytes | None  # None: a tombstone
    partition: int | None = None  # None: by key (always, except control records)

    @classmethod
    def of(cls, topic: str, event: Contract) -> "Output":
        return cls(topic, getattr(event, "doc_id"), encode(event))


def content_text(blobs: BlobStore, event: ChangeEvent | DocumentRecord) -> str:
    """The text of an upsert, inline or by claim (blob); a missing one is a Permanent failure."""
    content = event.content
    if content is None:
        raise Permanent(f"{event.doc_id}: upsert without content")
    if content.kind == "inline":
        return content.text
    try:
        return blobs.get(content)
    except BlobError as exc:
        raise Permanent(str(exc)) from None


class ComplianceStage:
    """rag.changes → rag.documents (+ rag.audit.events): nothing policy forbids goes further.

    Detects PII (:mod:`streams.pii`) in the text and the title, applies the source's policy
    (:mod:`streams.policy`: redact, mask, pseudonymize, block; classification; retention;
    metadata minimization), and records each decision as an audit event with counts and
    types only. A blocked document is published as a delete, so an earlier version leaves
    the index too. Subjects erased by a data-subject request are always redacted.
    """

    name = "compliance"
    input_topic = topics.CHANGES
    contract = ChangeEvent

    def __init__(self, blobs: BlobStore, inline_max_bytes: int, *, detector: "Detector | None" = None,
                 policy: "PolicyConfig | None" = None, keys: "KeyRing | None" = None,
                 erased: Callable[[], frozenset[str]] | None = None) -> None:
        from streams.pii import Detector
        from streams.policy import DEFAULT_POLICY, KeyRing

        self.blobs = blobs
        self.inline_max_bytes = inline_max_bytes
        self.policy = policy or DEFAULT_POLICY
        self.detector = detector or Detector(threshold=self.policy.threshold, phone_regions=self.policy.phone_regions)
        self.keys = keys or KeyRing(blobs.root.parent / "keys")
        self.erased = erased or (lambda: frozenset())
        self._seen: dict[str, int] = {}  # version guard: the newest version published per document

    def stale(self, change: ChangeEvent) -> bool:
        """Older than (or the same as) a version this worker already published: dropped."""
        return change.version <= self._seen.get(change.doc_id, -1)

    def after_publish(self, change: ChangeEvent) -> None:
        self._seen[change.doc_id] = change.version

    def process(self, change: ChangeEvent) -> list[Output]:
        from streams.policy import decide

        common: dict[str, Any] = dict(
            event_id=change.event_id, source=change.source, source_kind=change.source_kind,
            doc_id=change.doc_id, op=change.op, version=change.version, changed_at=change.changed_at,
            content_type=change.content_type, acl=change.acl,
        )
        if change.op is Op.delete:
            record = DocumentRecord(**common, metadata=change.metadata)
            # The delete record carries the version (for guards downstream); the tombstone
            # then lets compaction forget the document entirely.
            return [Output.of(topics.DOCUMENTS, record), Output(topics.DOCUMENTS, change.doc_id, None)]
        policy = self.policy.for_source(change.source)
        key = self.keys.key(policy.tenant)
        erased = self.erased()
        text = self.resolve(change)
        public = "public" in change.acl.principals
        decision = decide(text, self.detector.analyze(text), policy, key, public_acl=public, erased=erased)
        metadata = self._minimize(change.metadata, policy, key, erased)
        details: dict[str, Any] = {
            "source": change.source, "version": change.version, "classification": decision.classification.value,
            "frameworks": list(decision.frameworks), "compliant_as_found": decision.compliant,
            "actions": decision.actions, "overrides": list(decision.overrides), "findings": decision.findings,
            "subjects": len(decision.subject_refs),
        }
        for name, count in decision.actions.items():
            action, entity = name.split(":", 1)
            PII_FINDINGS.labels(entity, action).inc(count)
        DOCS_CLASSIFIED.labels(decision.classification.value).inc()
        if decision.blocked:
            DOCS_BLOCKED.inc()
            audit = AuditEvent(actor="stage:compliance", action="compliance.block", target=change.doc_id,
                               details={**details, "reason": decision.blocked})
            record = DocumentRecord(**{**common, "op": Op.delete}, metadata=metadata,
                                    classification=decision.classification, frameworks=decision.frameworks)
            return [Output.of(topics.DOCUMENTS, record), Output(topics.DOCUMENTS, change.doc_id, None),
                    Output(topics.AUDIT_EVENTS, audit.event_id, encode(audit))]
        redacted = decision.text
        content = (InlineContent.of(redacted) if len(redacted.encode("utf-8")) <= self.inline_max_bytes
                   else self.blobs.put(redacted))
        retain_until = (change.changed_at + timedelta(days=decision.retention_days)
                        if decision.retention_days else None)
        record = DocumentRecord(
            **common, metadata=metadata, content=content, content_hash=content.sha256,
            classification=decision.classification, frameworks=decision.frameworks,
            actions=tuple(sorted(decision.actions)), subject_refs=decision.subject_refs, retain_until=retain_until,
        )
        audit = AuditEvent(actor="stage:compliance", action="compliance.decision", target=change.doc_id,
                           details={**details, "retain_until": retain_until.isoformat() if retain_until else None})
        return [Output.of(topics.DOCUMENTS, record), Output(topics.AUDIT_EVENTS, audit.event_id, encode(audit))]

    def _minimize(self, md: DocMetadata, policy: "SourcePolicy", key: bytes, erased: frozenset[str]) -> DocMetadata:
        from streams.policy import decide

        drop = set(policy.minimize_metadata)
        update: dict[str, Any] = {f: ({} if f == "extra" else None) for f in drop}
        if md.title and "title" not in drop:
            update["title"] = decide(md.title, self.detector.analyze(md.title), policy, key, erased=erased).text
        return md.model_copy(update=update)

    def resolve(self, event: ChangeEvent | DocumentRecord) -> str:
        return content_text(self.blobs, event)


class ChunkStage:
    """rag.documents → rag.chunks: all chunks of a document version in one message."""

    name = "chunk"
    input_topic = topics.DOCUMENTS
    contract = DocumentRecord

    def __init__(self, chunker: Chunker, blobs: BlobStore) -> None:
        self.chunker = chunker
        self.blobs = blobs

    def process(self, doc: DocumentRecord) -> list[Output]:
        common: dict[str, Any] = dict(
            event_id=doc.event_id, source=doc.source, source_kind=doc.source_kind, doc_id=doc.doc_id,
            op=doc.op, version=doc.version, metadata=doc.metadata, acl=doc.acl,
            classification=doc.classification, subject_refs=doc.subject_refs, retain_until=doc.retain_until,
            revision=doc.revision, chunker=CHUNKER_ID,
        )
        if doc.op is Op.delete:
            return [Output.of(topics.CHUNKS, ChunkSet(**common))]
        text = content_text(self.blobs, doc)
        return [Output.of(topics.CHUNKS, ChunkSet(**common, chunks=self.chunker.chunk(doc.doc_id, text)))]


class EmbedStage:
    """rag.chunks → rag.vectors, batching chunks across documents into one model call.

    Vectors of chunks whose id (a hash of their content) is already in the index under the
    same model are reused, so an edit embeds only the chunks it changed. Identical texts
    are embedded once: within a batch, and across documents through a bounded cache of
    vectors by text hash (:attr:`CACHE_CHUNKS`; the hash, not the text, is kept — an erased
    text is gone from it once it is evicted or the worker restarts).
    """

    name = "embed"
    input_topic = topics.CHUNKS
    contract = ChunkSet

    #: Chunks embedded between two progress reports.
    PROGRESS_EVERY = 512
    #: Vectors kept by text (model, sha256 of the text) so that identical chunks of other
    #: documents — licences, headers, boilerplate — are embedded once per worker: 20,000
    #: 384-d vectors are ~31 MB. Least recently used go first.
    CACHE_CHUNKS = 20_000

    def __init__(self, embedder: Embedder, index: MilvusIndex | None) -> None:
        self.embedder = embedder
        self.index = index
        self.on_progress: Callable[[], None] = lambda: None
        self._by_text: OrderedDict[bytes, bytes] = OrderedDict()

    def process_batch(self, sets: list[ChunkSet]) -> list[Output]:
        model = self.embedder.model_id
        wanted = [c.chunk_id for s in sets if s.op is Op.upsert for c in s.chunks]
        known = {cid: np.asarray(v, dtype="<f4").tobytes() for cid, v in self._known_vectors(wanted, model).items()}
        # What is left, by text: identical texts (in this batch, or seen before) are embedded once.
        by_text: dict[bytes, list[str]] = {}
        texts: dict[bytes, str] = {}
        for s in sets:
            if s.op is not Op.upsert:
                continue
            for c in s.chunks:
                if c.chunk_id not in known:
                    key = hashlib.sha256(f"{model}\0{c.text}".encode("utf-8", "surrogatepass")).digest()
                    by_text.setdefault(key, []).append(c.chunk_id)
                    texts[key] = c.text
        for key in [k for k in by_text if k in self._by_text]:
            self._by_text.move_to_end(key)
            for cid in by_text.pop(key):
                known[cid] = self._by_text[key]
        keys = list(by_text)
        embedded = 0
        for i in range(0, len(keys), self.PROGRESS_EVERY):
            # In slices, so a document of thousands of chunks shows progress (the worker's
            # /healthz counts a slice as progress) and the counter moves while it embeds.
            part = keys[i:i + self.PROGRESS_EVERY]
            for key, vec in zip(part, self.embedder.embed([texts[k] for k in part])):
                blob = np.asarray(vec, dtype="<f4").tobytes()
                for cid in by_text[key]:
                    known[cid] = blob
                self._remember(key, blob)
            embedded += len(part)
            CHUNKS_EMBEDDED.labels(model).inc(len(part))
            self.on_progress()
        CHUNKS_REUSED.labels(model).inc(len(wanted) - embedded)
        out = []
        for s in sets:
            chunks = tuple(EmbeddedChunk(**c.model_dump(), vector=known[c.chunk_id]) for c in s.chunks)
            vs = VectorSet(**s.model_dump(exclude={"chunks", "schema_version"}), model=model,
                           dim=self.embedder.dim, chunks=chunks)
            out.append(Output.of(topics.VECTORS, vs))
        return out

    def _remember(self, key: bytes, vector: bytes) -> None:
        self._by_text[key] = vector
        if len(self._by_text) > self.CACHE_CHUNKS:
            self._by_text.popitem(last=False)

    def _known_vectors(self, chunk_ids: list[str], model: str) -> dict[str, list[float]]:
        if not chunk_ids or self.index is None:
            return {}
        return self.index.vectors(chunk_ids, model)


class IndexStage:
    """rag.vectors → Milvus, guarded by the per-document registry in Milvus itself.

    The registry row (version applied last, deleted or not, a hash of the fields every row
    repeats) is written after the rows, so a crash in between re-applies — idempotently —
    instead of skipping. A late event older than the registry's version is dropped.
    Returns True when applied, False when stale or a redelivery.
    """

    name = "index"
    input_topic = topics.VECTORS
    contract = VectorSet

    def __init__(self, index: MilvusIndex) -> None:
        self.index = index
        self.dirty = False  # writes since the last flush

    def timers(self) -> list[tuple[float, Callable[[], Any]]]:
        return [(1.0, self.flush)]

    def flush(self) -> None:
        """Searches right after unflushed inserts are slow on milvus-lite: seal writes
        within a second, but only when there were any."""
        if self.dirty:
            self.dirty = False
            try:
                self.index.flush()
            except BaseException:
                self.dirty = True  # the next tick retries
                raise

    def process(self, vs: VectorSet) -> bool:
        return self.process_batch([vs])[0]

    def process_batch(self, sets: list[VectorSet]) -> list[bool]:
        """Apply a Kafka batch of document versions with one registry read, one chunk-id
        read, one upsert (in slices of rows), one delete and one registry write: the same
        version guard and replacement as one at a time, per document. Of several versions of
        one document in the batch only the newest is applied; the others count as stale."""
        from consumers.milvus import decode_acl, stored_acl

        newest: dict[str, int] = {}
        for i, vs in enumerate(sets):
            j = newest.get(vs.doc_id)
            if j is None or (vs.version, vs.revision) > (sets[j].version, sets[j].revision):
                newest[vs.doc_id] = i
        states = self.index.doc_states(newest)
        applied = [False] * len(sets)
        todo: list[tuple[int, VectorSet, int, str]] = []  # (position, version to apply, acl_version, meta)
        for doc_id, i in newest.items():
            vs, state = sets[i], states.get(doc_id)
            if state is not None and (vs.version, vs.revision) <= (state["version"], state["revision"]):
                continue
            acl_version = state["acl_version"] if state is not None else -1
            if state is not None and acl_version > vs.version:
                # A permission change newer than this content already arrived on rag.acl: it
                # wins, so content in flight never brings back a revoked permission.
                vs = vs.model_copy(update={"acl": decode_acl(state["acl"])})
            todo.append((i, vs, acl_version, "" if vs.op is Op.delete else doc_meta_hash(vs)))
        if not todo:
            return applied
        # Rows of a document whose repeated fields are unchanged are written only if new.
        same_meta = {vs.doc_id for _, vs, _, meta in todo
                     if vs.op is not Op.delete and (st := states.get(vs.doc_id)) is not None
                     and not st["deleted"] and st["meta"] == meta}
        stored = self.index.chunk_ids_by_doc(same_meta) if same_meta else {}
        work = [(vs, {c.chunk_id for c in vs.chunks} - stored.get(vs.doc_id, set()) if vs.doc_id in same_meta else None)
                for _, vs, _, _ in todo]
        self.dirty = True
        written = self.index.apply_many(work)
        self.index.set_doc_states([dict(doc_id=vs.doc_id, version=vs.version, deleted=vs.op is Op.delete,
                                        meta=meta, acl=stored_acl(vs.acl), acl_version=acl_version,
                                        revision=vs.revision) for _, vs, acl_version, meta in todo])
        INDEX_ROWS_WRITTEN.inc(written)
        for i, vs, _, _ in todo:
            applied[i] = True
            if vs.op is Op.delete:
                INDEX_DOCS_DELETED.inc()
            INDEX_DOCS_APPLIED.labels("delete" if vs.op is Op.delete else "upsert").inc()
        return applied

    def apply_acl(self, change: AclChange) -> bool:
        """rag.acl → the document's rows get the new ACL; nothing is re-embedded.

        Stale when content or a permission change at least as new was applied already. For
        a document not (yet) indexed the ACL is kept in the registry, and content older than
        it is indexed with it.
        """
        from consumers.milvus import stored_acl

        state = self.index.doc_state(change.doc_id)
        if state is not None and change.version <= max(state["version"], state["acl_version"]):
            return False
        acl = stored_acl(change.acl)
        self.dirty = True
        if state is None:
            self.index.set_doc_state(change.doc_id, 0, True, "", acl, change.version)
            return True
        rewritten = 0 if state["deleted"] else self.index.set_acl(change.doc_id, acl)
        ACL_ROWS_UPDATED.inc(rewritten)
        # meta "" makes the next content version rewrite every row (with the ACL that wins).
        self.index.set_doc_state(change.doc_id, state["version"], state["deleted"], "", acl, change.version,
                                 revision=state["revision"])
        return True


def doc_meta_hash(vs: VectorSet) -> str:
    """What every row of a document repeats: when it changes, every row is rewritten."""
    payload = json.dumps([vs.source, vs.metadata.model_dump(mode="json"), vs.acl.model_dump(mode="json"),
                          vs.classification.value, vs.model, list(vs.subject_refs),
                          vs.retain_until.isoformat() if vs.retain_until else None], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
