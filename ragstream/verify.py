"""The reconciler: does the index hold exactly what a source holds now?

``ragstream verify [SOURCE]`` takes a source's full listing (:mod:`ragstream.connector`: every
document with the version and ACL the source last published, or why it is excluded) and
compares it with three things:

* the index's per-document registry (``<collection>_docs``: version applied, deleted),
* the chunk rows in Milvus (chunk ids, the version and ACL each row carries),
* the latest compliant record of each document on the compacted ``rag.documents``.

**Expected chunk ids** come from ``rag.documents``: its latest record of a document is the
redacted text the chunk stage read, and running it through the same chunker
(:mod:`streams.chunking`, ids are content hashes) gives the ids the index must hold.
Recomputing compliance from the source text instead would re-run PII detection and the
tenant's pseudonym keys outside the pipeline, and would hide a compliance stage that
skipped a version; here that shows up as "rag.documents holds version X, the source
published Y". What this does not check is that compliance redacted correctly — that is
the compliance tests' job.

Findings, per document:

* ``missing`` — the source holds it, the index does not;
* ``stale`` — the index holds another version, other chunk ids, rows of another version,
  or another ACL than the source published (or the source changed since it published);
* ``orphan`` — the index holds it, the source does not (or excludes it);
* not drift, listed for the record: ``skipped`` and ``dead_lettered`` (with the reason:
  a dead letter in any stage explains a missing or stale document), ``blocked`` (the
  compliance policy keeps it out).

The drift count is exported as ``ragstream_verify_drift_documents{source,kind}``: ``verify``
writes it to ``<home>/metrics/verify.prom`` (the node exporter's textfile format), and
``ragstream up`` sets it on its own metrics page each time it verifies while watching.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ragstream.connector import Capability, Connector, Excluded, ListedDocument
from ragstream.settings import Settings

DRIFT = ("missing", "stale", "orphan")
#: Stages whose dead letters can explain why a document is not (yet) in the index.
DLQ_STAGES = ("ingest", "compliance", "chunk", "embed", "index")


@dataclass(frozen=True)
class Finding:
    doc_id: str
    kind: str  # missing | stale | orphan | skipped | dead_lettered | blocked
    reason: str


@dataclass
class Report:
    source: str
    listed: int  # documents the source holds and should be searchable
    indexed: int  # documents of the source the index holds
    findings: list[Finding] = field(default_factory=list)
    checked_at: float = field(default_factory=time.time)

    @property
    def drift(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in DRIFT]

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in (*DRIFT, "skipped", "dead_lettered", "blocked")}
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "listed": self.listed, "indexed": self.indexed,
                "drift": len(self.drift), "counts": self.counts(), "checked_at": self.checked_at,
                "findings": [asdict(f) for f in sorted(self.findings, key=lambda f: (f.kind, f.doc_id))]}


# ----------------------------------------------------------------------------- the index side

@dataclass
class IndexedDocument:
    version: int
    acl_version: int
    deleted: bool
    rows: list[dict[str, Any]] = field(default_factory=list)  # chunk_id, version, acl


class IndexView:
    """Read-only view of one source in Milvus: registry rows and chunk rows."""

    def __init__(self, settings: Settings, collection: str | None = None) -> None:
        from consumers.milvus import milvus_client

        self.client = milvus_client(settings.resolved_milvus_uri, 30)
        self.alias = settings.collection
        self.fixed = collection  # a given collection (a reindex's new one) instead of the alias
        self.collection: str | None = collection
        self._resolve()

    def _resolve(self) -> None:
        """The collection behind the alias, looked up at each read (a reindex moves it); None
        while nothing was ever indexed."""
        if self.fixed is None and self.alias in self.client.list_aliases().get("aliases", []):
            self.collection = self.client.describe_alias(self.alias)["collection_name"]

    def _query(self, collection: str, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        it = self.client.query_iterator(collection_name=collection, filter=expr, batch_size=2000,
                                        output_fields=fields, consistency_level="Strong")
        while batch := it.next():
            out += batch
        it.close()
        return out

    def registry(self, source_id: str) -> dict[str, IndexedDocument]:
        """doc_id → what the index stage applied last (no chunk rows): one registry query."""
        from consumers.milvus import escape_like

        self._resolve()  # the first document may have created it since
        if self.collection is None:
            return {}
        return {r["doc_id"]: IndexedDocument(r["version"], r["acl_version"], r["deleted"])
                for r in self._query(f"{self.collection}_docs", f'doc_id like "{escape_like(source_id)}:%"',
                                     ["doc_id", "version", "acl_version", "deleted"])}

    def documents(self, source_id: str) -> dict[str, IndexedDocument]:
        from consumers.milvus import escape_literal

        docs = self.registry(source_id)
        if self.collection is None:
            return docs
        for r in self._query(self.collection, f'source == "{escape_literal(source_id)}"',
                             ["chunk_id", "doc_id", "version", "acl"]):
            docs.setdefault(r["doc_id"], IndexedDocument(-1, -1, True)).rows.append(r)
        return docs


# ------------------------------------------------------------------------- what was published

@dataclass(frozen=True)
class Compliant:
    """The latest record of a document on rag.documents (None text: a delete)."""

    version: int
    deleted: bool
    text: str | None
    problem: str | None = None  # the record could not be read (what verify then reports)


def compliant_documents(settings: Settings, source_id: str) -> dict[str, Compliant]:
    """doc_id → latest record on the compacted rag.documents, for one source."""
    from ragstream.blobs import BlobError, BlobStore
    from ragstream.consumer import blob_claims, scan_topic
    from schemas import topics
    from schemas.events import DocumentRecord, Op
    from ragstream.failures import Permanent
    from schemas.serde import SerdeError, decode

    prefix = f"{source_id}:".encode()
    blobs = BlobStore(settings.blob_dir)
    claims = blob_claims(settings)  # a record larger than a message travels as a claim check
    out: dict[str, Compliant] = {}
    for msg in scan_topic(settings, topics.DOCUMENTS):
        key = msg.key() or b""
        if not key.startswith(prefix):
            continue
        doc_id = key.decode("utf-8", errors="replace")
        if msg.value() is None:
            out.pop(doc_id, None)  # tombstone
            continue
        try:
            rec = decode(DocumentRecord, msg.value(), claims=claims)
        except (SerdeError, Permanent) as exc:
            out[doc_id] = Compliant(-1, False, None, problem=f"{type(exc).__name__}: {exc}")
            continue
        text = None
        if rec.op is Op.upsert and rec.content is not None:
            try:
                text = rec.content.text if rec.content.kind == "inline" else blobs.get(rec.content)
            except BlobError as exc:
                out[doc_id] = Compliant(rec.version, False, None, problem=f"its text cannot be read: {exc}")
                continue
        prev = out.get(doc_id)
        if prev is None or rec.version >= prev.version:
            out[doc_id] = Compliant(rec.version, rec.op is Op.delete, text)
    return out


def dead_letters(settings: Settings, source_id: str) -> dict[str, str]:
    """doc_id → why its latest dead letter (in any stage) failed."""
    from ragstream.dlq import list_letters

    prefix = f"{source_id}:"
    out: dict[str, tuple[float, str]] = {}
    for stage in DLQ_STAGES:
        for item in list_letters(settings, stage):
            if not item.key.startswith(prefix) or item.letter is None:
                continue
            lt = item.letter
            when = lt.failed_at.timestamp()
            if item.key not in out or when >= out[item.key][0]:
                out[item.key] = (when, f"{stage}: {lt.error_type}: {lt.error_message}")
    return {k: v[1] for k, v in out.items()}


# ---------------------------------------------------------------------------------- comparing

def compare(source_id: str, listing: Iterable[ListedDocument | Excluded], indexed: dict[str, IndexedDocument],
            compliant: dict[str, Compliant], letters: dict[str, str],
            chunk_ids: Callable[[str, str], set[str]]) -> Report:
    """The findings for one source (pure: every input already read)."""
    from consumers.milvus import stored_acl
    from schemas.events import Acl

    present = {d: doc for d, doc in indexed.items() if not doc.deleted or doc.rows}
    report = Report(source_id, listed=0, indexed=len(present))
    listed_ids: set[str] = set()
    for entry in listing:
        if isinstance(entry, Excluded):
            if entry.doc_id in present:
                report.findings.append(Finding(entry.doc_id, "orphan",
                                               f"in the index, but the source excludes it ({entry.reason})"))
            else:
                report.findings.append(Finding(entry.doc_id, entry.kind, entry.reason))
            continue
        report.listed += 1
        listed_ids.add(entry.doc_id)
        finding = _compare_one(entry, indexed.get(entry.doc_id), compliant.get(entry.doc_id), chunk_ids,
                               stored_acl(Acl(principals=entry.acl)))
        if finding is not None:
            if finding.kind in ("missing", "stale") and entry.doc_id in letters:
                finding = Finding(entry.doc_id, "dead_lettered", letters[entry.doc_id])
            report.findings.append(finding)
    for doc_id in sorted(set(present) - listed_ids):
        if any(f.doc_id == doc_id for f in report.findings):
            continue  # an excluded document still indexed: reported above
        report.findings.append(Finding(doc_id, "orphan", "in the index, not in the source"))
    return report


def _compare_one(entry: ListedDocument, doc: IndexedDocument | None, rec: Compliant | None,
                 chunk_ids: Callable[[str, str], set[str]], acl: str) -> Finding | None:
    d = entry.doc_id
    present = doc is not None and (not doc.deleted or bool(doc.rows))
    if entry.changed_since_published:
        if not present:
            return Finding(d, "missing", "changed at the source and not published yet" if entry.version is None
                           else "not in the index, and changed at the source since it was published")
        return Finding(d, "stale", "changed at the source since it was last published (the next sync publishes it)")
    # version None, not changed: a source whose changes reach the pipeline by another path
    # (a database through Debezium, versions = LSNs) lists what it holds without the
    # version; the document is then checked for presence, chunk ids and ACL, not version.
    if entry.version is not None and doc is not None and not present and doc.version == entry.version:
        # The source published an upsert of this version; compliance turned it into a delete.
        return Finding(d, "blocked", "the compliance policy keeps it out of the index (audit: compliance.block)")
    if doc is None or not present:
        if entry.version is None:
            return Finding(d, "missing", "not in the index" if doc is None else
                           f"deleted in the index at version {doc.version} (a change not applied, or the "
                           "compliance policy blocks it: audit compliance.block)")
        return Finding(d, "missing", f"not in the index (the source published version {entry.version})")
    applied = max(doc.version, doc.acl_version)
    if entry.version is not None and applied != entry.version:
        return Finding(d, "stale", f"the index applied version {applied}; the source published {entry.version}")
    if rec is not None and rec.problem:
        return Finding(d, "stale", f"its record on rag.documents cannot be read ({rec.problem})")
    if rec is None or rec.version < doc.version:
        seen = "none" if rec is None else f"version {rec.version}"
        return Finding(d, "stale", f"rag.documents has no record of version {doc.version} the index holds "
                                   f"(it holds {seen})")
    if rec.text is None and not rec.deleted:
        return Finding(d, "stale", "its text on rag.documents cannot be read (claim check missing)")
    expected = chunk_ids(d, rec.text) if rec.text is not None else set()
    got = {r["chunk_id"] for r in doc.rows}
    if got != expected:
        # none in common: the text was chunked differently (another chunker version or chunk
        # size), not edited; every document of the index will say so
        hint = ""
        if got and expected and not (got & expected):
            from streams.chunking import CHUNKER_ID

            hint = (f"; none in common — if every document says so, the index was chunked by another chunker "
                    f"version or chunk size than this one ({CHUNKER_ID}): `ragstream reindex` rebuilds it")
        return Finding(d, "stale", f"chunk ids differ: {len(expected - got)} missing, {len(got - expected)} "
                                   f"not expected (of {len(expected)}){hint}")
    # A row keeps the version it was written at: the index rewrites only the chunks an edit
    # touched (content-addressed ids) unless what every row repeats changed, so older
    # versions next to the applied one are expected. A row newer than the applied version
    # is not: its document's registry entry was never written.
    newer = {r["version"] for r in doc.rows if r["version"] > doc.version}
    if newer:
        return Finding(d, "stale", f"rows of version(s) {sorted(newer)} above the applied version {doc.version}")
    wrong_acl = [r for r in doc.rows if r["acl"] != acl]
    if wrong_acl:
        return Finding(d, "stale", f"{len(wrong_acl)} row(s) carry ACL {wrong_acl[0]['acl'] or '(none)'}; "
                                   f"the source grants {acl or '(nobody)'}")
    return None


def verify_source(settings: Settings, source: Connector, *, index: IndexView | None = None,
                  chunk_ids: Callable[[str, str], set[str]] | None = None) -> Report:
    """Compare one source with the index now (reads Milvus, rag.documents and the dead letters).
    The source must declare the full-listing capability (:func:`can_verify`)."""
    if not can_verify(source):
        raise ValueError(f"source {source.source_id} ({source.kind}) cannot list its documents, so it cannot be "
                         "verified against the index")
    listing = list(source.full_listing())
    index = index or IndexView(settings)
    report = compare(source.source_id, listing, index.documents(source.source_id),
                     compliant_documents(settings, source.source_id), dead_letters(settings, source.source_id),
                     chunk_ids or chunker_ids(settings))
    record_metrics([report])
    return report


def can_verify(source: Connector) -> bool:
    return Capability.full_listing in source.capabilities


def chunker_ids(settings: Settings) -> Callable[[str, str], set[str]]:
    """The chunk ids the chunk stage gives a text (the same chunker, the same settings)."""
    from streams.chunking import Chunker
    from streams.embedding import token_counter

    chunker = Chunker(count=token_counter(settings), max_tokens=settings.chunk_max_tokens,
                      overlap_tokens=settings.chunk_overlap_tokens)
    return lambda doc_id, text: {c.chunk_id for c in chunker.chunk(doc_id, text)}


def record_metrics(reports: list[Report]) -> None:
    from ragstream.metrics import VERIFY_DRIFT, VERIFY_LAST_RUN

    for r in reports:
        counts = r.counts()
        for kind in DRIFT:
            VERIFY_DRIFT.labels(r.source, kind).set(counts[kind])
        VERIFY_LAST_RUN.labels(r.source).set(r.checked_at)


def write_textfile(settings: Settings) -> Path:
    """The verify gauges as a Prometheus textfile (for a node exporter's textfile collector)."""
    from prometheus_client import REGISTRY, write_to_textfile

    path = settings.home / "metrics" / "verify.prom"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), REGISTRY.restricted_registry(
        ["ragstream_verify_drift_documents", "ragstream_verify_last_run_timestamp_seconds"]))
    return path


def format_report(report: Report, show_excluded: bool = True) -> list[str]:
    counts = report.counts()
    lines = [f"{report.source}: {report.listed} document(s) to index in the source, {report.indexed} in the index"]
    for f in sorted(report.findings, key=lambda f: (f.kind not in DRIFT, f.kind, f.doc_id)):
        if f.kind in DRIFT or show_excluded:
            lines.append(f"  {f.kind:<13} {f.doc_id!r}  {f.reason}" if "\n" in f.doc_id else
                         f"  {f.kind:<13} {f.doc_id}  {f.reason}")
    drift = len(report.drift)
    lines.append(f"  drift: {drift}" + (f" ({', '.join(f'{counts[k]} {k}' for k in DRIFT if counts[k])})" if drift else "")
                 + f"; not drift: {counts['skipped']} skipped, {counts['dead_lettered']} dead-lettered, "
                 f"{counts['blocked']} blocked")
    return lines
