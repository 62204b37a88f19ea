"""Hybrid search on both engines with the real embedding model: identifiers that dense vectors
cannot tell apart, filters, collections made before hybrid search, and permission changes on
rows whose BM25 field Milvus computes. milvus-lite has BM25; the real Milvus server of the stack
(2.3.5) has none, so there the tests assert the documented fallback: a dense-only collection,
every mode served dense, with a logged warning (consumers/milvus/engine.py).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from consumers.milvus import IndexSchemaError, SearchFilters, exact_terms, rrf, stored_acl
from consumers.milvus.search import is_question
from consumers.milvus.schema import SPARSE_FIELD
from ragstream.settings import load_settings
from schemas.events import Acl, Classification, DocMetadata, EmbeddedChunk, Op, SourceKind, VectorSet
from streams.embedding import make_embedder
from tests.consumers.conftest import open_index

#: Near-identical incident notes that differ only in their error code: what an enterprise's
#: runbooks, tickets and release notes look like to a dense model.
CODES = ["E1234-X", "E1234-Y", "E1243-X", "E2234-X", "E1234-Z", "E4321-X", "F1234-X", "E1234-XX"]
NOTE = ("Incident note: the storage service reported error {code} during the nightly backup. The operator "
        "restarted the replication job and the backup completed an hour later.")


def vs(doc: str, text: str, vector: list[float], *, principals=("group:ops",), source: str = "runbooks",
       classification: Classification = Classification.internal, modified: datetime | None = None) -> VectorSet:
    return VectorSet(source=source, source_kind=SourceKind.filesystem, doc_id=f"{source}:{doc}", op=Op.upsert,
                     version=1, acl=Acl(principals=tuple(principals), known=True), classification=classification,
                     metadata=DocMetadata(title=doc, modified_at=modified), chunker="test", model="m", dim=len(vector),
                     chunks=(EmbeddedChunk(chunk_id=f"c-{source}-{doc}", ordinal=0, text=text, tokens=30,
                                           vector=tuple(vector)),))


@pytest.fixture(scope="module")
def embedder():
    return make_embedder(load_settings())


@pytest.fixture(scope="module")
def notes(request, milvus_engine, tmp_path_factory, embedder):
    idx = open_index(request, milvus_engine, tmp_path_factory.mktemp("hybrid"), "hybrid", embedder.dim, timeout=120)
    idx.ensure()
    texts = {code: NOTE.format(code=code) for code in CODES}
    for (code, text), vec in zip(texts.items(), embedder.embed(list(texts.values()))):
        idx.apply(vs(code, text, vec))
    yield idx
    idx.client.close()


def test_an_exact_identifier_is_found_by_hybrid_search_where_dense_search_misses_it(notes, embedder):
    query = "error E1234-X"
    vector = embedder.embed([query])[0]
    dense = notes.search(vector, ["group:ops"], 3, query=query, mode="dense")
    # Precondition: the dense model cannot tell these codes apart (else this test shows nothing).
    assert dense[0].doc_id != "runbooks:E1234-X", [h.doc_id for h in dense]
    if not notes.engine.full_text:  # Milvus < 2.5: the documented fallback, dense results
        assert not notes.lexical and SPARSE_FIELD not in notes.writable_fields()
        for mode in ("hybrid", "lexical"):
            assert notes.effective_mode(mode) == "dense"
            hits = notes.search(vector, ["group:ops"], 3, query=query, mode=mode)
            assert [h.chunk_id for h in hits] == [h.chunk_id for h in dense], mode
        return
    for mode in ("hybrid", "lexical"):
        hits = notes.search(vector, ["group:ops"], 3, query=query, mode=mode)
        assert hits[0].doc_id == "runbooks:E1234-X", (mode, [h.doc_id for h in hits])
        assert hits[0].score > hits[1].score, "the verbatim match ranks alone at the top"


def test_identifiers_are_looked_for_among_the_legs_chunks_first(notes, embedder, monkeypatch):
    """A request costs milvus-lite a pass over every row, so the verbatim leg looks first
    among the chunks the legs found: when a page's worth of them hold an identifier, it gets
    no lookup of its own (no chunk beyond them could reach the page); the others are looked
    up, one request for all of them, with the results of separate lookups."""
    if not notes.engine.full_text:
        pytest.skip("Milvus < 2.5: no lexical leg (searches are dense-only)")
    query = "error E1234-X or E4321-X during the backup"
    terms = exact_terms(query)
    expr, _ = notes.search_plan(["group:ops"], 5)
    apart = [notes._verbatim(t, expr, 30) for t in terms]
    sent, search = [], notes.client.search
    monkeypatch.setattr(notes.client, "search", lambda *a, **kw: sent.append(kw["data"]) or search(*a, **kw))
    # A page of 2: E1234-X is held by 2 of the chunks found (E1234-X and E1234-XX), E4321-X by 1.
    ranked, verbatim = notes._lexical(query, terms, expr, 30, 2)
    assert [h.chunk_id for h in ranked] == [h.chunk_id for h in notes._bm25(query, expr, 30)]
    assert sent[:2] == [[query], ["E4321-X"]] and len(sent) == 3  # the third: _bm25 just above
    assert {h.doc_id for h in verbatim[0]} == {"runbooks:E1234-X", "runbooks:E1234-XX"}  # as written, within
    assert [[h.chunk_id for h in leg] for leg in verbatim[1:]] == [[h.chunk_id for h in apart[1]]]
    # A page of 1: both held by a chunk found, no lookup.
    sent.clear()
    _, verbatim = notes._lexical(query, terms, expr, 30, 1)
    assert sent == [[query]]
    assert [{h.chunk_id for h in leg} for leg in verbatim] == [{h.chunk_id for h in leg} for leg in apart]
    # A page of 5: neither is held by 5 chunks, both looked up in one request, as apart.
    sent.clear()
    _, verbatim = notes._lexical(query, terms, expr, 30, 5)
    assert sent == [[query], terms]
    assert [[h.chunk_id for h in leg] for leg in verbatim] == [[h.chunk_id for h in leg] for leg in apart]
    # The dense leg's chunks count too.
    vector = embedder.embed([query])[0]
    sent.clear()
    hits = notes.search(vector, ["group:ops"], 1, query=query, mode="hybrid")
    texts = [data for data in sent if isinstance(data[0], str)]  # the dense leg may widen its beam
    assert texts == [[query]] and hits[0].doc_id in {"runbooks:E1234-X", "runbooks:E4321-X"}
    sent.clear()
    hits = notes.search(vector, ["group:ops"], 5, query=query, mode="lexical")
    assert len(sent) == 2 and {h.doc_id for h in hits[:2]} == {"runbooks:E1234-X", "runbooks:E4321-X"}


def test_a_page_of_identifier_holders_is_found_beyond_the_legs():
    """Fifteen chunks hold the identifier; the query's BM25 leg found one of them among
    chunks that share its other word: the page is the holders all the same."""
    from consumers.milvus.search import Hit, SearchMixin, _fuse

    holders = [Hit(f"h{i:02d}", f"d:h{i}", 0.0, "s", "t", "u", "", f"log E1234-X line {i}") for i in range(15)]
    others = [Hit(f"b{i:02d}", f"d:b{i}", 0.0, "s", "t", "u", "", f"backup notes {i}") for i in range(40)]

    class Index(SearchMixin):
        def _bm25_each(self, queries, expr, limit):
            return [(holders if q == "E1234-X" else [holders[0], *others])[:limit] for q in queries]

    ranked, verbatim = Index()._lexical("E1234-X backup", ["E1234-X"], "true", 30, 10)
    assert [h.doc_id for h in _fuse([ranked], verbatim, 10)] == [h.doc_id for h in holders[:10]]


def test_an_error_in_the_dense_leg_is_the_search_s_error(notes, embedder, monkeypatch):
    """The dense leg runs in a worker thread; Milvus failing there fails the search as a
    transient index error, as on the caller's own thread."""
    from pymilvus.exceptions import MilvusException

    if not notes.engine.full_text:
        pytest.skip("Milvus < 2.5: hybrid searches are dense-only, on the caller's thread")

    def broken(*a, **kw):
        raise MilvusException(message="dense leg down")

    monkeypatch.setattr(notes, "_ann", broken)
    with pytest.raises(Exception, match="dense leg down") as caught:
        notes.search(embedder.embed(["backup"])[0], ["group:ops"], 3, query="backup", mode="hybrid")
    assert type(caught.value).__name__ == "TransientIndexError"


