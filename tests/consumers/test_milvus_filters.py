"""ACL and subject filters against both engines: milvus-lite (embedded, a file of its own) and
the real Milvus server (tests/consumers/conftest.py).

Principals and refs contain ``_`` and may contain ``%``: unescaped, ``user:john_doe`` would
also match ``user:johnXdoe`` (``_`` is LIKE's one-character wildcard), and an escape the
server does not accept fails the whole search.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from consumers.milvus import MODES, subjects_filter
from schemas.events import Acl, EmbeddedChunk, Op, SourceKind, VectorSet
from tests.consumers.conftest import open_index


def vector_set(doc: str, principals: list[str], subjects: tuple[str, ...] = ()) -> VectorSet:
    return VectorSet(source="t", source_kind=SourceKind.filesystem, doc_id=f"t:{doc}", op=Op.upsert, version=1,
                     changed_at=datetime.now(timezone.utc), acl=Acl(principals=tuple(principals), known=True),
                     subject_refs=subjects, chunker="test", model="m", dim=2,
                     chunks=(EmbeddedChunk(chunk_id=f"c-{doc}", ordinal=0, text=doc, tokens=1, vector=(1.0, 0.0)),))


@pytest.fixture
def index(request, milvus_engine, tmp_path):
    idx = open_index(request, milvus_engine, tmp_path, "filters", 2, timeout=120)
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


def test_a_caller_who_sees_much_is_filtered_after_the_walk_and_gets_only_their_own(index, monkeypatch):
    # Each caller here may see 1 of the 4 ACL sets (25% >= POSTFILTER_MIN_SHARE): dense search
    # walks without the ACL filter and keeps the caller's chunks in the process; when fewer
    # than `limit` of them are among the nearest, the filtered search answers.
    filters: list[str] = []
    real = index.client.search
    monkeypatch.setattr(index.client, "search", lambda *a, **kw: filters.append(kw.get("filter")) or real(*a, **kw))
    assert docs(index.search([1.0, 0.0], ["user:john_doe"], limit=1)) == {"underscore"}
    assert filters == [""]
    filters.clear()
    assert docs(index.search([1.0, 0.0], ["group:100%_sales"], limit=2)) == {"percent"}
    assert filters[0] == "" and filters[-1].startswith("acl_key in [")


def test_a_caller_whose_share_of_rows_is_far_below_their_share_of_sets_stops_paying_the_post_filter(
        request, milvus_engine, tmp_path, monkeypatch):
    # Two ACL sets, one of them holding 38 of 40 documents ("all staff"): a caller of the
    # other may see 1 of 2 sets but 2 of 40 rows. The first searches walk unfiltered, keep
    # the caller's rows, find too few and search again filtered; what they saw teaches the
    # share estimate, and later searches go to the filtered walk at once. Every answer is the
    # caller's two documents, nothing else.
    from consumers.milvus.schema import SHARE_OBSERVED_MIN

    idx = open_index(request, milvus_engine, tmp_path, "skewed", 2, timeout=120)
    try:
        idx.ensure()
        for i in range(40):
            few = i in (7, 23)
            idx.apply(vector_set(f"d{i}", ["group:all", "group:few"] if few else ["group:all"]))
        keys = idx.acl_sets.keys_for(["group:few"])
        assert idx.acl_sets.share(keys) == 0.5  # by sets: 1 of 2
        filters: list[str] = []
        real = idx.client.search
        monkeypatch.setattr(idx.client, "search", lambda *a, **kw: filters.append(kw.get("filter")) or real(*a, **kw))
        searches = 0
        while idx.acl_sets.share(keys) >= 0.1:
            assert docs(idx.search([1.0, 0.0], ["group:few"], limit=10)) == {"d7", "d23"}
            searches += 1
            assert searches * 40 <= SHARE_OBSERVED_MIN + 40, "the observed share never took over"
        assert idx.acl_sets.share(keys) < 0.1  # (2 visible + 1) / (rows seen + 1)
        filters.clear()
        assert docs(idx.search([1.0, 0.0], ["group:few"], limit=10)) == {"d7", "d23"}
        assert all(f.startswith("acl_key in [") for f in filters), filters  # no unfiltered walk first
        # a caller who sees everything keeps the unfiltered walk
        filters.clear()
        assert len(idx.search([1.0, 0.0], ["group:all"], limit=10)) == 10
        assert filters == [""]
    finally:
        idx.client.close()


def test_subject_filter_finds_exactly_the_documents_of_a_ref(index):
    if not index.engine.infix_like:
        # Milvus 2.3 parses only prefix patterns: the subject index needs Milvus >= 2.4 (or
        # milvus-lite). Refused as invalid input (dead-lettered, not retried), with the reason.
        from consumers.milvus import IndexInputError

        with pytest.raises(IndexInputError, match="only prefix pattern"):
            index.rows(subjects_filter(["person:00000000000000aa"]), ["doc_id"])
        return
    rows = index.rows(subjects_filter(["person:00000000000000aa"]), ["doc_id"])
    assert {r["doc_id"] for r in rows} == {"t:underscore"}


# -- property: no result is ever a chunk the caller may not see ------------------------------------

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402

UNIVERSE = ["public", "user:alice", "user:al_ce", "user:a%ice", "user:bob", "group:eng", "group:eng_ops",
            "group:e%g", "group:finance", "group:fin.ance", 'user:quo"te', "user:back\\slash"]
N_DOCS = 40


@pytest.fixture(scope="module")
def prop_index(request, milvus_engine, tmp_path_factory):
    idx = open_index(request, milvus_engine, tmp_path_factory.mktemp("prop"), "prop", 4, timeout=120)
    idx.ensure()
    yield idx
    idx.client.close()


def _vs(i: int, principals: list[str] | None, vector: tuple[float, ...], text: str = "") -> VectorSet:
    acl = Acl(principals=tuple(principals), known=True) if principals is not None else Acl.unknown()
    return VectorSet(source="p", source_kind=SourceKind.filesystem, doc_id=f"p:{i}", op=Op.upsert, version=1,
                     changed_at=datetime.now(timezone.utc), acl=acl, chunker="test", model="m", dim=4,
                     chunks=(EmbeddedChunk(chunk_id=f"p-{i}", ordinal=0, text=text or str(i), tokens=1,
                                           vector=vector),))


#: Words of the documents' texts and the queries: plain words, and identifiers the verbatim
#: leg looks up (``E1234-X`` is the tokens ``e1234`` and ``x`` to BM25).
VOCAB = ["alpha", "beta", "gamma", "delta", "E1234-X", "E1234-Y", "JIRA-4711"]


def _tokens(text: str) -> set[str]:
    """BM25's tokens of a text (the standard tokenizer, lower-cased, on these words)."""
    return set(re.findall(r"\w+", text.lower()))


