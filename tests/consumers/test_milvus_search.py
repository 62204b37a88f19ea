"""ACL-filtered search at a size where the engine builds its HNSW index, on both engines
(milvus-lite embedded in a file of its own, and the real Milvus server: tests/consumers/conftest.py):
the caller gets exactly the nearest chunks among those they may see, whether the visible set is
a handful (milvus-lite searches those exactly, consumers/milvus/lite_hnsw.py; on the server a
wider beam finds them) or most rows.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from consumers.milvus import acl_key, encode_acl
from schemas.events import Acl, EmbeddedChunk, Op, SourceKind, VectorSet
from tests.consumers.conftest import open_index

DIM = 16
DOCS = 400
CHUNKS = 10


def unit(rng: random.Random) -> tuple[float, ...]:
    v = np.array([rng.gauss(0, 1) for _ in range(DIM)], dtype=np.float32)
    return tuple(float(x) for x in v / np.linalg.norm(v))


def acl_of(d: int) -> list[str]:
    acl = ["group:all", f"group:g{d % 7}"]
    if d in (3, 250):
        acl.append("user:rare")  # 2 documents, 20 of 4,000 chunks
    return acl


@pytest.fixture(scope="module")
def filled(request, milvus_engine, tmp_path_factory):
    rng = random.Random(5)
    idx = open_index(request, milvus_engine, tmp_path_factory.mktemp("search"), "search", DIM, timeout=120)
    idx.ensure()
    vectors: dict[str, tuple[np.ndarray, set[str]]] = {}
    sets = []
    for d in range(DOCS):
        chunks = []
        for c in range(CHUNKS):
            v = unit(rng)
            cid = f"d{d}-c{c}"
            chunks.append(EmbeddedChunk(chunk_id=cid, ordinal=c, text=cid, tokens=1, vector=v))
            vectors[cid] = (np.array(v, dtype=np.float32), set(acl_of(d)))
        sets.append(VectorSet(source="s", source_kind=SourceKind.filesystem, doc_id=f"s:d{d}", op=Op.upsert, version=1,
                            changed_at=datetime.now(timezone.utc), acl=Acl(principals=tuple(acl_of(d)), known=True),
                            chunker="test", model="m", dim=DIM, chunks=tuple(chunks)))
    for i in range(0, len(sets), 100):  # a batch at a time, as the index stage writes
        idx.apply_many([(vs, None) for vs in sets[i:i + 100]])
    idx.flush()
    deadline = time.monotonic() + 120
    while idx.client.describe_index(idx.collection, "vector").get("state", "Finished") != "Finished":
        assert time.monotonic() < deadline, "the HNSW index was not built"
        time.sleep(0.5)
    yield idx, vectors, rng
    idx.client.close()


def exact(vectors, query: np.ndarray, principals: set[str], limit: int) -> list[str]:
    visible = [(float(v @ query), cid) for cid, (v, acl) in vectors.items() if acl & principals]
    return [cid for _, cid in sorted(visible, key=lambda t: (-t[0], t[1]))[:limit]]


def test_a_caller_who_sees_few_chunks_gets_a_full_page_of_the_nearest_of_them(filled):
    idx, vectors, rng = filled
    (expr, _), probe = idx.search_plan(["user:rare"]), list(unit(rng))
    lite = idx.engine.name == "milvus-lite"
    if lite:
        # milvus-lite compares the query with every row when the filter keeps few of them, as
        # Milvus does (consumers/milvus/lite_hnsw.py): even a narrow beam fills the page. (Its
        # own graph walk came back short here; the Milvus server's filtered search is its own.)
        # Until the built index serves searches milvus-lite is exact anyway, so this holds
        # either way: tests/consumers/test_lite_hnsw.py tests the index's exact path itself.
        assert len(idx._ann(probe, expr, 10, 16)) == 10
    recall = []
    for _ in range(10):
        q = np.array(unit(rng), dtype=np.float32)
        hits = idx.search(list(q), ["user:rare"], limit=10)
        assert len(hits) == 10, "20 chunks are visible: a page must be full"
        assert all(h.doc_id in ("s:d3", "s:d250") for h in hits)
        recall.append(len({h.chunk_id for h in hits} & set(exact(vectors, q, {"user:rare"}, 10))) / 10)
    assert sum(recall) / len(recall) >= 0.8, f"recall@10 {recall}"
    if lite:
        assert min(recall) == 1.0, f"an exact search missed: recall@10 {recall}"


def test_scores_are_cosine_similarities_and_nothing_invisible_comes_back(filled):
    idx, vectors, rng = filled
    for principals in (["group:g2"], ["group:g2", "group:g5"], ["group:all"]):
        q = np.array(unit(rng), dtype=np.float32)
        hits = idx.search(list(q), principals, limit=10)
        assert len(hits) == 10
        for h in hits:
            v, acl = vectors[h.chunk_id]
            assert acl & set(principals), f"{h.chunk_id} is not visible to {principals}"
            assert h.score == pytest.approx(float(v @ q), abs=1e-4)
        best = exact(vectors, q, set(principals), 10)
        assert len({h.chunk_id for h in hits} & set(best)) >= 8  # approximate search, high recall


def test_principals_in_no_acl_set_see_nothing_and_sets_are_stored_once(filled):
    idx, _, rng = filled
    assert idx.search(list(unit(rng)), ["user:stranger"], limit=10) == []
    sets = idx.client.query(collection_name=f"{idx.collection}_acls", filter='acl_key != ""',
                            output_fields=["acl_key", "acl"], limit=1000)
    assert {r["acl"] for r in sets} == {encode_acl(acl_of(d)) for d in range(DOCS)}
    assert all(r["acl_key"] == acl_key(r["acl"]) for r in sets)