def test_every_leg_is_acl_filtered(notes, embedder):
    vector = embedder.embed(["error E1234-X"])[0]
    for mode in ("hybrid", "dense", "lexical"):
        assert notes.search(vector, ["group:strangers"], 5, query="error E1234-X", mode=mode) == []
        with pytest.raises(PermissionError):
            notes.search(vector, [], 5, query="error E1234-X", mode=mode)


def test_filters_narrow_every_mode(request, milvus_engine, tmp_path, embedder):
    idx = open_index(request, milvus_engine, tmp_path, "filters", embedder.dim, timeout=120)
    idx.ensure()
    jan, jun = datetime(2026, 1, 15, tzinfo=timezone.utc), datetime(2026, 6, 15, tzinfo=timezone.utc)
    docs = [("a", "wiki", Classification.internal, jan), ("b", "wiki", Classification.confidential, jun),
            ("c", "tickets", Classification.internal, jun), ("d", "tickets", Classification.public, None)]
    text = "Rotating the database password requires a maintenance window."
    vec = embedder.embed([text])[0]
    for doc, source, cls, modified in docs:
        idx.apply(vs(doc, text, vec, source=source, classification=cls, modified=modified))
    cut = int(datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp())
    cases = {
        SearchFilters(sources=("wiki",)): {"wiki:a", "wiki:b"},
        SearchFilters(classifications=("internal", "public")): {"wiki:a", "tickets:c", "tickets:d"},
        SearchFilters(modified_after=cut): {"wiki:b", "tickets:c"},
        SearchFilters(modified_before=cut): {"wiki:a", "tickets:d"},  # unknown time reads as 0
        SearchFilters(sources=("tickets",), modified_after=cut): {"tickets:c"},
        SearchFilters(sources=('wiki" or source != "',)): set(),  # a literal, not an expression
    }
    for filters, want in cases.items():
        for mode in ("hybrid", "dense", "lexical"):
            hits = idx.search(vec, ["group:ops"], 10, query="database password", mode=mode, filters=filters)
            assert {h.doc_id for h in hits} == want, (filters, mode)
    idx.client.close()


