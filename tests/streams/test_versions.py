"""No invented versions: ragstream's own rewrites (erasure, retention) are revisions of a
version, so the source's next real version is never dropped as stale."""

from __future__ import annotations

import numpy as np

from schemas.events import EmbeddedChunk, Op, VectorSet
from streams.stages import IndexStage


class FakeIndex:
    """The registry and rows of one collection, in memory (the calls IndexStage makes)."""

    def __init__(self) -> None:
        self.state: dict[str, dict] = {}
        self.rows: dict[str, set[str]] = {}

    def doc_states(self, doc_ids):
        return {d: dict(self.state[d]) for d in doc_ids if d in self.state}

    def set_doc_states(self, states):
        for s in states:
            self.state[s["doc_id"]] = {k: v for k, v in s.items() if k != "doc_id"}

    def apply_many(self, work):
        for vs, _ in work:
            self.rows[vs.doc_id] = {c.chunk_id for c in vs.chunks} if vs.op is Op.upsert else set()
        return sum(len(vs.chunks) for vs, _ in work)

    def chunk_ids_by_doc(self, doc_ids):
        return {d: self.rows[d] for d in doc_ids if d in self.rows}


def vset(version: int, revision: int, text: str, op: Op = Op.upsert) -> VectorSet:
    chunks = () if op is Op.delete else (EmbeddedChunk(chunk_id=text, ordinal=0, text=text, tokens=1,
                                                       vector=np.ones(4, dtype="<f4").tobytes()),)
    return VectorSet(source="db", doc_id="db:42", op=op, version=version, revision=revision, source_kind="postgres",
                     chunker="structural-v1", model="m", dim=4, chunks=chunks, acl={"principals": ["group:hr"]})


def test_an_erasure_rewrite_does_not_shadow_the_sources_next_version():
    stage = IndexStage(FakeIndex())  # type: ignore[arg-type]
    assert stage.process(vset(7, 0, "Jane Roe works in HR"))
    assert stage.process(vset(7, 1, "[PERSON] works in HR"))  # the erasure's rewrite of version 7
    assert not stage.process(vset(7, 0, "Jane Roe works in HR"))  # a late redelivery of the original
    assert stage.index.rows["db:42"] == {"[PERSON] works in HR"}
    assert stage.process(vset(8, 0, "[PERSON] moved to finance"))  # the source's next version: applied
    assert stage.index.rows["db:42"] == {"[PERSON] moved to finance"}


def test_a_retention_delete_is_a_revision_and_a_later_edit_comes_back():
    stage = IndexStage(FakeIndex())  # type: ignore[arg-type]
    assert stage.process(vset(3, 0, "old policy"))
    assert stage.process(vset(3, 1, "", Op.delete))  # retention ended
    assert stage.index.rows["db:42"] == set()
    assert not stage.process(vset(3, 0, "old policy"))  # the expired content does not come back
    assert stage.process(vset(4, 0, "new policy"))  # edited at the source later: indexed again
    assert stage.index.rows["db:42"] == {"new policy"}


def test_the_registry_keeps_the_revision_in_meta_and_reads_old_rows():
    from consumers.milvus import MilvusIndex

    class Client:
        def __init__(self):
            self.row = None

        def upsert(self, collection_name, data):
            self.row = data[0]

        def query(self, collection_name, filter, output_fields):
            return [self.row] if self.row else []

    idx = MilvusIndex.__new__(MilvusIndex)
    idx.collection, idx.client = "c", Client()
    idx.set_doc_state("db:42", 7, False, "abcd", revision=2)
    assert idx.doc_state("db:42")["revision"] == 2 and idx.doc_state("db:42")["meta"] == "abcd"
    idx.client.row["meta"] = "abcd"  # written before revisions existed
    assert idx.doc_state("db:42")["revision"] == 0 and idx.doc_state("db:42")["meta"] == "abcd"


def test_a_mistyped_tenant_is_refused_and_keys_are_created_atomically(tmp_path):
    import pytest

    from streams.dsr import UnknownTenant, subject_refs_for
    from streams.policy import KeyRing

    keys = KeyRing(tmp_path / "keys")
    refs = subject_refs_for(keys, "acme", {"name": ["Jane Roe"]}, tenants=("default", "acme"))
    assert refs and (tmp_path / "keys" / "pseudonym-acme.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(UnknownTenant, match="unknown tenant 'acmee'"):
        subject_refs_for(keys, "acmee", {"name": ["Jane Roe"]}, tenants=("default", "acme"))
    assert not (tmp_path / "keys" / "pseudonym-acmee.key").exists()
    # A tenant with a key (e.g. from an older policy) is still known.
    assert subject_refs_for(KeyRing(tmp_path / "keys"), "acme", {"name": ["Jane Roe"]}) == refs
    # No leftover temporary files from the atomic creation.
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["pseudonym-acme.key"]
