"""The normalize stage: Debezium change events (``cdc.*``) → ChangeEvents and AclChanges.

Plain logic, no Kafka: :class:`NormalizeStage` takes one decoded Debezium record and returns
the :class:`~streams.stages.Output` messages to publish. What a table's row means as a
document is declared per table in a TOML mapping (``RAGSTREAM_CDC_MAPPING_FILE``, see
docs/cdc.md)::

    source = "crm-db"                         # doc_ids are crm-db:<schema>.<table>/<key>

    [[tables]]
    table = "public.articles"
    text = ["title", "body"]                  # joined with a blank line
    title = "title"
    uri = "https://intranet.example/articles/{id}"
    acl = { column = "readers", kind = "group" }   # or a join table, or fixed principals

How each kind of record is handled:

* snapshot read (``r``) and insert (``c``): an upsert; version = the record's LSN.
* update (``u``): with REPLICA IDENTITY FULL (the connector sets it, see
  connect/debezium-postgres.properties) the previous row is known, so: nothing mapped
  changed → nothing is published; only the ACL changed → an AclChange to ``rag.acl``
  (rows rewritten, nothing re-embedded); otherwise an upsert. Without the previous row an
  update is an upsert (the embed stage still reuses every unchanged chunk's vector).
* delete (``d``): a delete, version = its LSN. The tombstone after it is skipped.
* a change in an ACL join table: an AclChange for each document it names, with the
  principals read from the join table at that moment (a look-up, so it is never older
  than the change).
* added columns appear in ``after`` and are used as soon as the mapping names them;
  dropped (or not yet added) columns read as NULL.
* TOASTed values PostgreSQL did not re-send (Debezium's ``__debezium_unavailable_value``):
  taken from the previous row when the table has REPLICA IDENTITY FULL (the value did not
  change, so the previous one is the current one); otherwise read from the database by
  primary key (with ``[lookup]`` configured); otherwise the record is dead-lettered saying
  so. We never index the placeholder.
* anything the mapping cannot handle (no mapping for the table, a NULL key, an invalid
  principal, no LSN) raises :class:`Permanent` with the reason: the worker dead-letters it
  to ``rag.dlq.normalize`` and goes on.

Versions are PostgreSQL LSNs: per row they only grow (a row's next change commits after
the previous one), and a redelivered record carries the same LSN, so every guard
downstream drops it. A new PostgreSQL cluster restarts LSNs: reindex after replacing one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The mapping and row → document are foundation (ragstream/cdc_mapping.py), shared with the
# postgres source connector that lists the tables for `ragstream verify`; re-exported here.
from ragstream.cdc_mapping import (
    AclMapping,
    Document,
    Lookup,
    Lookups,
    Mapping,
    MappingError,
    PgLookups,
    RowMapper,
    TableMapping,
    load_mapping,
)
from schemas import topics
from schemas.events import AclChange, ChangeEvent, DocMetadata, InlineContent, Op, SourceKind
from streams.stages import Output, Permanent

TOAST_PLACEHOLDER = "__debezium_unavailable_value"

__all__ = ["TOAST_PLACEHOLDER", "AclMapping", "DebeziumChange", "Document", "Lookup", "Lookups", "Mapping",
           "MappingError", "NormalizeStage", "PgLookups", "TableMapping", "decode_change", "load_mapping"]


# --------------------------------------------------------------------------------------
# Debezium's envelope (JSON, no embedded schema)
# --------------------------------------------------------------------------------------

class DebeziumSource(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_: str = Field(alias="schema")
    table: str
    lsn: int | None = None
    ts_ms: int | None = None
    snapshot: str | bool | None = None


class DebeziumChange(BaseModel):
    """One Debezium PostgreSQL change record's value."""

    model_config = ConfigDict(extra="ignore")

    op: Literal["c", "u", "d", "r", "t", "m"]
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    source: DebeziumSource
    ts_ms: int | None = None

    @property
    def table(self) -> str:
        return f"{self.source.schema_}.{self.source.table}"