def test_a_collection_made_before_hybrid_search_is_served_dense_only(request, milvus_engine, tmp_path, embedder):
    idx = open_index(request, milvus_engine, tmp_path, "old", embedder.dim, timeout=120)
    idx._create_dense_only(f"{idx.alias}_1")  # what an older ragstream (or a Milvus without BM25) made
    idx.client.create_alias(collection_name=f"{idx.alias}_1", alias=idx.alias)
    idx.ensure()
    assert not idx.lexical and SPARSE_FIELD not in idx.writable_fields()
    text = "Incident note: error E1234-X during the nightly backup."
    vec = embedder.embed([text])[0]
    idx.apply(vs("x", text, vec))
    assert idx.effective_mode("hybrid") == "dense" and idx.effective_mode("lexical") == "dense"
    hits = idx.search(vec, ["group:ops"], 5, query="E1234-X", mode="hybrid")
    assert [h.doc_id for h in hits] == ["runbooks:x"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-3), "dense scores: cosine similarity"
    assert idx.set_acl("runbooks:x", stored_acl(Acl(principals=("group:sre",), known=True))) == 1
    assert idx.search(vec, ["group:sre"], 5, query="E1234-X", mode="hybrid")[0].doc_id == "runbooks:x"
    idx.client.close()


def test_a_permission_change_keeps_rows_findable_by_words(notes, embedder):
    """set_acl upserts whole rows: it must not write the BM25 output, and Milvus recomputes it."""
    assert SPARSE_FIELD not in notes.writable_fields()
    assert notes.set_acl("runbooks:E4321-X", stored_acl(Acl(principals=("group:audit",), known=True))) == 1
    if not notes.engine.full_text:  # Milvus < 2.5: no words to find by; the new ACL holds for dense search
        vector = embedder.embed([NOTE.format(code="E4321-X")])[0]
        assert [h.doc_id for h in notes.search(vector, ["group:audit"], 5, query="E4321-X", mode="lexical")] \
            == ["runbooks:E4321-X"]
        assert all(h.doc_id != "runbooks:E4321-X" for h in notes.search(vector, ["group:ops"], 10))
        return
    hits = notes.search(None, ["group:audit"], 5, query="E4321-X", mode="lexical")
    assert [h.doc_id for h in hits] == ["runbooks:E4321-X"]
    assert all(h.doc_id != "runbooks:E4321-X"
               for h in notes.search(None, ["group:ops"], 10, query="E4321-X", mode="lexical"))


