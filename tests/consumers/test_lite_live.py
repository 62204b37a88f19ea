"""consumers/milvus/lite_live.py finds the rows milvus-lite may return as milvus-lite does.

Random histories of inserts, upserts (some moving a key to another partition), deletes
(of one partition or all), flushes and the compactions they start, on an embedded
milvus-lite collection with a dense and a BM25 field; after each step the same searches
and queries (filtered or not, one partition or all, limits and offsets) run through
milvus-lite's functions and through lite_live's, and must agree hit for hit: ids,
distances, entities and their order.
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import pytest
from milvus_lite.db import MilvusLite
from milvus_lite.engine import collection as lite_collection
from milvus_lite.schema.types import CollectionSchema, DataType, FieldSchema, Function, FunctionType

from consumers.milvus import lite_live

WORDS = "disk full error kafka milvus index chunk policy audit erase the a of to".split()
DIM = 8


@contextlib.contextmanager
def milvus_lites_own() -> Iterator[None]:
    """milvus-lite's original search functions for the duration."""
    assert lite_live.install()
    mine = (lite_collection.execute_search_with_index, lite_collection.Collection._search_sparse,
            lite_collection.Collection.query)
    lite_collection.execute_search_with_index = lite_live._ORIGINAL["execute_search_with_index"]
    lite_collection.Collection._search_sparse = lite_live._ORIGINAL["_search_sparse"]
    lite_collection.Collection.query = lite_live._ORIGINAL["query"]
    try:
        yield
    finally:
        (lite_collection.execute_search_with_index, lite_collection.Collection._search_sparse,
         lite_collection.Collection.query) = mine


def make_collection(path):
    db = MilvusLite(str(path))
    schema = CollectionSchema(fields=[
        FieldSchema("pk", DataType.VARCHAR, is_primary=True, max_length=64),
        FieldSchema("grp", DataType.INT64),
        FieldSchema("text", DataType.VARCHAR, max_length=2000, enable_analyzer=True),
        FieldSchema("sparse", DataType.SPARSE_FLOAT_VECTOR, is_function_output=True),
        FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM),
    ], functions=[Function("bm25", FunctionType.BM25, ["text"], ["sparse"])])
    col = db.create_collection("c", schema)
    col.create_index("vec", {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 8, "efConstruction": 64}})
    col.create_index("sparse", {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25"})
    col.load()
    col.create_partition("p1")
    return db, col


def row(rng: random.Random, pk: str) -> dict:
    return {"pk": pk, "grp": rng.randrange(4), "text": " ".join(rng.choices(WORDS, k=rng.randrange(1, 12))),
            "vec": [rng.uniform(-1, 1) for _ in range(DIM)]}


def searches(rng: random.Random, col) -> list:
    out = []
    for _ in range(4):
        kw = {"top_k": rng.choice([3, 10, 50]), "output_fields": ["grp", "text"]}
        if rng.random() < 0.5:
            kw["expr"] = f"grp in [{rng.randrange(4)}, {rng.randrange(4)}]"
        if rng.random() < 0.3:
            kw["partition_names"] = [rng.choice(["_default", "p1"])]
        out.append(col.search([[rng.uniform(-1, 1) for _ in range(DIM)]], anns_field="vec", **kw))
        out.append(col.search([" ".join(rng.choices(WORDS, k=3))], anns_field="sparse", metric_type="BM25", **kw))
        del kw["top_k"]
        if rng.random() < 0.5:
            kw["expr"] = f'text like "%{rng.choice(WORDS)}%"'
        out.append(col.query(limit=rng.choice([None, 5, 30]), offset=rng.choice([0, 0, 3]),
                             order_by_pk=rng.random() < 0.3, **kw))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_searches_return_what_milvus_lites_own_return(tmp_path, seed: int) -> None:
    assert lite_live.install()
    rng = random.Random(seed)
    db, col = make_collection(tmp_path)
    try:
        keys: list[str] = []
        compared = 0
        for step in range(40):
            op = rng.random()
            partition = rng.choice(["_default", "p1"])
            if op < 0.35 or not keys:
                new = [f"k{len(keys) + i}" for i in range(rng.randrange(1, 40))]
                keys += new
                col.insert([row(rng, pk) for pk in new], partition_name=partition)
            elif op < 0.6:  # upserts, some into the other partition than the key's first
                col.upsert([row(rng, pk) for pk in rng.sample(keys, min(len(keys), rng.randrange(1, 15)))],
                           partition_name=partition)
            elif op < 0.8:
                col.delete(rng.sample(keys, min(len(keys), rng.randrange(1, 10))),
                           partition_name=rng.choice([None, partition]))
            else:
                col.flush()
                col._bg_executor.submit(lambda: None).result()  # let the compaction it started finish
            state = rng.getstate()
            mine = searches(rng, col)
            rng.setstate(state)
            with milvus_lites_own():
                theirs = searches(rng, col)
            assert mine == theirs, f"seed {seed}, step {step}"
            compared += sum(len(hits) for res in mine for hits in res)
        assert compared > 100  # the searches found something to compare
        assert len(col._read_snapshot()[0]) >= 1  # segments were searched, not only the memtable
    finally:
        db.close()


def test_the_live_mask_spares_only_the_newest_undeleted_version() -> None:
    seg_a = {"x": 0, "y": 1, "z": 2}
    seg_b = {"y": 0, "w": 1}
    seqs_a, seqs_b = np.array([5, 6, 7]), np.array([9, 3])
    twice = lite_live.repeated([seg_a, seg_b])
    assert twice == {"y"}
    newest = lite_live.newest_seqs(twice, [(seg_a, seqs_a), (seg_b, seqs_b)])
    assert newest == {"y": 9}
    deleted = {"z": 8, "x": 4}  # z deleted after its write, x's delete is older than its write
    pending = {"w": (10, "p1")}
    assert lite_live.live_mask(seg_a, seqs_a, 3, newest, deleted, pending).tolist() == [True, False, False]
    assert lite_live.live_mask(seg_b, seqs_b, 2, newest, deleted, pending).tolist() == [True, False]
    # a pending delete of another partition leaves the row be
    assert lite_live.live_mask(seg_b, seqs_b, 2, newest, deleted, pending,
                               partition_ok=lambda p: p == "_default").tolist() == [True, True]


def test_another_milvus_lite_release_keeps_its_own_search(monkeypatch) -> None:
    import milvus_lite

    lite_live.install()
    monkeypatch.setattr(lite_collection, "execute_search_with_index", lite_live._ORIGINAL["execute_search_with_index"])
    monkeypatch.setattr(lite_collection.Collection, "_search_sparse", lite_live._ORIGINAL["_search_sparse"])
    monkeypatch.setattr(lite_collection.Collection, "query", lite_live._ORIGINAL["query"])
    monkeypatch.setattr(milvus_lite, "__version__", "9.9.9")
    assert lite_live.install() is False
    assert lite_collection.execute_search_with_index is lite_live._ORIGINAL["execute_search_with_index"]
