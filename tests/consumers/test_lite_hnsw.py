"""consumers/milvus/lite_hnsw.py: milvus-lite's filtered HNSW search is exact when the filter keeps few rows."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from milvus_lite.index.faiss_hnsw import FaissHnswIndex

from consumers.milvus import lite_hnsw


def exact(vectors: np.ndarray, query: np.ndarray, kept: np.ndarray, k: int, metric: str) -> list[int]:
    rows = np.flatnonzero(kept)
    if metric == "COSINE":
        v = vectors[rows] / np.linalg.norm(vectors[rows], axis=1, keepdims=True)
        score = -(v @ (query / np.linalg.norm(query)))
    elif metric == "IP":
        score = -(vectors[rows] @ query)
    else:
        score = np.linalg.norm(vectors[rows] - query, axis=1)
    return rows[np.argsort(score, kind="stable")[:k]].tolist()


@pytest.mark.parametrize("metric", ["COSINE", "IP", "L2"])
def test_a_search_the_filter_keeps_few_rows_for_is_exact(metric: str) -> None:
    assert lite_hnsw.install()
    gen = np.random.default_rng(5)
    vectors = gen.standard_normal((6000, 32), dtype=np.float32)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # one thread builds the same graph every run (the walk's misses below)
    try:
        index = FaissHnswIndex.build(vectors, metric, {"M": 8, "efConstruction": 40})
    finally:
        faiss.omp_set_num_threads(threads)
    kept = np.zeros(6000, dtype=bool)
    kept[gen.choice(6000, 150, replace=False)] = True  # 2.5%: the graph walk misses, exact must not
    misses = 0
    for _ in range(20):
        q = gen.standard_normal(32, dtype=np.float32)
        ids, dists = index.search(q, 10, valid_mask=kept, params={"ef": 16})
        assert ids[0].tolist() == exact(vectors, q, kept, 10, metric)
        assert np.all(np.diff(dists[0]) >= -1e-6)  # milvus-lite's order: smaller distance first
        walked, _ = lite_hnsw._ORIGINAL["search"](index, q, 10, valid_mask=kept, params={"ef": 16})
        misses += len(set(ids[0].tolist()) - set(walked[0].tolist()))
    assert misses > 0  # milvus-lite's own walk did miss some of them


def test_distances_are_milvus_lites_and_a_broad_filter_keeps_the_walk() -> None:
    assert lite_hnsw.install()
    gen = np.random.default_rng(6)
    vectors = gen.standard_normal((3000, 16), dtype=np.float32)
    index = FaissHnswIndex.build(vectors, "COSINE", {"M": 16, "efConstruction": 200})
    q = gen.standard_normal(16, dtype=np.float32)
    few = np.zeros(3000, dtype=bool)
    few[:100] = True
    ids, dists = index.search(q, 5, valid_mask=few, params={"ef": 512})
    walked, walked_dists = lite_hnsw._ORIGINAL["search"](index, q, 5, valid_mask=few, params={"ef": 3000})
    assert ids.tolist() == walked.tolist()  # a beam over every row finds the same, at the same distances
    np.testing.assert_allclose(dists, walked_dists, rtol=1e-5)
    assert lite_hnsw.exact_is_better(100, 3000, 5)
    assert not lite_hnsw.exact_is_better(1500, 3000, 10)  # half the rows: the graph walk, as in Milvus
    assert lite_hnsw.exact_is_better(15, 3000, 10)  # k is most of what the filter keeps
    assert not lite_hnsw.exact_is_better(3000, 3000, 10)  # no filter at all
    assert lite_hnsw.exact_is_better(30, 50, 20) and not lite_hnsw.exact_is_better(0, 50, 20)


def test_another_milvus_lite_release_keeps_its_own_walk(monkeypatch) -> None:
    import milvus_lite

    lite_hnsw.install()
    monkeypatch.setattr(FaissHnswIndex, "search", lite_hnsw._ORIGINAL["search"])
    monkeypatch.setattr(milvus_lite, "__version__", "9.9.9")
    assert lite_hnsw.install() is False
    assert FaissHnswIndex.search is lite_hnsw._ORIGINAL["search"]
