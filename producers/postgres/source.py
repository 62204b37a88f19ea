"""The PostgreSQL source connector: lists the mapped tables; publishing is Debezium's job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ragstream.cdc_mapping import Mapping, MappingError, RowMapper, TableMapping, load_mapping
from ragstream.connector import (
    Capability,
    Connector,
    ConnectorError,
    Cursor,
    Excluded,
    ListedDocument,
    UpdateStats,
)
from ragstream.failures import Permanent
from ragstream.logging import get_logger
from ragstream.publisher import Publisher
from ragstream.settings import Settings

log = get_logger(__name__)


class PostgresSource(Connector):
    """The tables of one CDC mapping (its ``source`` is the source id)."""

    kind = "postgres"
    capabilities = frozenset({Capability.full_listing})

    def __init__(self, settings: Settings, mapping_file: Path, *, mapping: Mapping | None = None,
                 publisher: Publisher | None = None) -> None:
        self.mapping_file = Path(mapping_file).resolve()
        try:
            self.mapping = mapping or load_mapping(self.mapping_file)
        except MappingError as exc:
            raise ConnectorError(str(exc)) from None
        self.dsn = self.mapping.lookup.dsn or settings.resolved_cdc_dsn
        super().__init__(settings, self.mapping.source, self.identity(self.mapping_file), publisher)

    @staticmethod
    def identity(mapping_file: Path) -> dict[str, Any]:
        return {"mapping": str(Path(mapping_file).resolve())}

    @classmethod
    def open(cls, settings: Settings, source_id: str, identity: dict[str, Any],
             publisher: Publisher | None = None) -> PostgresSource:
        source = cls(settings, Path(identity["mapping"]), publisher=publisher)
        if source.source_id != source_id:
            raise ConnectorError(f"the mapping {identity['mapping']} now names source {source.source_id!r}, not "
                                 f"{source_id!r}; run `ragstream connect apply` to record it")
        return source

    @classmethod
    def register(cls, settings: Settings, mapping_file: Path, mapping: Mapping | None = None) -> Path:
        """Write this source's cursor (``<home>/sources/<source>.json``) so that
        ``open_source`` and ``known_sources`` (``ragstream verify``) find it. Idempotent; a
        cursor of this source that names another mapping file is replaced (it holds nothing
        else), a cursor of another kind of source with the same id is an error."""
        mapping = mapping or load_mapping(mapping_file)
        path = settings.home / "sources" / f"{mapping.source}.json"
        try:
            existing = json.loads(path.read_text())
        except FileNotFoundError:
            existing = None
        except ValueError:
            raise ConnectorError(f"{path} is not a source cursor (not JSON); move it away") from None
        if isinstance(existing, dict) and existing.get("kind") not in (None, cls.kind):
            raise ConnectorError(f"source id {mapping.source!r} is already a {existing.get('kind')} source "
                                 f"({path}); give the mapping another source")
        if isinstance(existing, dict) and existing.get("identity") != cls.identity(mapping_file):
            path.unlink()
        cursor = Cursor(settings, mapping.source, cls.kind, cls.identity(mapping_file))
        cursor.save()
        return cursor.path

    # -- publishing: not here ------------------------------------------------------------
    def sync(self, native_ids: Iterable[str] | None = None, *, force: bool = False,
             progress: Callable[[int], None] | None = None,
             on_publish: Callable[[str, int], None] | None = None) -> UpdateStats:
        """Publishes nothing: a database's changes reach ``rag.changes`` through Debezium and
        the normalize stage (docs/cdc.md)."""
        return UpdateStats()

    def reread(self, doc_ids: Iterable[str]) -> UpdateStats:
        raise ConnectorError(
            f"source {self.source_id} is a database captured by Debezium: nothing is re-read from here. Correct "
            "the rows in the database (the change flows through CDC), or replay `ragstream dlq replay normalize`")

    def watch(self, stop: Any, on_sync: Callable[[UpdateStats], None] | None = None,
              interval_s: float = 30.0) -> None:
        raise ConnectorError(f"source {self.source_id} is followed by Debezium (`ragstream connect up`), not watched")

    def test_connection(self) -> str:
        """Reach the database and count the mapped tables' rows (nothing is published)."""
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(self.dsn, connect_timeout=10) as conn:
                conn.read_only = True
                found = []
                for tm in self.mapping.tables:
                    if not _exists(conn, tm.table):
                        found.append(f"{tm.table} missing")
                        continue
                    schema, name = tm.table.split(".", 1)
                    n = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(name))).fetchone()[0]
                    found.append(f"{tm.table} {n:,} row(s)")
        except psycopg.Error as exc:
            raise ConnectorError(f"cannot read source {self.source_id} from PostgreSQL: {exc}") from None
        return "; ".join(found) + " (changes arrive through Debezium: `ragstream connect status`)"

    # -- listing ---------------------------------------------------------------------------
    def full_listing(self) -> Iterator[ListedDocument | Excluded]:
        """Every row of the mapped document tables now, in one read-only snapshot (join
        tables included), mapped as normalize maps it. Versions are None (see the package
        docstring)."""
        import psycopg
        from psycopg import IsolationLevel

        try:
            conn = psycopg.connect(self.dsn, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise ConnectorError(f"cannot read source {self.source_id} from PostgreSQL: {exc}") from None
        with conn:
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            readers = _JoinReaders(conn, self.mapping)
            rows = RowMapper(self.mapping, readers)
            for tm in self.mapping.tables:
                if not _exists(conn, tm.table):
                    log.info("mapped table does not exist (yet): no rows listed", source=self.source_id,
                             table=tm.table)
                    continue
                for row in _rows(conn, tm.table):
                    try:
                        doc = rows.document(tm, row)
                    except Permanent as exc:
                        yield Excluded(_doc_id_or_placeholder(rows, tm, row), "dead_lettered",
                                       f"normalize: {exc} (rag.dlq.normalize)")
                        continue
                    yield ListedDocument(doc.doc_id, None, doc.acl.principals, changed_since_published=False)


# ------------------------------------------------------------------------------------ helpers
def _exists(conn: Any, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s)", (_quoted(table),)).fetchone()[0] is not None


def _quoted(table: str) -> str:
    schema, name = table.split(".", 1)
    return f'"{schema}"."{name}"'


def _rows(conn: Any, table: str) -> Iterator[dict[str, Any]]:
    """Every row as column → value, streamed (a server-side cursor: a large table is not
    held in memory)."""
    from psycopg import sql
    from psycopg.rows import dict_row

    schema, name = table.split(".", 1)
    with conn.cursor(name=f"ragstream_list_{name}"[:63], row_factory=dict_row) as cur:
        cur.itersize = 2000
        cur.execute(sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        yield from cur


def _doc_id_or_placeholder(rows: RowMapper, tm: TableMapping, row: dict[str, Any]) -> str:
    try:
        return rows.doc_id(tm, row)
    except Permanent:
        return f"{rows.mapping.source}:{tm.table}/(no id)"


class _JoinReaders:
    """Join-table readers, read once per listing in the listing's snapshot (one query per
    join table, not one per row); the :class:`~ragstream.cdc_mapping.Lookups` the mapper asks."""

    def __init__(self, conn: Any, mapping: Mapping) -> None:
        self.conn = conn
        self._by_table: dict[str, dict[Any, list[str]]] = {}

    def principals(self, table: str, key_column: str, principal_column: str, key: Any) -> list[str]:
        if table not in self._by_table:
            self._by_table[table] = self._load(table, key_column, principal_column)
        return self._by_table[table].get(key, [])

    def _load(self, table: str, key_column: str, principal_column: str) -> dict[Any, list[str]]:
        from psycopg import sql

        out: dict[Any, list[str]] = {}
        if not _exists(self.conn, table):
            return out
        schema, name = table.split(".", 1)
        q = sql.SQL("SELECT {k}, {p} FROM {s}.{t}").format(
            k=sql.Identifier(key_column), p=sql.Identifier(principal_column), s=sql.Identifier(schema),
            t=sql.Identifier(name))
        for key, principal in self.conn.execute(q).fetchall():
            if principal is not None:
                out.setdefault(key, []).append(principal)
        return out

    def row(self, table: str, key: dict[str, Any], columns: list[str]) -> dict[str, Any] | None:
        raise NotImplementedError("the listing reads whole rows; it never looks a column up")
