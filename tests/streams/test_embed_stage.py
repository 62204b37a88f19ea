"""The embed stage sends each distinct text to the model once: within a batch, across
batches (a bounded cache by text hash), and never a chunk whose vector the index holds."""

from __future__ import annotations

import hashlib

import numpy as np

from ragstream.metrics import CHUNKS_EMBEDDED, CHUNKS_REUSED
from schemas.events import Chunk, ChunkSet, Op, VectorSet
from schemas.serde import decode
from streams.stages import EmbedStage


class CountingEmbedder:
    """A deterministic stand-in that records what reaches the model."""

    model_id, dim = "counting-4d", 4

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.seen += texts
        return [[b / 255 for b in hashlib.sha256(t.encode()).digest()[:4]] for t in texts]


class IndexWith:
    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.known = vectors

    def vectors(self, chunk_ids, model):
        return {c: v for c, v in self.known.items() if c in chunk_ids}


def doc(name: str, texts: list[str], op: Op = Op.upsert) -> ChunkSet:
    doc_id = f"fs:{name}"
    return ChunkSet(source="fs", doc_id=doc_id, op=op, version=1, source_kind="filesystem", chunker="structural-v1",
                    chunks=tuple(Chunk(chunk_id=f"{doc_id}#{i}", ordinal=i, text=t, tokens=1)
                                 for i, t in enumerate(texts)))


def events(outputs) -> list[VectorSet]:
    return [decode(VectorSet, o.value) for o in outputs]


def vectors_of(outputs) -> dict[str, bytes]:
    return {c.chunk_id: c.vector for vs in events(outputs) for c in vs.chunks}


def test_identical_texts_are_embedded_once_across_documents_and_batches():
    licence = "Licensed under the Apache License, Version 2.0."
    model = CountingEmbedder()
    stage = EmbedStage(model, IndexWith({"fs:old.md#0": [0.5, 0.5, 0.5, 0.5]}))  # type: ignore[arg-type]
    embedded, reused = CHUNKS_EMBEDDED.labels(model.model_id)._value.get(), CHUNKS_REUSED.labels(model.model_id)._value.get()

    first = stage.process_batch([doc("a.md", [licence, "alpha", licence]), doc("b.md", ["beta", licence]),
                                 doc("old.md", ["unchanged, stored"]), doc("gone.md", [], Op.delete)])
    assert sorted(model.seen) == sorted([licence, "alpha", "beta"])
    got = vectors_of(first)
    assert got["fs:a.md#0"] == got["fs:a.md#2"] == got["fs:b.md#1"]
    assert got["fs:old.md#0"] == np.asarray([0.5] * 4, dtype="<f4").tobytes()
    assert [vs.doc_id for vs in events(first)] == ["fs:a.md", "fs:b.md", "fs:old.md", "fs:gone.md"]

    second = stage.process_batch([doc("c.md", ["gamma", licence])])
    assert model.seen[3:] == ["gamma"], "the licence came from the cache"
    assert vectors_of(second)["fs:c.md#1"] == got["fs:a.md#0"]
    assert CHUNKS_EMBEDDED.labels(model.model_id)._value.get() - embedded == 4
    assert CHUNKS_REUSED.labels(model.model_id)._value.get() - reused == 4  # 2 in-batch, 1 stored, 1 cached


def test_the_cache_is_bounded_and_forgets_the_least_recently_used():
    model = CountingEmbedder()
    stage = EmbedStage(model, None)  # type: ignore[arg-type]
    stage.CACHE_CHUNKS = 2
    stage.process_batch([doc("a.md", ["one", "two"])])
    stage.process_batch([doc("b.md", ["one"])])  # "one" is now the most recent
    stage.process_batch([doc("c.md", ["three"])])  # evicts "two"
    stage.process_batch([doc("d.md", ["one", "two"])])
    assert model.seen == ["one", "two", "three", "two"]
    assert len(stage._by_text) == 2
