"""Writes to the chunk collection (a mixin of MilvusIndex: consumers/milvus/index.py)."""

from __future__ import annotations

from typing import Any, Iterable

from consumers.milvus.schema import MAX_HEADING, MAX_SUBJECTS, MAX_TEXT, MAX_TITLE, MAX_URI, MODIFIED_FIELD
from consumers.milvus.acl import acl_key, check_acl, encode_acl, escape_literal, stored_acl
from pymilvus.exceptions import MilvusException
from schemas.events import VectorSet


class WriterMixin:
    """Writes: a document version's rows replace the previous ones (used by MilvusIndex)."""

    # -- writes ---------------------------------------------------------------------------
    def apply(self, vs: VectorSet, write_ids: set[str] | None = None) -> int:
        """Make Milvus hold exactly ``vs``'s chunks for its document; return the rows written.

        ``write_ids`` limits which rows are (re)written — the others are already there,
        unchanged.
        """
        doc = escape_literal(vs.doc_id)
        try:
            if vs.op == "delete" or not vs.chunks:
                self.client.delete(collection_name=self.target, filter=f'doc_id == "{doc}"')
                return 0
            rows = [self._row(vs, c) for c in vs.chunks if write_ids is None or c.chunk_id in write_ids]
            if rows:
                self.register_acls({r["acl"] for r in rows})
                self.client.upsert(collection_name=self.target, data=rows)
            keep = ", ".join(f'"{escape_literal(c.chunk_id)}"' for c in vs.chunks)
            self.client.delete(collection_name=self.target, filter=f'doc_id == "{doc}" and chunk_id not in [{keep}]')
            return len(rows)
        except MilvusException as exc:
            raise self._transient(f"Milvus write failed for {vs.doc_id}: {exc}", exc) from exc

    #: Rows per upsert call when a batch of documents is written at once (gRPC messages stay
    #: well under Milvus's 64 MB limit: a row is ~1.5 KB of vector plus its text).
    UPSERT_ROWS = 1000

    def apply_many(self, work: list[tuple[VectorSet, set[str] | None]]) -> int:
        """:meth:`apply` for several documents (one version each) with one upsert of every
        new row, then one delete of every row no version keeps; return the rows written.

        Same guarantees as one by one: new rows are in before old ones go, so a crash in
        between leaves extra rows that the re-application (the registry was not written)
        removes. Chunk ids hash the document id, so one ``chunk_id not in [...]`` over every
        kept id never keeps a row of another document."""
        if not work:
            return 0
        if len({vs.doc_id for vs, _ in work}) != len(work):
            raise ValueError("apply_many takes one version per document")
        deleted = [vs.doc_id for vs, _ in work if vs.op == "delete" or not vs.chunks]
        live = [(vs, ids) for vs, ids in work if not (vs.op == "delete" or not vs.chunks)]
        rows = [self._row(vs, c) for vs, ids in live for c in vs.chunks if ids is None or c.chunk_id in ids]
        try:
            if rows:
                self.register_acls({r["acl"] for r in rows})
                for i in range(0, len(rows), self.UPSERT_ROWS):
                    self.client.upsert(collection_name=self.target, data=rows[i:i + self.UPSERT_ROWS])
            if live:
                docs = ", ".join(f'"{escape_literal(vs.doc_id)}"' for vs, _ in live)
                keep = ", ".join(f'"{escape_literal(c.chunk_id)}"' for vs, _ in live for c in vs.chunks)
                self.client.delete(collection_name=self.target, filter=f"doc_id in [{docs}] and chunk_id not in [{keep}]")
            if deleted:
                docs = ", ".join(f'"{escape_literal(d)}"' for d in deleted)
                self.client.delete(collection_name=self.target, filter=f"doc_id in [{docs}]")
        except MilvusException as exc:
            names = ", ".join(vs.doc_id for vs, _ in work[:5]) + (" …" if len(work) > 5 else "")
            raise self._transient(f"Milvus write failed for {len(work)} document(s) ({names}): {exc}", exc) from exc
        return len(rows)

    def _row(self, vs: VectorSet, chunk: Any) -> dict[str, Any]:
        md = vs.metadata
        acl = check_acl(stored_acl(vs.acl))
        return {
            "chunk_id": chunk.chunk_id,
            "doc_id": vs.doc_id,
            "source": vs.source,
            "source_kind": str(vs.source_kind),
            "version": vs.version,
            "heading": _clip_utf8(chunk.heading or "", MAX_HEADING),
            "title": _clip_utf8(md.title or "", MAX_TITLE),
            "uri": _clip_utf8(md.uri or "", MAX_URI),
            "text": _clip_utf8(chunk.text, MAX_TEXT),
            "acl": acl,
            "acl_key": acl_key(acl),
            "classification": vs.classification.value,
            "subjects": _clip_list(vs.subject_refs, MAX_SUBJECTS),
            "retain_until": int(vs.retain_until.timestamp()) if vs.retain_until else 0,
            **({MODIFIED_FIELD: int(md.modified_at.timestamp()) if md.modified_at else 0}
               if MODIFIED_FIELD in self._field_map() else {}),
            "model": vs.model,
            "vector": chunk.floats(),
        }

    def flush(self) -> None:
        try:
            self.client.flush(self.target)
        except MilvusException as exc:
            raise self._transient(f"Milvus flush failed: {exc}", exc) from exc


def _clip_list(values: Iterable[str], limit: int) -> str:
    """``|a|b|`` within ``limit`` bytes, dropping whole values (never half a reference)."""
    kept: list[str] = []
    size = 1
    for v in sorted(set(values)):
        size += len(v.encode("utf-8")) + 1
        if size > limit:
            break
        kept.append(v)
    return encode_acl(kept)


def _clip_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")
