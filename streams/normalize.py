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
import string
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas import topics
from schemas.events import SOURCE_ID, Acl, AclChange, ChangeEvent, DocMetadata, InlineContent, Op, SourceKind
from streams.stages import Output, Permanent

TOAST_PLACEHOLDER = "__debezium_unavailable_value"
IDENT = r"^[A-Za-z_][A-Za-z0-9_$]*$"
TABLE = r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$"


class MappingError(SystemExit):
    """The mapping file is missing or invalid; the message names the field."""


# --------------------------------------------------------------------------------------
# The mapping (TOML)
# --------------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AclMapping(_Strict):
    """Where a row's readers come from: exactly one of ``column``, ``table`` or ``principals``."""

    column: str | None = Field(None, pattern=IDENT, description="a text or text[] column of principals")
    table: str | None = Field(None, pattern=TABLE, description="a join table schema.table: one row per reader")
    key: str | None = Field(None, pattern=IDENT, description="join table column holding the document row's key")
    principal: str = Field("principal", pattern=IDENT, description="join table column holding a principal")
    principals: tuple[str, ...] | None = Field(None, description="the same readers for every row")
    kind: Literal["user", "group"] | None = Field(
        None, description="prefix for bare names (e.g. 'eng' → 'group:eng'); without it every value must be "
                          "'user:…', 'group:…' or 'public'")

    @model_validator(mode="after")
    def _one_source(self) -> "AclMapping":
        given = [n for n in ("column", "table", "principals") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of column, table or principals (got {', '.join(given) or 'none'})")
        if self.table is not None and self.key is None:
            raise ValueError("a join table needs key = the column that holds the document row's key")
        if self.principals is not None:
            Acl(principals=self.principals)  # a bad principal fails here, at start
        return self


class TableMapping(_Strict):
    table: str = Field(pattern=TABLE, description="schema.table, as captured")
    id: tuple[str, ...] | None = Field(
        None, min_length=1, description="columns forming the document id (default: the primary key)")
    text: tuple[str, ...] = Field(min_length=1, description="columns joined (blank line between) into the text")
    title: str | None = Field(None, pattern=IDENT)
    uri: str | None = Field(None, description="template with {column} fields, e.g. https://app/items/{id}")
    author: str | None = Field(None, pattern=IDENT)
    extra: tuple[str, ...] = Field((), description="columns kept as metadata (not embedded)")
    content_type: str = "text/plain"
    acl: AclMapping | None = Field(None, description="unset: nobody may read the rows (unknown means private)")

    @field_validator("text", "extra", "id")
    @classmethod
    def _idents(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        import re

        bad = [c for c in v or () if not re.match(IDENT, c)]
        if bad:
            raise ValueError(f"not column names: {bad}")
        return v

    @field_validator("uri")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            parts = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc}); write columns as {{name}}") from None
        import re

        bad = [f for f, spec, conv in parts if not re.match(IDENT, f) or spec or conv]
        if bad:
            raise ValueError(f"template fields must be plain column names, not {bad}")
        return v

    def columns(self) -> set[str]:
        """Every column the document is built from (the ACL column included)."""
        cols = set(self.text) | set(self.extra) | set(self.id or ())
        cols |= {c for c in (self.title, self.author) if c}
        if self.uri:
            cols |= {f for _, f, _, _ in string.Formatter().parse(self.uri) if f}
        if self.acl and self.acl.column:
            cols.add(self.acl.column)
        return cols


class Lookup(_Strict):
    """A database connection for join-table ACLs and TOASTed values (libpq URI)."""

    dsn: str | None = Field(None, description="postgresql://user@host:port/db; default: RAGSTREAM_CDC_DSN or the "
                                              "local stack's database")


