"""Graph versus documents: does the graph hold exactly the live documents of ``rag.documents``?

``expected_documents`` reads the compacted topic once (no consumer group): the latest record
of each document, by (version, revision); a delete (or a tombstone) makes it absent.
``check_graph`` compares that with the graph's live documents and adds the graph's own
structural checks (:meth:`GraphStore.integrity`). Drift 0 means: no document missing, none
stale, none left over, ACLs equal, and every entity and relation backed by evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schemas import topics
from schemas.events import DocumentRecord, Op
from schemas.serde import SerdeError, decode

if TYPE_CHECKING:
    from consumers.graph.store import GraphStore
    from ragstream.settings import Settings


@dataclass(frozen=True)
class Expected:
    version: int
    revision: int
    acl: tuple[str, ...]
    acl_version: int = -1  # the newest permission-only change (rag.acl) seen for it, if any


def expected_documents(settings: "Settings", *, with_acl_changes: bool = True) -> dict[str, Expected]:
    """The live documents of ``rag.documents`` (latest record per doc_id), with the ACL that
    should apply (a newer permission-only change on ``rag.acl`` wins, as in the index)."""
    from ragstream.consumer import blob_claims, scan_topic
    from schemas.events import AclChange

    claims = blob_claims(settings)
    latest: dict[str, DocumentRecord | None] = {}
    for msg in scan_topic(settings, topics.DOCUMENTS):
        if msg.value() is None:
            continue  # a tombstone follows a delete record, which already decided
        try:
            rec = decode(DocumentRecord, msg.value(), claims=claims)
        except SerdeError:
            continue
        prev = latest.get(rec.doc_id)
        if prev is None or (rec.version, rec.revision) >= (prev.version, prev.revision):
            latest[rec.doc_id] = rec
    out = {d: Expected(r.version, r.revision, tuple(sorted(r.acl.principals)) if r.acl.known else ())
           for d, r in latest.items() if r is not None and r.op is Op.upsert}
    if with_acl_changes:
        for msg in scan_topic(settings, topics.ACL):
            if msg.value() is None:
                continue
            try:
                change = decode(AclChange, msg.value())
            except SerdeError:
                continue
            exp = out.get(change.doc_id)
            if exp is not None and change.version > max(exp.version, exp.acl_version):
                acl = tuple(sorted(change.acl.principals)) if change.acl.known else ()
                out[change.doc_id] = Expected(exp.version, exp.revision, acl, change.version)
    return out


@dataclass
class GraphDrift:
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    acl: list[str] = field(default_factory=list)
    integrity: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.missing) + len(self.stale) + len(self.orphaned) + len(self.acl) + sum(self.integrity.values())

    def summary(self) -> str:
        parts = [f"{name} {len(v)}" for name, v in (("missing", self.missing), ("stale", self.stale),
                                                     ("orphaned", self.orphaned), ("acl", self.acl)) if v]
        parts += [f"{k} {v}" for k, v in self.integrity.items() if v]
        return f"drift {self.total}" + (f" ({', '.join(parts)})" if parts else "")


def check_graph(store: "GraphStore", expected: dict[str, Expected], *, source: str | None = None) -> GraphDrift:
    """Compare the graph with ``expected`` (see :func:`expected_documents`); with ``source``,
    only that source's documents (the structural checks are always global)."""
    def mine(doc_id: str) -> bool:
        return source is None or doc_id.startswith(f"{source}:")

    expected = {d: e for d, e in expected.items() if mine(d)}
    have = {d: v for d, v in store.documents().items() if mine(d)}
    acls = store.doc_acls()
    drift = GraphDrift(integrity=store.integrity())
    for doc_id, exp in sorted(expected.items()):
        got = have.get(doc_id)
        if got is None:
            drift.missing.append(doc_id)
        elif got != (exp.version, exp.revision):
            drift.stale.append(f"{doc_id}: graph {got[0]}.{got[1]}, documents {exp.version}.{exp.revision}")
        elif acls.get(doc_id, ()) != exp.acl:
            drift.acl.append(doc_id)
    drift.orphaned = sorted(set(have) - set(expected))
    return drift
