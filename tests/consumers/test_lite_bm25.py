"""The numpy BM25 scorer gives milvus-lite's own results, bit for bit (consumers/milvus/lite_bm25.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from milvus_lite.index.sparse_inverted import SparseInvertedIndex

from consumers.milvus.lite_bm25 import ArrayBM25Index, install


def corpus(rng: random.Random, rows: int, vocabulary: int) -> list[dict[int, float]]:
    """Sparse term-frequency vectors with Zipf-like word use (a few words in most rows), some
    rows empty, and many exact duplicates (ties)."""
    docs: list[dict[int, float]] = []
    for _ in range(rows):
        if docs and rng.random() < 0.2:
            docs.append(dict(rng.choice(docs)))
            continue
        doc: dict[int, float] = {}
        for _ in range(rng.choice([0, 3, 8, 20, 60])):
            term = int(vocabulary * rng.random() ** 3)  # skewed: low ids are common
            doc[term] = doc.get(term, 0.0) + 1.0
        docs.append(doc)
    return docs


@pytest.mark.parametrize("seed", range(6))
def test_the_array_scorer_ranks_and_scores_as_milvus_lite_does(seed: int) -> None:
    rng = random.Random(seed)
    docs = corpus(rng, rng.choice([1, 50, 800, 3000]), rng.choice([5, 40, 500]))
    k1, b = rng.choice([(1.5, 0.75), (1.2, 0.0), (2.0, 1.0)])
    theirs, ours = SparseInvertedIndex(k1=k1, b=b), ArrayBM25Index(k1=k1, b=b)
    kept = np.array([rng.random() > 0.1 for _ in docs])  # the rest deleted
    theirs.build(docs, kept)
    ours.build(docs, kept)
    queries = [{int(40 * rng.random() ** 2): float(rng.choice([1, 1, 2])) for _ in range(rng.randint(1, 14))}
               for _ in range(25)] + [{}, {10**9: 1.0}]
    for top_k in (1, 10, 30, 5000):
        for mask in (None, np.array([rng.random() < 0.3 for _ in docs]), np.ones(len(docs), dtype=bool)):
            want_ids, want_dists = theirs.search(queries, top_k, valid_mask=mask)
            got_ids, got_dists = ours.search(queries, top_k, valid_mask=mask)
            assert got_ids.dtype == want_ids.dtype and got_dists.dtype == want_dists.dtype
            np.testing.assert_array_equal(got_ids, want_ids)
            np.testing.assert_array_equal(got_dists, want_dists)  # exact, not approximately
    if len(docs) >= 800:  # both forms of a term's arrays were used: listed rows, and every row
        assert {held is None for _, _, held in ours._arrays.values()} == {True, False}


def test_a_query_weight_no_bm25_function_makes_gets_milvus_lite_s_own_arithmetic() -> None:
    rng = random.Random(7)
    docs = corpus(rng, 800, 40)
    theirs, ours = SparseInvertedIndex(), ArrayBM25Index()
    theirs.build(docs)
    ours.build(docs)
    queries = [{0: float("inf"), 3: 1.0}, {1: float("nan")}, {0: 1.0, 2: 2.0}]
    want_ids, want_dists = theirs.search(queries, 10)
    got_ids, got_dists = ours.search(queries, 10)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_dists, want_dists)


def test_a_bad_mask_is_refused_as_milvus_lite_refuses_it() -> None:
    ours = ArrayBM25Index()
    ours.build([{1: 1.0}, {2: 1.0}])
    with pytest.raises(ValueError, match="valid_mask"):
        ours.search([{1: 1.0}], 5, valid_mask=np.array([True]))


def test_installed_milvus_lite_builds_the_array_scorer_for_bm25_fields() -> None:
    from milvus_lite.index import sparse_factory

    assert install()
    index = sparse_factory.create_sparse_index("BM25", {"bm25_k1": 1.2})
    assert isinstance(index, ArrayBM25Index) and index.k1 == 1.2
    assert sparse_factory.sparse_index_matches(index, "BM25", {"bm25_k1": 1.2})
    assert not isinstance(sparse_factory.create_sparse_index("IP", {}), ArrayBM25Index)


def test_another_milvus_lite_release_keeps_its_own_scorer(monkeypatch) -> None:
    import milvus_lite
    from milvus_lite.index import sparse_factory

    monkeypatch.setattr(sparse_factory, "SparseInvertedIndex", SparseInvertedIndex)
    monkeypatch.setattr(milvus_lite, "__version__", "9.9.9")
    assert not install()
    assert type(sparse_factory.create_sparse_index("BM25", {})) is SparseInvertedIndex
