"""The normalize stage's logic (no Kafka): Debezium records → ChangeEvents / AclChanges.

The records are shaped exactly as Debezium 3.7's PostgreSQL connector writes them with the
JSON converter and schemas.enable=false (the integration tests read real ones).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas import topics
from schemas.events import AclChange, ChangeEvent, Op
from schemas.serde import SerdeError, decode
from streams.normalize import (
    TOAST_PLACEHOLDER,
    MappingError,
    Mapping,
    NormalizeStage,
    decode_change,
    load_mapping,
)
from streams.stages import Permanent

MAPPING = {
    "source": "crm-db",
    "tables": [
        {"table": "public.articles", "text": ["title", "body"], "title": "title",
         "uri": "https://intranet.example/articles/{id}", "extra": ["category"],
         "acl": {"column": "readers", "kind": "group"}},
        {"table": "public.tickets", "id": ["ticket_no"], "text": ["subject", "notes"], "title": "subject",
         "acl": {"table": "public.ticket_readers", "key": "ticket_no", "principal": "who"}},
    ],
}


class FakeLookups:
    def __init__(self) -> None:
        self.readers: dict[Any, list[str]] = {}
        self.rows: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
        self.calls: list[str] = []

    def principals(self, table: str, key_column: str, principal_column: str, key: Any) -> list[str]:
        self.calls.append(f"principals {table} {key}")
        return self.readers.get(key, [])

    def row(self, table: str, key: dict[str, Any], columns: list[str]) -> dict[str, Any] | None:
        self.calls.append(f"row {table} {key}")
        found = self.rows.get((table, tuple(key.values())))
        return None if found is None else {c: found[c] for c in columns}


def record(op: str, *, after: dict | None = None, before: dict | None = None, table: str = "articles",
           lsn: int | None = 1000) -> bytes:
    return json.dumps({
        "before": before, "after": after, "op": op, "ts_ms": 1_700_000_000_500,
        "source": {"version": "3.7.0.Final", "connector": "postgresql", "name": "cdc", "ts_ms": 1_700_000_000_000,
                   "snapshot": "true" if op == "r" else "false", "db": "ragstream", "schema": "public",
                   "table": table, "txId": 750, "lsn": lsn, "xmin": None},
        "transaction": None,
    }).encode()


def article(**over: Any) -> dict[str, Any]:
    row = {"id": 7, "title": "Travel policy", "body": "Meals up to 40 EUR.", "category": "hr",
           "readers": ["eng", "user:ann"], "views": 3}
    row.update(over)
    return row


@pytest.fixture
def stage() -> NormalizeStage:
    return NormalizeStage(Mapping.model_validate(MAPPING), lookups=FakeLookups())


def run(stage: NormalizeStage, value: bytes) -> list[Any]:
    return stage.process(stage.decode(value))


def only_change(outputs: list[Any]) -> ChangeEvent:
    assert [o.topic for o in outputs] == [topics.CHANGES]
    return decode(ChangeEvent, outputs[0].value)


def test_snapshot_read_and_insert_become_upserts(stage: NormalizeStage) -> None:
    for op in ("r", "c"):
        ev = only_change(run(stage, record(op, after=article(), lsn=2048)))
        assert ev.op is Op.upsert and ev.doc_id == "crm-db:public.articles/7" and ev.version == 2048
        assert ev.content.text == "Travel policy\n\nMeals up to 40 EUR."
        assert ev.metadata.title == "Travel policy"
        assert ev.metadata.uri == "https://intranet.example/articles/7"
        assert ev.metadata.extra == {"category": "hr"}
        assert ev.acl.principals == ("group:eng", "user:ann")
        assert ev.source_kind == "postgres" and ev.changed_at.year == 2023


def test_update_of_text_is_an_upsert(stage: NormalizeStage) -> None:
    ev = only_change(run(stage, record("u", before=article(), after=article(body="Meals up to 50 EUR."), lsn=3000)))
    assert "50 EUR" in ev.content.text and ev.version == 3000


def test_update_outside_the_mapping_publishes_nothing(stage: NormalizeStage) -> None:
    assert run(stage, record("u", before=article(views=3), after=article(views=4))) == []


def test_acl_column_change_is_permission_only(stage: NormalizeStage) -> None:
    out = run(stage, record("u", before=article(), after=article(readers=["finance"]), lsn=4000))
    assert [o.topic for o in out] == [topics.ACL] and out[0].key == "crm-db:public.articles/7"
    change = decode(AclChange, out[0].value)
    assert change.acl.principals == ("group:finance",) and change.version == 4000


def test_update_without_previous_row_is_an_upsert(stage: NormalizeStage) -> None:
    # REPLICA IDENTITY DEFAULT: Debezium sends no "before" for an update.
    assert only_change(run(stage, record("u", before=None, after=article(views=4)))).op is Op.upsert


def test_delete_and_tombstone(stage: NormalizeStage) -> None:
    ev = only_change(run(stage, record("d", before={"id": 7, "title": None, "body": None}, after=None, lsn=5000)))
    assert ev.op is Op.delete and ev.doc_id == "crm-db:public.articles/7" and ev.content is None
    assert ev.version == 5000
    # Tombstones (value None) never reach process(): the worker skips them, like every stage.


def test_added_column_used_once_mapped_and_absent_reads_as_null() -> None:
    mapping = {**MAPPING, "tables": [{**MAPPING["tables"][0], "text": ["title", "body", "summary"]}]}
    stage = NormalizeStage(Mapping.model_validate(mapping), lookups=FakeLookups())
    before_alter = only_change(run(stage, record("c", after=article())))
    assert before_alter.content.text == "Travel policy\n\nMeals up to 40 EUR."
    after_alter = only_change(run(stage, record("u", before=article(summary=None),
                                                after=article(summary="Short: 40 EUR."))))
    assert after_alter.content.text.endswith("Short: 40 EUR.")
    # a dropped mapped column: absent from the row, the document is built without it
    dropped = {k: v for k, v in article().items() if k != "body"}
    assert only_change(run(stage, record("c", after=dropped))).content.text == "Travel policy"


def test_toasted_value_comes_from_the_previous_row(stage: NormalizeStage) -> None:
    big = "x" * 5000
    out = run(stage, record("u", before=article(body=big), after=article(body=TOAST_PLACEHOLDER, title="New")))
    ev = only_change(out)
    assert ev.content.text == "New\n\n" + big and TOAST_PLACEHOLDER not in ev.content.text
    # unchanged toasted body and an unmapped change: nothing to do
    assert run(stage, record("u", before=article(body=big), after=article(body=TOAST_PLACEHOLDER, views=9))) == []


def test_toasted_value_is_looked_up_without_the_previous_row() -> None:
    lookups = FakeLookups()
    lookups.rows[("public.articles", (7,))] = article(body="current body")
    stage = NormalizeStage(Mapping.model_validate(MAPPING), lookups=lookups)
    ev = only_change(run(stage, record("u", before=None, after=article(body=TOAST_PLACEHOLDER))))
    assert ev.content.text == "Travel policy\n\ncurrent body"
    assert lookups.calls == ["row public.articles {'id': 7}"]
    lookups.rows.clear()  # the row is gone by now: its delete record follows, publish nothing
    assert run(stage, record("u", before=None, after=article(body=TOAST_PLACEHOLDER))) == []


def test_toasted_value_without_any_way_to_fill_it_is_dead_lettered() -> None:
    stage = NormalizeStage(Mapping.model_validate(MAPPING), lookups=None)
    with pytest.raises(Permanent, match=r"\['body'\] were not re-sent by PostgreSQL .*REPLICA IDENTITY FULL"):
        run(stage, record("u", before=None, after=article(body=TOAST_PLACEHOLDER)))


def test_join_table_acl(stage: NormalizeStage) -> None:
    lookups: FakeLookups = stage.lookups  # type: ignore[assignment]
    lookups.readers["T-1"] = ["group:support", "user:bo"]
    ticket = {"ticket_no": "T-1", "subject": "Printer", "notes": "jams on A3"}
    ev = only_change(run(stage, record("c", table="tickets", after=ticket)))
    assert ev.doc_id == "crm-db:public.tickets/T-1" and ev.acl.principals == ("group:support", "user:bo")
    lookups.readers["T-1"] = ["group:support"]
    out = run(stage, record("d", table="ticket_readers", before={"ticket_no": "T-1", "who": "user:bo"}, lsn=9000))
    assert [o.topic for o in out] == [topics.ACL]
    change = decode(AclChange, out[0].value)
    assert change.doc_id == "crm-db:public.tickets/T-1" and change.acl.principals == ("group:support",)
    # the ticket row updated outside its text: its readers change only through the join table
    assert run(stage, record("u", table="tickets", before=ticket, after={**ticket})) == []


def test_rows_the_mapping_cannot_handle_say_why(stage: NormalizeStage) -> None:
    with pytest.raises(Permanent, match=r"column 'readers': .*invalid principal"):
        run(stage, record("c", after=article(readers=["user:has space"])))
    with pytest.raises(Permanent, match="no mapping for table public.payroll"):
        run(stage, record("c", table="payroll", after={"id": 1}))
    with pytest.raises(Permanent, match="no source.lsn"):
        run(stage, record("c", after=article(), lsn=None))
    with pytest.raises(SerdeError, match="not a Debezium JSON record"):
        stage.decode(b"\xff not json")
    with pytest.raises(SerdeError, match=r"not a Debezium change record \(op: "):
        stage.decode(json.dumps({"op": "x", "source": {"schema": "public", "table": "t"}}).encode())


def test_null_acl_column_is_private(stage: NormalizeStage) -> None:
    ev = only_change(run(stage, record("c", after=article(readers=None))))
    assert ev.acl.known is False and ev.acl.principals == ()


def test_large_text_travels_by_reference(tmp_path: Path) -> None:
    from ragstream.blobs import BlobStore

    stage = NormalizeStage(Mapping.model_validate(MAPPING), lookups=FakeLookups(), blobs=BlobStore(tmp_path),
                           inline_max_bytes=1024)
    ev = only_change(run(stage, record("c", after=article(body="y" * 4000))))
    assert ev.content.kind == "ref" and ev.content.size > 4000


def test_truncate_and_messages_are_skipped(stage: NormalizeStage) -> None:
    assert run(stage, record("t", after=None)) == []


def test_schemas_enabled_envelope_is_read_too() -> None:
    inner = json.loads(record("c", after=article()))
    wrapped = json.dumps({"schema": {"type": "struct"}, "payload": inner}).encode()
    assert decode_change(wrapped).op == "c"


def test_topics_cover_document_and_join_tables() -> None:
    m = Mapping.model_validate(MAPPING)
    assert m.topics() == ["cdc.public.articles", "cdc.public.tickets", "cdc.public.ticket_readers"]


@pytest.mark.parametrize("bad, field", [
    ({"tables": []}, "tables"),
    ({"source": "Bad Source"}, "source"),
    ({"tables": [{"table": "articles", "text": ["body"]}]}, "tables.0.table"),
    ({"tables": [{"table": "public.a", "text": []}]}, "tables.0.text"),
    ({"tables": [{"table": "public.a", "text": ["body"], "acl": {"column": "r", "principals": ["public"]}}]},
     "tables.0.acl"),
    ({"tables": [{"table": "public.a", "text": ["body"], "acl": {"table": "public.r"}}]}, "tables.0.acl"),
    ({"tables": [{"table": "public.a", "text": ["body"], "acl": {"principals": ["everyone"]}}]}, "tables.0.acl"),
    ({"tables": [{"table": "public.a", "text": ["body"], "uri": "https://x/{id!r}"}]}, "tables.0.uri"),
    ({"tables": [{"table": "public.a", "text": ["body"], "colour": "red"}]}, "tables.0.colour"),
    ({"tables": [{"table": "public.a", "text": ["b"]}, {"table": "public.a", "text": ["c"]}]}, "mapped twice"),
])
def test_mapping_file_errors_name_the_field(tmp_path: Path, bad: dict, field: str) -> None:
    import tomllib  # noqa: F401 - the loader's parser

    doc = {"source": "crm-db", "tables": [{"table": "public.a", "text": ["body"]}], **bad}
    path = tmp_path / "mapping.toml"
    path.write_text(_toml(doc))
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_mapping_file_missing_or_unset(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="RAGSTREAM_CDC_MAPPING_FILE"):
        load_mapping(None)
    with pytest.raises(MappingError, match="does not exist"):
        load_mapping(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("source = ")
    with pytest.raises(MappingError, match="not valid TOML"):
        load_mapping(tmp_path / "bad.toml")


def test_shipped_sample_mapping_is_valid() -> None:
    from ragstream.settings import PROJECT_ROOT

    m = load_mapping(PROJECT_ROOT / "connect" / "sample" / "mapping.toml")
    assert m.topics()


def _toml(doc: dict) -> str:
    """A tiny TOML writer for the shapes above (top-level scalars, an array of tables)."""
    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    lines = [f"{k} = {value(v)}" for k, v in doc.items() if k != "tables"]
    for t in doc.get("tables", []):
        lines.append("[[tables]]")
        lines += [f"{k} = {value(v)}" for k, v in t.items()]
    if not doc.get("tables"):
        lines.append("tables = []")
    return "\n".join(lines) + "\n"