def test_exact_terms_and_rank_fusion():
    assert exact_terms('disk full E1234-X, see JIRA-4711 "clause 4.2"') == ["clause 4.2", "E1234-X", "JIRA-4711"]
    assert exact_terms("how do I reset my password in 2024") == []
    fused = rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert sorted(fused, key=lambda d: -fused[d]) == ["a", "c", "b"]
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    weighted = rrf([["a", "b", "c"], ["c", "a"]], k=60, weights=[1.0, 0.3])
    assert weighted["c"] == pytest.approx(1 / 63 + 0.3 / 61)


@pytest.mark.parametrize("query, question", [
    ("how do I reset my password", True), ("Why is the build slow?", True), ("is it safe to share a key", True),
    ("password reset steps", False), ("how do I fix E1234-X", False),  # an identifier asks for the exact words
    ('what does "clause 4.2" say', False), ("the 14 words of a passage from the middle of a file here", False),
    ("can Debian packages be built without fakeroot", True), ("Is it safe to share a key", True),
    ("May 2024 board minutes", False), ("Will Smith contract", False), ("Can opener recall", False),
    ("Do not disturb policy", False), ("Do not disturb policy?", True),
])
def test_a_question_is_told_from_a_lookup(query, question):
    assert is_question(query) is question


def test_a_mode_that_does_not_exist_is_refused(notes):
    with pytest.raises(ValueError, match="unknown search mode"):
        notes.search([0.0] * notes.dim, ["group:ops"], 5, query="x", mode="semantic")
    if notes.engine.full_text:
        with pytest.raises(ValueError, match="needs the query's text"):
            notes.search([0.0] * notes.dim, ["group:ops"], 5, query=" ", mode="hybrid")
    else:  # served dense (the fallback): the vector is all it needs
        assert len(notes.search([1.0] + [0.0] * (notes.dim - 1), ["group:ops"], 5, query=" ", mode="hybrid")) == 5
    assert isinstance(IndexSchemaError("x"), RuntimeError)


def test_an_identifier_crowded_out_of_the_bm25_candidates_is_still_found(request, milvus_engine, tmp_path,
                                                                         embedder, monkeypatch):
    """The verbatim leg looks among BM25's best candidates for the identifier first; when
    none of them holds it (here 2 candidates, crowded by chunks repeating its pieces), it
    scans every visible chunk, so an identifier present in the index is never lost."""
    idx = open_index(request, milvus_engine, tmp_path, "crowd", embedder.dim, timeout=120)
    idx.ensure()
    if not idx.engine.full_text:
        pytest.skip("Milvus < 2.5: no verbatim leg (searches are dense-only)")
    texts = {"crowd1": "4 2 1 4 2 1 4 2 1", "crowd2": "4 2 1 4 2 1 4 2 1 4 2 1",
             "crowd3": "1 2 4 1 2 4 1 2 4 1 2 4",
             "notes": "Release notes for the storage service, a long page about many other things: "
                      "upgrade to 4.2.1 before the backup window, then restart the replication job."}
    for (doc, text), vec in zip(texts.items(), embedder.embed(list(texts.values()))):
        idx.apply(vs(doc, text, vec))
    expr, _ = idx.search_plan(["group:ops"], 1)
    monkeypatch.setattr("consumers.milvus.search.VERBATIM_CANDIDATES", 2)
    top2 = {h.doc_id for h in idx._bm25("4.2.1", expr, 2)}
    assert "runbooks:notes" not in top2, "precondition: BM25 ranks the crowd first (else this shows nothing)"
    assert [h.doc_id for h in idx._verbatim("4.2.1", expr, 1)] == ["runbooks:notes"]
    assert idx._verbatim("4.2.2", expr, 1) == []
    assert idx.search(None, ["group:strangers"], 5, query="4.2.1", mode="lexical") == []
    idx.client.close()
