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
                self.client.delete(collection_name=self.alias, filter=f'doc_id == "{doc}"')
                return 0
            rows = [self._row(vs, c) for c in vs.chunks if write_ids is None or c.chunk_id in write_ids]
            if rows:
                self.register_acls({r["acl"] for r in rows})
                self.client.upsert(collection_name=self.alias, data=rows)
            keep = ", ".join(f'"{escape_literal(c.chunk_id)}"' for c in vs.chunks)
            self.client.delete(collection_name=self.alias, filter=f'doc_id == "{doc}" and chunk_id not in [{keep}]')
            return len(rows)
        except MilvusException as exc:
            raise self._transient(f"Milvus write failed for {vs.doc_id}: {exc}", exc) from exc

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
            self.client.flush(self.alias)
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
