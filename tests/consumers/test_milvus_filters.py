"""ACL and subject filters against a real milvus-lite (embedded, a file of its own).

Principals and refs contain ``_`` and may contain ``%``: unescaped, ``user:john_doe`` would
also match ``user:johnXdoe`` (``_`` is LIKE's one-character wildcard), and an escape the
server does not accept fails the whole search.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from consumers.milvus import MilvusIndex, subjects_filter
from schemas.events import Acl, EmbeddedChunk, Op, SourceKind, VectorSet


def vector_set(doc: str, principals: list[str], subjects: tuple[str, ...] = ()) -> VectorSet:
    return VectorSet(source="t", source_kind=SourceKind.filesystem, doc_id=f"t:{doc}", op=Op.upsert, version=1,
                     changed_at=datetime.now(timezone.utc), acl=Acl(principals=tuple(principals), known=True),
                     subject_refs=subjects, chunker="test", model="m", dim=2,
                     chunks=(EmbeddedChunk(chunk_id=f"c-{doc}", ordinal=0, text=doc, tokens=1, vector=(1.0, 0.0)),))


@pytest.fixture
def index(tmp_path):
    idx = MilvusIndex(str(tmp_path / "lite.db"), "filters", 2)
    idx.ensure()
    idx.apply(vector_set("underscore", ["user:john_doe"], ("person:00000000000000aa",)))
    idx.apply(vector_set("lookalike", ["user:johnXdoe"], ("person:0000000000000bbb",)))
    idx.apply(vector_set("percent", ["group:100%_sales"]))
    idx.apply(vector_set("percent-lookalike", ["group:100XYsales"]))
    yield idx
    idx.client.close()  # stops the embedded server now, not at interpreter exit


def docs(hits) -> set[str]:
    return {h.doc_id.split(":", 1)[1] for h in hits}


def test_wildcard_characters_in_principals_match_only_themselves(index):
    assert docs(index.search([1.0, 0.0], ["user:john_doe"])) == {"underscore"}
    assert docs(index.search([1.0, 0.0], ["user:johnXdoe"])) == {"lookalike"}
    assert docs(index.search([1.0, 0.0], ["group:100%_sales"])) == {"percent"}
    assert docs(index.search([1.0, 0.0], ["user:nobody"])) == set()
    with pytest.raises(PermissionError):
        index.search([1.0, 0.0], [])


def test_subject_filter_finds_exactly_the_documents_of_a_ref(index):
    rows = index.rows(subjects_filter(["person:00000000000000aa"]), ["doc_id"])
    assert {r["doc_id"] for r in rows} == {"t:underscore"}
