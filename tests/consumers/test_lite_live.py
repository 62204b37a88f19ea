"""consumers/milvus/lite_live.py finds the rows milvus-lite may return as milvus-lite does.

Random histories of inserts, upserts (some moving a key to another partition), deletes
(of one partition or all), flushes and the compactions they start, and restarts, on an
embedded milvus-lite collection with a dense and a BM25 field (string or integer keys, with
or without dynamic fields); after each step the same searches and queries (filtered or
not, one partition, both or all, several query vectors, limits and offsets, projections)
run through milvus-lite's functions and through lite_live's, and must agree hit for hit:
ids, distances, entities and their order.
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
SWAPPED = (("execute_search_with_index", lite_collection), ("_search_sparse", lite_collection.Collection),
           ("query", lite_collection.Collection))


@contextlib.contextmanager
def milvus_lites_own() -> Iterator[None]:
    """milvus-lite's original search functions for the duration."""
    assert lite_live.install()
    mine = [getattr(owner, name) for name, owner in SWAPPED]
    for name, owner in SWAPPED:
        setattr(owner, name, lite_live._ORIGINAL[name])
    try:
        yield
    finally:
        for (name, owner), fn in zip(SWAPPED, mine):
            setattr(owner, name, fn)


class Store:
    """An embedded milvus-lite collection that can be closed and opened again."""

    def __init__(self, path, int_keys: bool, dynamic: bool) -> None:
        self.path, self.int_keys = path, int_keys
        self.db = MilvusLite(str(path))
        key = (FieldSchema("pk", DataType.INT64, is_primary=True) if int_keys
               else FieldSchema("pk", DataType.VARCHAR, is_primary=True, max_length=64))
        schema = CollectionSchema(fields=[
            key,
            FieldSchema("grp", DataType.INT64),
            FieldSchema("text", DataType.VARCHAR, max_length=2000, enable_analyzer=True),
            FieldSchema("sparse", DataType.SPARSE_FLOAT_VECTOR, is_function_output=True),
            FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM),
        ], functions=[Function("bm25", FunctionType.BM25, ["text"], ["sparse"])], enable_dynamic_field=dynamic)
        col = self.db.create_collection("c", schema)
        col.create_index("vec", {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 8, "efConstruction": 64}})
        col.create_index("sparse", {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25"})
        col.load()
        col.create_partition("p1")
        self.col = col

    def reopen(self) -> None:
        self.col._bg_executor.submit(lambda: None).result()
        self.db.close()
        self.db = MilvusLite(str(self.path))
        self.col = self.db.get_collection("c")
        self.col.load()

    def settle(self) -> None:
        self.col._bg_executor.submit(lambda: None).result()  # the compaction a flush started

    def key(self, i: int):
        return i if self.int_keys else f"k{i}"


def row(rng: random.Random, pk, dynamic: bool) -> dict:
    r = {"pk": pk, "grp": rng.randrange(4), "text": " ".join(rng.choices(WORDS, k=rng.randrange(1, 12))),
         "vec": [rng.uniform(-1, 1) for _ in range(DIM)]}
    if dynamic and rng.random() < 0.5:
        r["colour"] = rng.choice(["red", "blue"])
    return r


def searches(rng: random.Random, col, dynamic: bool) -> list:
    out = []
    fields = [["grp", "text"], ["text"], None, ["*"], []] + ([["grp", "colour"], ["$meta"]] if dynamic else [])
    for _ in range(4):
        kw = {"top_k": rng.choice([3, 10, 50, 1000]), "output_fields": rng.choice(fields)}
        if rng.random() < 0.5:
            kw["expr"] = f"grp in [{rng.randrange(4)}, {rng.randrange(4)}]"
        if rng.random() < 0.4:
            kw["partition_names"] = rng.choice([["_default"], ["p1"], ["_default", "p1"]])
        nq = rng.choice([1, 1, 2])
        out.append(col.search([[rng.uniform(-1, 1) for _ in range(DIM)] for _ in range(nq)], anns_field="vec", **kw))
        out.append(col.search([" ".join(rng.choices(WORDS, k=3)) for _ in range(nq)], anns_field="sparse",
                              metric_type="BM25", **kw))
        del kw["top_k"]
        if rng.random() < 0.5:
            kw["expr"] = f'text like "%{rng.choice(WORDS)}%"'
        out.append(col.query(limit=rng.choice([None, 5, 30]), offset=rng.choice([0, 0, 3]),
                             order_by_pk=rng.random() < 0.3, **kw))
    return out


def same_through_both(rng: random.Random, store: Store, dynamic: bool, where: str) -> int:
    state = rng.getstate()
    mine = searches(rng, store.col, dynamic)
    rng.setstate(state)
    with milvus_lites_own():
        theirs = searches(rng, store.col, dynamic)
    assert mine == theirs, where
    return sum(len(hits) for res in mine[::3] + mine[1::3] for hits in res) + sum(len(r) for r in mine[2::3])


@pytest.mark.parametrize(("seed", "int_keys", "dynamic"),
                         [(0, False, False), (1, True, False), (2, False, True), (3, True, True),
                          (4, False, False), (5, True, False)])
def test_searches_return_what_milvus_lites_own_return(tmp_path, seed: int, int_keys: bool, dynamic: bool) -> None:
    assert lite_live.install()
    rng = random.Random(seed)
    store = Store(tmp_path, int_keys, dynamic)
    try:
        n, compared, most_segments, compactions = 0, 0, 0, 0
        for step in range(45):
            op = rng.random()
            partition = rng.choice(["_default", "p1"])
            if op < 0.3 or n == 0:
                new = [store.key(n + i) for i in range(rng.randrange(1, 40))]
                n += len(new)
                store.col.insert([row(rng, pk, dynamic) for pk in new], partition_name=partition)
            elif op < 0.55:  # upserts, some into the other partition than the key's first
                keys = [store.key(i) for i in rng.sample(range(n), min(n, rng.randrange(1, 15)))]
                store.col.upsert([row(rng, pk, dynamic) for pk in keys], partition_name=partition)
            elif op < 0.75:
                store.col.delete([store.key(i) for i in rng.sample(range(n), min(n, rng.randrange(1, 10)))],
                                 partition_name=rng.choice([None, partition]))
            elif op < 0.95:
                store.col.flush()
                store.settle()
            else:
                store.reopen()
            segments = len(store.col._read_snapshot()[0])
            compactions += segments < most_segments
            most_segments = max(most_segments, segments)
            compared += same_through_both(rng, store, dynamic, f"seed {seed}, step {step}")
        assert compared > 300  # the searches found something to compare
        assert most_segments >= 2  # keys spread over segments, not only the memtable
        assert compactions  # and compactions merged them
    finally:
        store.db.close()


def test_a_key_moved_then_deleted_in_one_partition_then_everywhere(tmp_path) -> None:
    """The upsert that moves a key to another partition, a delete of one partition pending in
    the memtable, then the delete of every partition: each step as milvus-lite decides."""
    assert lite_live.install()
    rng = random.Random(7)
    store = Store(tmp_path, int_keys=False, dynamic=False)
    try:
        store.col.insert([row(rng, f"k{i}", False) for i in range(20)], partition_name="p1")
        store.col.flush()
        store.col.upsert([row(rng, "k3", False)], partition_name="_default")
        store.col.flush()
        steps = [lambda: None, lambda: store.col.delete(["k3"], partition_name="p1"),
                 lambda: store.col.delete(["k3"]), store.col.flush]
        for i, step in enumerate(steps):
            step()
            store.settle()
            same_through_both(rng, store, False, f"step {i}")
        assert not store.col.query(expr='pk == "k3"')  # and it is gone
    finally:
        store.db.close()


def test_a_segment_with_a_key_twice_is_left_to_milvus_lite(tmp_path, monkeypatch) -> None:
    assert lite_live.install()
    rng = random.Random(11)
    store = Store(tmp_path, int_keys=False, dynamic=False)
    try:
        store.col.insert([row(rng, f"k{i}", False) for i in range(30)])
        store.col.flush()
        store.settle()
        store.col.upsert([row(rng, f"k{i}", False) for i in range(5)])
        store.col.delete(["k7"])
        called = []
        for name, _owner in SWAPPED:
            original = lite_live._ORIGINAL[name]

            def spy(*a, _original=original, _name=name, **kw):
                called.append(_name)
                return _original(*a, **kw)
            monkeypatch.setitem(lite_live._ORIGINAL, name, spy)
        state = rng.getstate()
        with monkeypatch.context() as m:
            m.setattr(lite_live, "_segment_rows", lambda seg: None)  # as if a segment held a key twice
            handed_on = searches(rng, store.col, False)
        assert {"execute_search_with_index", "_search_sparse", "query"} <= set(called)
        rng.setstate(state)
        with milvus_lites_own():
            assert handed_on == searches(rng, store.col, False)
    finally:
        store.db.close()


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
    for name, owner in SWAPPED:
        monkeypatch.setattr(owner, name, lite_live._ORIGINAL[name])
    monkeypatch.setattr(milvus_lite, "__version__", "9.9.9")
    assert lite_live.install() is False
    assert all(getattr(owner, name) is lite_live._ORIGINAL[name] for name, owner in SWAPPED)