class Mapping(_Strict):
    source: str = Field(pattern=rf"^{SOURCE_ID}$", description="source id: the doc_id prefix")
    topic_prefix: str = Field("cdc", pattern=r"^[A-Za-z0-9_.-]+$", description="Debezium's topic.prefix")
    lookup: Lookup = Field(default_factory=Lookup)
    tables: tuple[TableMapping, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "Mapping":
        names = [t.table for t in self.tables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tables mapped twice: {dupes}")
        clash = sorted({t.acl.table for t in self.tables if t.acl and t.acl.table} & set(names))
        if clash:
            raise ValueError(f"{clash} is both a document table and an ACL join table")
        return self

    def table(self, name: str) -> TableMapping | None:
        return next((t for t in self.tables if t.table == name), None)

    def join_tables(self) -> dict[str, TableMapping]:
        """ACL join table → the document table it grants."""
        return {t.acl.table: t for t in self.tables if t.acl and t.acl.table}

    def captured(self) -> list[str]:
        """Every table the connector must capture (document tables, then join tables)."""
        return [t.table for t in self.tables] + sorted(self.join_tables())

    def topics(self) -> list[str]:
        return [f"{self.topic_prefix}.{t}" for t in self.captured()]


def load_mapping(path: Path | None) -> Mapping:
    from ragstream.configfile import load_toml

    if path is None:
        raise MappingError("the normalize stage needs a table mapping: set RAGSTREAM_CDC_MAPPING_FILE to a TOML file "
                           "(see docs/cdc.md)")
    return load_toml(Path(path), Mapping, "CDC mapping file", "RAGSTREAM_CDC_MAPPING_FILE", MappingError)


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

class Lookups(Protocol):
    """What normalize may ask the database (tests pass a fake)."""

    def principals(self, table: str, key_column: str, principal_column: str, key: Any) -> list[str]: ...

    def row(self, table: str, key: dict[str, Any], columns: list[str]) -> dict[str, Any] | None: ...


class PgLookups:
    """:class:`Lookups` on PostgreSQL (psycopg 3); a lost connection is a transient error."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Any = None

    def _query(self, query: Any, params: list[Any]) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            return self._conn.execute(query, params).fetchall()
        except psycopg.OperationalError as exc:
            self._conn = None
            raise ConnectionError(f"PostgreSQL look-up failed: {exc}") from None

    def principals(self, table: str, key_column: str, principal_column: str, key: Any) -> list[str]:
        from psycopg import sql

        schema, name = table.split(".", 1)
        q = sql.SQL("SELECT {p} FROM {s}.{t} WHERE {k} = %s").format(
            p=sql.Identifier(principal_column), s=sql.Identifier(schema), t=sql.Identifier(name),
            k=sql.Identifier(key_column))
        return [r[0] for r in self._query(q, [key]) if r[0] is not None]

    def row(self, table: str, key: dict[str, Any], columns: list[str]) -> dict[str, Any] | None:
        from psycopg import sql

        schema, name = table.split(".", 1)
        q = sql.SQL("SELECT {cols} FROM {s}.{t} WHERE {cond}").format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns), s=sql.Identifier(schema),
            t=sql.Identifier(name),
            cond=sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in key))
        rows = self._query(q, list(key.values()))
        return dict(zip(columns, rows[0])) if rows else None


@dataclass(frozen=True)
class Document:
    """What a row means as a document: compared before/after to decide what to publish."""

    doc_id: str
    text: str
    title: str | None
    uri: str | None
    author: str | None
    extra: tuple[tuple[str, str], ...]
    acl: Acl

    def content(self) -> tuple[Any, ...]:
        return (self.text, self.title, self.uri, self.author, self.extra)


def _is_toasted(value: Any) -> bool:
    return value == TOAST_PLACEHOLDER or (isinstance(value, list) and TOAST_PLACEHOLDER in value)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


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

    def _doc_id(self, tm: TableMapping, row: dict[str, Any]) -> str:
        cols = tm.id or self._key_columns(tm, row)
        values = []
        for c in cols:
            if row.get(c) is None:
                raise Permanent(f"{tm.table}: id column {c!r} is NULL or absent, so the row has no document id")
            values.append(quote(_as_text(row[c]), safe=""))
        return f"{self.mapping.source}:{tm.table}/{'/'.join(values)}"

    @staticmethod
    def _key_columns(tm: TableMapping, row: dict[str, Any]) -> tuple[str, ...]:
        if "id" in row:
            return ("id",)
        raise Permanent(f"{tm.table}: the mapping gives no id columns and the row has no 'id' column; "
                        "set id = [\"<primary key columns>\"]")

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
        key = {c: row[c] for c in (tm.id or self._key_columns(tm, row))}
        current = self.lookups.row(tm.table, key, wanted)
        if current is None:
            return None
        row.update(current)
        return row

    def _principals(self, tm: TableMapping, row: dict[str, Any]) -> Acl:
        spec = tm.acl
        if spec is None:
            return Acl.unknown()
        if spec.principals is not None:
            return Acl(principals=spec.principals)
        if spec.column is not None:
            raw = row.get(spec.column)
            if raw is None:
                return Acl.unknown()  # NULL: nobody can tell who may read it, so nobody may
            values = raw if isinstance(raw, list) else [p for p in _as_text(raw).replace(";", ",").split(",")]
        else:
            assert spec.table is not None and spec.key is not None and self.lookups is not None
            key_cols = tm.id or self._key_columns(tm, row)
            values = self.lookups.principals(spec.table, spec.key, spec.principal, row.get(key_cols[0]))
        names = [v.strip() for v in (_as_text(x) for x in values if x is not None) if v.strip()]
        if spec.kind:
            names = [n if (":" in n or n == "public") else f"{spec.kind}:{n}" for n in names]
        try:
            return Acl(principals=tuple(names))
        except ValidationError as exc:
            where = f"column {spec.column!r}" if spec.column else f"join table {spec.table}"
            raise Permanent(f"{tm.table}: {where}: {exc.errors()[0]['msg']}") from None

    def _document(self, tm: TableMapping, row: dict[str, Any], previous: bool = False) -> Document:
        texts = [_as_text(row[c]) for c in tm.text if row.get(c) is not None]
        uri = None
        if tm.uri:
            fields = {f for _, f, _, _ in string.Formatter().parse(tm.uri) if f}
            missing = sorted(f for f in fields if row.get(f) is None)
            if missing:
                raise Permanent(f"{tm.table}: the uri template needs column(s) {missing}, which are NULL or absent")
            uri = tm.uri.format(**{f: quote(_as_text(row[f]), safe="") for f in fields})
        title = _as_text(row[tm.title]) if tm.title and row.get(tm.title) is not None else None
        author = _as_text(row[tm.author]) if tm.author and row.get(tm.author) is not None else None
        extra = tuple((c, _as_text(row[c])) for c in tm.extra if row.get(c) is not None)
        # The previous row's ACL only matters when it came from a column; a join table is read now.
        if previous and tm.acl is not None and tm.acl.table is not None:
            acl = Acl.unknown()
        else:
            acl = self._principals(tm, row)
        return Document(self._doc_id(tm, row), "\n\n".join(texts), title, uri, author, extra, acl)

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
            acl = self._principals(tm, {id_col: key})
            out.append(Output(topics.ACL, doc_id, self._encode(AclChange(
                source=self.mapping.source, doc_id=doc_id, version=version, changed_at=self._changed_at(change),
                acl=acl))))
        return out
