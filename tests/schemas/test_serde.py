import json
from datetime import datetime, timezone

import pytest

from schemas.events import (
    Acl,
    AuditRecord,
    ChangeEvent,
    Chunk,
    ChunkSet,
    DeadLetter,
    DocumentRecord,
    InlineContent,
)
from schemas.serde import SerdeError, dead_letter_from_headers, dead_letter_headers, decode, encode

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
EVENT = ChangeEvent(source="wiki", source_kind="confluence", doc_id="wiki:123", op="upsert", version=7,
                    changed_at=NOW, content=InlineContent.of("Quarterly report"),
                    acl=Acl(principals=("group:finance",)))


@pytest.mark.parametrize("event", [
    EVENT,
    DocumentRecord(source="wiki", source_kind="confluence", doc_id="wiki:123", op="upsert", version=7,
                   changed_at=NOW, content=InlineContent.of("[REDACTED] report"), classification="confidential",
                   actions=("redact:PERSON",)),
    ChunkSet(source="wiki", source_kind="confluence", doc_id="wiki:123", op="upsert", version=7,
             chunker="structural-v1", chunks=(Chunk(chunk_id="abc", ordinal=0, text="x", tokens=1),)),
    AuditRecord(seq=0, event_id="e1", prev_hash=None, hash="f" * 64, at=NOW, actor="svc:compliance",
                action="compliance.redact", target="wiki:123", details={"entities": 2}),
])
def test_round_trip(event):
    assert decode(type(event), encode(event)) == event


def test_not_json():
    with pytest.raises(SerdeError) as err:
        decode(ChangeEvent, b"hello world")
    assert "the value is not JSON" in str(err.value)
    assert "schemas/json/ChangeEvent.schema.json" in str(err.value)


def test_not_utf8():
    with pytest.raises(SerdeError, match="not UTF-8"):
        decode(ChangeEvent, b"\xff\xfe\x00garbage")


def test_not_an_object():
    with pytest.raises(SerdeError, match="a JSON list, not an object"):
        decode(ChangeEvent, b"[1, 2]")


def test_tombstone():
    with pytest.raises(SerdeError, match="no value"):
        decode(DocumentRecord, None)


def test_unknown_schema_version():
    data = json.loads(encode(EVENT))
    data["schema_version"] = 99
    with pytest.raises(SerdeError) as err:
        decode(ChangeEvent, json.dumps(data).encode())
    assert "schema_version 99 is not supported" in str(err.value)
    assert "Upgrade ragstream" in str(err.value)


def test_missing_schema_version():
    data = json.loads(encode(EVENT))
    del data["schema_version"]
    with pytest.raises(SerdeError, match="'schema_version' is missing"):
        decode(ChangeEvent, json.dumps(data).encode())


def test_missing_field_is_named():
    data = json.loads(encode(EVENT))
    del data["doc_id"]
    with pytest.raises(SerdeError) as err:
        decode(ChangeEvent, json.dumps(data).encode())
    assert "field 'doc_id': Field required" in str(err.value)


def test_error_is_a_value_error_with_parts():
    with pytest.raises(ValueError) as err:
        decode(ChangeEvent, b"{")
    assert err.value.contract == "ChangeEvent"
    assert err.value.hint


def test_unknown_extra_fields_are_tolerated_within_a_version():
    data = json.loads(encode(EVENT))
    data["added_in_a_later_minor"] = True
    assert decode(ChangeEvent, json.dumps(data).encode()) == EVENT


def test_dead_letter_headers_round_trip():
    letter = DeadLetter(stage="chunk", topic="rag.documents", partition=3, offset=42,
                        error_type="SerdeError", error_message="cannot decode: not JSON", failed_at=NOW)
    headers = dead_letter_headers(letter)
    assert all(k.startswith("ragstream.dlq.") for k, _ in headers)
    assert dead_letter_from_headers(headers + [("other", b"x")]) == letter