vectors = st.tuples(*[st.floats(-1, 1, allow_nan=False, width=32)] * 4).filter(lambda v: any(abs(x) > 1e-3 for x in v))


#: Examples per engine: a Milvus server makes every Strong read wait for its time tick
#: (~200-400 ms), so it runs fewer (each example writes 40 documents and searches once).
EXAMPLES = {"lite": 40, "server": 6}


def test_search_never_returns_what_the_caller_may_not_see(prop_index, milvus_engine):
    check = given(
        acls=st.lists(st.one_of(st.none(), st.lists(st.sampled_from(UNIVERSE), max_size=4)),
                      min_size=N_DOCS, max_size=N_DOCS),
        doc_vectors=st.lists(vectors, min_size=N_DOCS, max_size=N_DOCS),
        texts=st.lists(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=3).map(" ".join),
                       min_size=N_DOCS, max_size=N_DOCS),
        caller=st.lists(st.sampled_from(UNIVERSE), max_size=4),
        query=vectors, query_text=st.lists(st.sampled_from(VOCAB), min_size=1, max_size=2).map(" ".join),
        mode=st.sampled_from(MODES), limit=st.integers(1, N_DOCS))(_never_leaks)
    hsettings(max_examples=EXAMPLES[milvus_engine], deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])(check)(prop_index)


def _never_leaks(prop_index, acls, doc_vectors, texts, caller, query, query_text, mode, limit):
    for i, (acl, vec, text) in enumerate(zip(acls, doc_vectors, texts)):
        prop_index.apply(_vs(i, acl, vec, text))
    visible = {f"p:{i}" for i, acl in enumerate(acls) if acl is not None and set(acl) & set(caller)}
    if not caller:
        with pytest.raises(PermissionError):
            prop_index.search(list(query), caller, limit=limit, query=query_text, mode=mode)
        return
    hits = prop_index.search(list(query), caller, limit=limit, query=query_text, mode=mode)
    got = {h.doc_id for h in hits}
    assert got <= visible, f"leaked {got - visible} in {mode} mode"
    assert len(got) == len(hits), "one chunk per document here: no duplicates"
    # Pre-filtering, not post-filtering: the caller gets as many results as they may see —
    # in lexical mode, as many as they may see that share a word with the query. An engine
    # without BM25 (Milvus 2.3) serves every mode dense: the documented fallback.
    if not prop_index.engine.full_text:
        assert prop_index.effective_mode(mode) == "dense" and not prop_index.lexical
    if prop_index.effective_mode(mode) == "lexical":
        findable = {f"p:{i}" for i, t in enumerate(texts) if _tokens(t) & _tokens(query_text)} & visible
        assert got <= findable
        assert len(got) == min(limit, len(findable))
    else:
        assert len(got) == min(limit, len(visible))
