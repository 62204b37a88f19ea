"""What a database row means as a document: the declarative table mapping of database CDC.

Foundation, shared by the two sides that read rows: the normalize stage
(:mod:`streams.normalize`, rows as Debezium sends them) and the ``postgres`` source
connector (:mod:`producers.postgres`, rows as the table holds them now, for ``ragstream
verify``). Both map a row through :class:`RowMapper`, so a row gets the same doc_id and the
same readers whichever way it was read. The mapping is TOML (``RAGSTREAM_CDC_MAPPING_FILE``,
see docs/cdc.md)::

    source = "crm-db"                         # doc_ids are crm-db:<schema>.<table>/<key>

    [[tables]]
    table = "public.articles"
    text = ["title", "body"]                  # joined with a blank line
    title = "title"
    uri = "https://intranet.example/articles/{id}"
    acl = { column = "readers", kind = "group" }   # or a join table, or fixed principals

A row the mapping cannot handle (a NULL key, an invalid principal, a NULL column a uri
template needs) raises :class:`~ragstream.failures.Permanent` with the reason.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ragstream.failures import Permanent
from schemas.events import SOURCE_ID, Acl

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
        raise MappingError("database CDC needs a table mapping: set RAGSTREAM_CDC_MAPPING_FILE to a TOML file "
                           "(see docs/cdc.md)")
    return load_toml(Path(path), Mapping, "CDC mapping file", "RAGSTREAM_CDC_MAPPING_FILE", MappingError)


# --------------------------------------------------------------------------------------
# Rows → documents
# --------------------------------------------------------------------------------------

class Lookups(Protocol):
    """What mapping a row may ask the database (tests pass a fake): a join table's readers,
    and (normalize only) columns PostgreSQL did not re-send."""

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


def as_text(value: Any) -> str:
    """A column value as text, the same for Debezium's JSON and psycopg's Python values."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


class RowMapper:
    """Row (column → value) → :class:`Document`, by one mapping. ``lookups`` reads join-table
    readers (None: a join-table ACL cannot be read, which is an error for such tables)."""

    def __init__(self, mapping: Mapping, lookups: Lookups | None = None) -> None:
        self.mapping = mapping
        self.lookups = lookups

    def doc_id(self, tm: TableMapping, row: dict[str, Any]) -> str:
        cols = tm.id or self.key_columns(tm, row)
        values = []
        for c in cols:
            if row.get(c) is None:
                raise Permanent(f"{tm.table}: id column {c!r} is NULL or absent, so the row has no document id")
            values.append(quote(as_text(row[c]), safe=""))
        return f"{self.mapping.source}:{tm.table}/{'/'.join(values)}"

    @staticmethod
    def key_columns(tm: TableMapping, row: dict[str, Any]) -> tuple[str, ...]:
        if "id" in row:
            return ("id",)
        raise Permanent(f"{tm.table}: the mapping gives no id columns and the row has no 'id' column; "
                        "set id = [\"<primary key columns>\"]")

    def principals(self, tm: TableMapping, row: dict[str, Any]) -> Acl:
        spec = tm.acl
        if spec is None:
            return Acl.unknown()
        if spec.principals is not None:
            return Acl(principals=spec.principals)
        if spec.column is not None:
            raw = row.get(spec.column)
            if raw is None:
                return Acl.unknown()  # NULL: nobody can tell who may read it, so nobody may
            values = raw if isinstance(raw, list) else [p for p in as_text(raw).replace(";", ",").split(",")]
        else:
            assert spec.table is not None and spec.key is not None
            if self.lookups is None:
                raise Permanent(f"{tm.table}: its readers are in the join table {spec.table}, which needs a "
                                "database look-up ([lookup] dsn)")
            key_cols = tm.id or self.key_columns(tm, row)
            values = self.lookups.principals(spec.table, spec.key, spec.principal, row.get(key_cols[0]))
        names = [v.strip() for v in (as_text(x) for x in values if x is not None) if v.strip()]
        if spec.kind:
            names = [n if (":" in n or n == "public") else f"{spec.kind}:{n}" for n in names]
        try:
            return Acl(principals=tuple(names))
        except ValidationError as exc:
            where = f"column {spec.column!r}" if spec.column else f"join table {spec.table}"
            raise Permanent(f"{tm.table}: {where}: {exc.errors()[0]['msg']}") from None

    def document(self, tm: TableMapping, row: dict[str, Any], previous: bool = False) -> Document:
        """The row as a document. ``previous``: the row before an update, whose join-table
        readers are not read (a join table's readers are read now, never from the past)."""
        texts = [as_text(row[c]) for c in tm.text if row.get(c) is not None]
        uri = None
        if tm.uri:
            fields = {f for _, f, _, _ in string.Formatter().parse(tm.uri) if f}
            missing = sorted(f for f in fields if row.get(f) is None)
            if missing:
                raise Permanent(f"{tm.table}: the uri template needs column(s) {missing}, which are NULL or absent")
            uri = tm.uri.format(**{f: quote(as_text(row[f]), safe="") for f in fields})
        title = as_text(row[tm.title]) if tm.title and row.get(tm.title) is not None else None
        author = as_text(row[tm.author]) if tm.author and row.get(tm.author) is not None else None
        extra = tuple((c, as_text(row[c])) for c in tm.extra if row.get(c) is not None)
        if previous and tm.acl is not None and tm.acl.table is not None:
            acl = Acl.unknown()
        else:
            acl = self.principals(tm, row)
        return Document(self.doc_id(tm, row), "\n\n".join(texts), title, uri, author, extra, acl)
