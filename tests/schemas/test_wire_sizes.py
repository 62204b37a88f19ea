"""Vectors travel as binary; claim checks and deep nesting decode (or fail) cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from schemas.events import EmbeddedChunk, VectorSet
from schemas.serde import SerdeError, claim_envelope, decode, encode


def vector_set(n: int, dim: int = 384) -> VectorSet:
    rng = np.random.default_rng(7)
    chunks = [EmbeddedChunk(chunk_id=f"c{i}", ordinal=i, text="x" * 800, tokens=180,
                            vector=rng.standard_normal(dim).astype("<f4").tobytes()) for i in range(n)]
    return VectorSet(source="fs", doc_id="fs:a", op="upsert", version=1, source_kind="filesystem",
                     chunker="structural-v1", model="m", dim=dim, chunks=chunks)


def test_vectors_are_base64_float32_and_round_trip_exactly() -> None:
    vs = vector_set(3)
    wire = encode(vs)
    back = decode(VectorSet, wire)
    assert back.schema_version == 2
    assert [c.vector for c in back.chunks] == [c.vector for c in vs.chunks]
    assert isinstance(json.loads(wire)["chunks"][0]["vector"], str)
    # A 384-d vector costs 2,048 characters of base64, not ~7,700 of JSON numbers.
    per_chunk = (len(encode(vector_set(50))) - len(encode(vector_set(0)))) / 50
    assert per_chunk < 800 + 2048 + 200


def test_schema_v1_lists_of_numbers_are_still_read() -> None:
    obj = json.loads(encode(vector_set(1, dim=3)))
    obj["schema_version"] = 1
    obj["chunks"][0]["vector"] = [0.5, -1.0, 2.0]
    assert decode(VectorSet, json.dumps(obj).encode()).chunks[0].floats() == [0.5, -1.0, 2.0]


def test_a_vector_of_the_wrong_size_is_a_clear_error() -> None:
    obj = json.loads(encode(vector_set(1, dim=3)))
    obj["dim"] = 4
    with pytest.raises(SerdeError, match="do not have dim=4"):
        decode(VectorSet, json.dumps(obj).encode())
    obj["dim"], obj["chunks"][0]["vector"] = 3, "not base64!"
    with pytest.raises(SerdeError, match="base64"):
        decode(VectorSet, json.dumps(obj).encode())


def test_claim_checks_resolve_through_the_blob_store_only() -> None:
    payload = encode(vector_set(2))
    store = {"abc": payload}
    envelope = claim_envelope({"kind": "ref", "uri": "file:///x", "sha256": "abc", "size": len(payload)})
    assert decode(VectorSet, envelope, claims=lambda ref: store[ref["sha256"]]).chunks[1].chunk_id == "c1"
    with pytest.raises(SerdeError, match="claim check"):
        decode(VectorSet, envelope)
    with pytest.raises(SerdeError, match="another claim check"):
        decode(VectorSet, envelope, claims=lambda ref: envelope)


def test_deeply_nested_json_is_a_serde_error_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(SerdeError, match="nested too deeply"):
        decode(VectorSet, deep)
    nested = b'{"schema_version": 2, "x": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}"
    with pytest.raises(SerdeError, match="nested too deeply"):
        decode(VectorSet, nested)
