"""The index stage applies a Kafka batch with a handful of Milvus calls, and the result is
the one that applying the same versions one at a time gives (version guard, replacement of
a document's rows, deletes, permission changes that win over older content), on both engines
(milvus-lite and the real Milvus server: tests/consumers/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.milvus import MilvusIndex
from schemas.events import AclChange, EmbeddedChunk, Op, VectorSet
from streams.stages import IndexStage
from tests.consumers.conftest import open_index

DIM = 8


def vset(doc: str, version: int, texts: list[str], op: Op = Op.upsert, acl: str = "group:hr") -> VectorSet:
    rng = np.random.default_rng(abs(hash((doc, tuple(texts)))) % 2**32)
    chunks = () if op is Op.delete else tuple(
        EmbeddedChunk(chunk_id=f"{doc}#{t}", ordinal=i, text=t, tokens=1,
                      vector=(lambda v: (v / np.linalg.norm(v)).astype("<f4").tobytes())(rng.normal(size=DIM)))
        for i, t in enumerate(texts))
    return VectorSet(source="db", doc_id=doc, op=op, version=version, source_kind="postgres", chunker="structural-v1",
                     model="m", dim=DIM, chunks=chunks, acl={"principals": [acl]})


def stored(idx: MilvusIndex) -> dict[str, tuple[int, frozenset[str], str]]:
    """doc_id → (the registry's version, chunk ids, acl) as Milvus holds them. (Rows keep the
    version they were written at: an unchanged chunk is not rewritten.)"""
    out: dict[str, tuple[set[str], str]] = {}
    for r in idx.rows('chunk_id != ""', ["doc_id", "chunk_id", "acl"]):
        ids, acl = out.setdefault(r["doc_id"], (set(), r["acl"]))
        assert acl == r["acl"], f"{r['doc_id']} has rows with two ACLs"
        ids.add(r["chunk_id"])
    states = idx.doc_states(out)
    return {d: (states[d]["version"], frozenset(ids), acl) for d, (ids, acl) in out.items()}


def one_at_a_time(stage: IndexStage, vs: VectorSet) -> bool:
    """The oracle: IndexStage.process as it was before batching (commit 85b2949), kept here
    verbatim in substance so the batch is compared with independent code, not with itself."""
    from consumers.milvus import decode_acl, stored_acl
    from streams.stages import doc_meta_hash

    index = stage.index
    state = index.doc_state(vs.doc_id)
    if state is not None and (vs.version, vs.revision) <= (state["version"], state["revision"]):
        return False
    acl_version = state["acl_version"] if state is not None else -1
    if state is not None and acl_version > vs.version:
        vs = vs.model_copy(update={"acl": decode_acl(state["acl"])})
    acl = stored_acl(vs.acl)
    if vs.op is Op.delete:
        index.apply(vs)
        index.set_doc_state(vs.doc_id, vs.version, True, "", acl, acl_version, revision=vs.revision)
        return True
    meta = doc_meta_hash(vs)
    write_ids = None
    if state is not None and not state["deleted"] and state["meta"] == meta:
        write_ids = {c.chunk_id for c in vs.chunks} - index.chunk_ids_of(vs.doc_id)
    index.apply(vs, write_ids)
    index.set_doc_state(vs.doc_id, vs.version, False, meta, acl, acl_version, revision=vs.revision)
    return True


@pytest.fixture
def two(request, milvus_engine, tmp_path):
    a = open_index(request, milvus_engine, tmp_path, "batch_a", DIM, timeout=120)
    b = open_index(request, milvus_engine, tmp_path, "batch_b", DIM, timeout=120)
    a.ensure()
    b.ensure()
    yield IndexStage(a), IndexStage(b)
    a.client.close()
    b.client.close()


def test_a_batch_gives_what_one_at_a_time_gives(two):
    batched, single = two
    before = [vset("db:1", 1, ["a", "b", "c"]), vset("db:2", 1, ["x", "y"]), vset("db:3", 4, ["p"]),
              vset("db:4", 1, ["only"])]
    # A permission change newer than d:5's content arrives first.
    acl_first = AclChange(source="db", doc_id="db:5", version=9, source_kind="postgres",
                          acl={"principals": ["user:ann"]})
    after = [
        vset("db:1", 2, ["a", "b2", "c"]),          # one chunk edited
        vset("db:2", 2, [], Op.delete),             # deleted
        vset("db:3", 3, ["stale"]),                 # older than what is stored: dropped
        vset("db:4", 2, ["only", "more"]),          # grows; then a newer version in the same batch
        vset("db:4", 3, ["shrunk"]),
        vset("db:5", 2, ["secret"], acl="public"),  # older than its permission change: takes that ACL
        vset("db:6", 1, ["new"]),                   # new document
    ]
    for stage in two:
        stage.apply_acl(acl_first)
    assert batched.process_batch(before) == [True] * 4
    for vs in before:
        one_at_a_time(single, vs)
    flags = batched.process_batch(after)
    assert flags == [True, True, False, False, True, True, True]
    assert [one_at_a_time(single, vs) for vs in after] == [True, True, False, True, True, True, True]
    got, want = stored(batched.index), stored(single.index)
    assert got == want
    assert got["db:4"][1] == {"db:4#shrunk"} and "db:2" not in got and got["db:3"][1] == {"db:3#p"}
    assert got["db:5"][2] == "|user:ann|", "a revoked permission did not come back with older content"
    assert batched.index.doc_states(["db:2"])["db:2"]["deleted"] is True
    # Redelivered whole (a crash before the acknowledgement): nothing is applied twice.
    assert batched.process_batch(after) == [False] * len(after)
    assert stored(batched.index) == want


def test_a_bad_member_fails_the_batch_as_invalid_input(two):
    """The worker then applies the batch one by one and dead-letters only the bad document."""
    from consumers.milvus import IndexInputError

    batched, _ = two
    good = vset("db:1", 1, ["fine"])
    bad = vset("db:2", 1, ["wrong size"])
    bad = bad.model_copy(update={"chunks": (bad.chunks[0].model_copy(
        update={"vector": np.ones(3, dtype="<f4").tobytes()}),)})
    with pytest.raises(IndexInputError):
        batched.process_batch([good, bad])
    assert batched.process_batch([good]) == [True]
    assert set(stored(batched.index)) == {"db:1"}


def test_a_writer_stays_on_its_collection_when_a_retry_runs_after_the_alias_moved(tmp_path):
    """A reindex moves the alias; a running writer keeps writing its own collection, also
    after a transient failure makes it prepare the collections again before the retry."""
    uri = str(tmp_path / "pin.db")
    writer = MilvusIndex(uri, "pinned", DIM, timeout=120)
    first = writer.ensure()
    new = MilvusIndex(uri, "pinned", DIM, timeout=120, collection="pinned_reindexed")
    new.client = writer.client  # one process may open a .db file once
    new.ensure()
    assert new.point_alias("pinned_reindexed") == first
    writer._transient("a timeout")  # what every retry does first
    assert writer.collection == first and writer.target == first
    IndexStage(writer).process(vset("db:1", 1, ["after the swap"]))
    assert writer.client.query(collection_name=first, filter='doc_id == "db:1"', output_fields=["chunk_id"])
    assert not writer.client.query(collection_name="pinned_reindexed", filter='doc_id == "db:1"',
                                   output_fields=["chunk_id"])
    writer.drop(first)  # `reindex --gc`: the writer follows the alias, as after a restart
    writer._transient("collection gone")
    assert writer.collection == "pinned_reindexed"
    writer.client.close()