def decode_change(value: bytes) -> DebeziumChange:
    """The record's value → :class:`DebeziumChange`; a value that is not one raises SerdeError."""
    from schemas.serde import SerdeError

    hint = "Is the connector's value.converter JSON (connect/worker.properties)?"
    try:
        obj = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SerdeError("DebeziumChange", f"not a Debezium JSON record: {exc}", hint) from None
    if isinstance(obj, dict) and "payload" in obj and "schema" in obj:
        obj = obj["payload"]  # a worker with value.converter.schemas.enable=true
    try:
        return DebeziumChange.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
        raise SerdeError("DebeziumChange", f"not a Debezium change record ({problems})", hint) from None


# --------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------

def _is_toasted(value: Any) -> bool:
    return value == TOAST_PLACEHOLDER or (isinstance(value, list) and TOAST_PLACEHOLDER in value)


class NormalizeStage:
    """cdc.* → rag.changes (content) and rag.acl (permission-only changes)."""

    name = "normalize"

    def __init__(self, mapping: Mapping, *, lookups: Lookups | None = None, blobs: Any = None,
                 inline_max_bytes: int = 1_000_000) -> None:
        self.mapping = mapping
        self.lookups = lookups
        self.blobs = blobs
        self.inline_max_bytes = inline_max_bytes
        self.input_topics = tuple(mapping.topics())
        self.input_topic = self.input_topics[0]
        self._joins = mapping.join_tables()
        self._rows = RowMapper(mapping, lookups)

    @classmethod
    def from_settings(cls, settings: Any) -> "NormalizeStage":
        from ragstream.blobs import BlobStore

        mapping = load_mapping(settings.cdc_mapping_file)
        # Connects on first use only: join-table ACLs, and TOASTed values of tables without
        # REPLICA IDENTITY FULL.
        lookups = PgLookups(mapping.lookup.dsn or settings.resolved_cdc_dsn)
        return cls(mapping, lookups=lookups, blobs=BlobStore(settings.blob_dir),
                   inline_max_bytes=settings.inline_max_bytes)

    # -- entry points ------------------------------------------------------------------
    def decode(self, value: bytes) -> DebeziumChange:
        return decode_change(value)

    def process(self, change: DebeziumChange) -> list[Output]:
        if change.op in ("t", "m"):
            return []  # TRUNCATE names no rows; logical messages carry no row
        if change.table in self._joins:
            return self._acl_rows(change)
        tm = self.mapping.table(change.table)
        if tm is None:
            raise Permanent(f"no mapping for table {change.table}: add a [[tables]] entry to the CDC mapping, or "
                            "remove the table from the connector's table.include.list")
        version = self._version(change)
        changed_at = self._changed_at(change)
        if change.op == "d":
            if not change.before:
                raise Permanent(f"{change.table}: a delete without the previous row's key (REPLICA IDENTITY NOTHING?)")
            doc_id = self._doc_id(tm, change.before)
            return [Output.of(topics.CHANGES, ChangeEvent(
                source=self.mapping.source, source_kind=SourceKind.postgres, doc_id=doc_id, op=Op.delete,
                version=version, changed_at=changed_at))]
        if change.after is None:
            raise Permanent(f"{change.table}: a {change.op!r} record without the new row")
        after = self._resolve_toasted(tm, change.after, change.before)
        if after is None:
            return []  # the row is gone already: its delete record follows
        doc = self._document(tm, after)
        if change.op == "u" and self._full(tm, change.before, after):
            old = self._document(tm, self._resolve_toasted(tm, change.before, None, lookup=False) or {}, previous=True)
            if old.doc_id == doc.doc_id and old.content() == doc.content():
                # A join table's readers change through the join table's own records.
                if old.acl == doc.acl or (tm.acl is not None and tm.acl.table is not None):
                    return []  # only unmapped columns changed: nothing to re-index
                return [Output(topics.ACL, doc.doc_id, self._encode(AclChange(
                    source=self.mapping.source, doc_id=doc.doc_id, version=version, changed_at=changed_at,
                    acl=doc.acl)))]
        return [Output.of(topics.CHANGES, self._upsert(tm, doc, version, changed_at))]

    # -- pieces ------------------------------------------------------------------------
    @staticmethod
    def _encode(event: Any) -> bytes:
        from schemas.serde import encode

        return encode(event)

    @staticmethod
    def _version(change: DebeziumChange) -> int:
        if change.source.lsn is None:
            raise Permanent(f"{change.table}: the record has no source.lsn, so it cannot be versioned")
        return change.source.lsn

    @staticmethod
    def _changed_at(change: DebeziumChange) -> datetime:
        ms = change.source.ts_ms or change.ts_ms
        return datetime.fromtimestamp(ms / 1000, timezone.utc) if ms else datetime.now(timezone.utc)

    def _full(self, tm: TableMapping, before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
        """Is ``before`` the whole previous row (REPLICA IDENTITY FULL), not just its key?"""
        if not before:
            return False
        return all(c in before for c in tm.columns() if c in after)

    def _resolve_toasted(self, tm: TableMapping, row: dict[str, Any], before: dict[str, Any] | None,
                         lookup: bool = True) -> dict[str, Any] | None:
        wanted = [c for c in tm.columns() if _is_toasted(row.get(c))]
        if not wanted:
            return row
        row = dict(row)
        for c in list(wanted):
            if before is not None and c in before and not _is_toasted(before[c]):
                row[c] = before[c]  # unchanged by definition: the previous value is the current one
                wanted.remove(c)
        if not wanted or not lookup:
            return row
        if self.lookups is None:
            raise Permanent(f"{tm.table}: column(s) {wanted} were not re-sent by PostgreSQL (TOASTed, unchanged) and "
                            "neither the previous row (set REPLICA IDENTITY FULL) nor a database look-up ([lookup] "
                            "dsn) can supply them")
        key = {c: row[c] for c in (tm.id or RowMapper.key_columns(tm, row))}
        current = self.lookups.row(tm.table, key, wanted)
        if current is None:
            return None
        row.update(current)
        return row

    # Row → document: the shared mapping (ragstream.cdc_mapping.RowMapper).
    def _doc_id(self, tm: TableMapping, row: dict[str, Any]) -> str:
        return self._rows.doc_id(tm, row)

    def _document(self, tm: TableMapping, row: dict[str, Any], previous: bool = False) -> Document:
        return self._rows.document(tm, row, previous=previous)

    def _upsert(self, tm: TableMapping, doc: Document, version: int, changed_at: datetime) -> ChangeEvent:
        data = doc.text.encode("utf-8")
        content: Any = InlineContent.of(doc.text)
        if len(data) > self.inline_max_bytes and self.blobs is not None:
            content = self.blobs.put(doc.text)  # claim check: the message stays small
        return ChangeEvent(
            source=self.mapping.source, source_kind=SourceKind.postgres, doc_id=doc.doc_id, op=Op.upsert,
            version=version, changed_at=changed_at, content=content, content_type=tm.content_type,
            metadata=DocMetadata(title=doc.title, uri=doc.uri, author=doc.author, extra=dict(doc.extra)),
            acl=doc.acl)

    def _acl_rows(self, change: DebeziumChange) -> list[Output]:
        """A join-table row changed: re-read the readers of every document it names."""
        tm = self._joins[change.table]
        spec = tm.acl
        assert spec is not None and spec.key is not None
        if self.lookups is None:
            raise Permanent(f"{change.table} is an ACL join table, which needs a database look-up ([lookup] dsn)")
        version = self._version(change)
        keys = []
        for row in (change.before, change.after):
            if row and row.get(spec.key) is not None and row[spec.key] not in keys:
                keys.append(row[spec.key])
        if not keys:
            raise Permanent(f"{change.table}: the record does not carry column {spec.key!r} (set REPLICA IDENTITY "
                            "FULL on the join table so deletes carry it)")
        out = []
        id_col = (tm.id or ("id",))[0]
        for key in keys:
            doc_id = self._doc_id(tm, {id_col: key})
            acl = self._rows.principals(tm, {id_col: key})
            out.append(Output(topics.ACL, doc_id, self._encode(AclChange(
                source=self.mapping.source, doc_id=doc_id, version=version, changed_at=self._changed_at(change),
                acl=acl))))
        return out
