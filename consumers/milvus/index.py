"""MilvusIndex: collections, the document registry and ACL sets, and the DSR queries; writes
(writer.py) and search (search.py) are its mixins."""

from __future__ import annotations

import re
import time
from typing import Any, Iterable
from pymilvus import DataType, Function, FunctionType
from pymilvus.exceptions import MilvusException
from ragstream.failures import Kind, classify
from consumers.milvus.schema import ANALYZER, IndexInputError, IndexSchemaError, MAX_TEXT, MODIFIED_FIELD, REQUIRED_FIELDS, SPARSE_FIELD, TransientIndexError, _VARCHAR_LIMITS, milvus_client
from consumers.milvus.acl import AclSets, acl_key, check_acl, escape_literal
from consumers.milvus.engine import Engine, parse_version
from consumers.milvus.search import SearchMixin
from consumers.milvus.writer import WriterMixin
from ragstream.logging import get_logger

log = get_logger(__name__)


class MilvusIndex(SearchMixin, WriterMixin):
    OUTPUT = ["doc_id", "source", "title", "uri", "heading", "text"]

    def __init__(self, uri: str, alias: str, dim: int, *, timeout: float = 30, acl_refresh_s: float = 5.0,
                 collection: str | None = None, search_consistency: str | None = None) -> None:
        self.uri = uri
        if search_consistency is not None:
            self.search_consistency = search_consistency  # else SearchMixin's default, Strong
        self.alias = alias
        #: The real name. A writer pins it in ensure() (the one behind the alias then, or the
        #: ``collection`` given: a reindex's new one) and keeps writing there after the alias
        #: moves; a reader that never called ensure() follows the alias (re-resolved).
        self.collection = collection or alias
        self._explicit = collection
        self._pinned = False
        self.dim = dim
        self._fields: dict[str, bool] | None = None  # name -> written by us (not a function's output)
        self._warned: set[str] = set()
        self.acl_sets = AclSets(self._acl_sets_since, acl_refresh_s)
        # pymilvus pools one gRPC channel per address in the process. A client created just
        # as milvus-lite sent a GOAWAY finds the pooled channel broken and its one recovery
        # attempt fails at once. A few short retries ride over it.
        for attempt in range(6):
            try:
                self.client = milvus_client(uri, timeout)
                break
            except MilvusException as exc:
                if attempt == 5:
                    raise TransientIndexError(f"cannot connect to Milvus at {uri}: {exc}") from exc
                time.sleep(0.5 * (attempt + 1))

    # -- collection lifecycle -------------------------------------------------------------
    def ensure(self, *, pin: bool = True) -> str:
        """Create the collection behind the alias if there is none (or the ``collection``
        given, which the alias is not moved to); return its name. With ``pin`` (a writer),
        reads and writes go there from now on, even after a reindex moves the alias; without
        (a searcher: the API), they keep following the alias."""
        try:
            if self._explicit is not None:
                name = self._explicit
                if not self.client.has_collection(name):
                    self.create(name)
            elif self._pinned and self.collection != self.alias and self.client.has_collection(self.collection):
                # A writer stays on the collection it pinned, also when this runs again before a
                # retry after the alias moved (a reindex): only a restart moves it. (Dropped by
                # `reindex --gc`: then it follows the alias, as a restart would.)
                name = self.collection
            elif self.alias in self.client.list_aliases().get("aliases", []):
                name = self.client.describe_alias(self.alias)["collection_name"]
            else:
                name = f"{self.alias}_{int(time.time())}"
                self.create(name)
                self.client.create_alias(collection_name=name, alias=self.alias)
            have = {f["name"] for f in self.client.describe_collection(name)["fields"]}
            missing = [f for f in REQUIRED_FIELDS if f not in have]
            if missing:
                raise IndexSchemaError(
                    f"Milvus collection {name} (alias {self.alias}) lacks field(s) {', '.join(missing)}: it was "
                    "made by an older ragstream. Rebuild it: stop the workers, drop the collection (or set "
                    "RAGSTREAM_COLLECTION to a new name) and replay rag.documents by restarting the chunk "
                    "worker with a new consumer group, or re-run `ragstream up` on a fresh RAGSTREAM_HOME.")
            if not self.client.has_collection(self._registry(name)):
                self._create_registry(self._registry(name))
            reg = {f["name"] for f in self.client.describe_collection(self._registry(name))["fields"]}
            if not {"acl", "acl_version"} <= reg:
                raise IndexSchemaError(f"Milvus collection {self._registry(name)} lacks the acl fields: it was "
                                       "made by an older ragstream; rebuild the index as the message for missing "
                                       "chunk fields describes (a fresh RAGSTREAM_HOME or collection name).")
            if not self.client.has_collection(self._acl_sets(name)):
                self._create_acl_sets(self._acl_sets(name))
            self._fields = None  # read again from this collection on first use
            # A restarted server lists collections as released until they are loaded.
            self.client.load_collection(name)
            self.client.load_collection(self._registry(name))
            self.client.load_collection(self._acl_sets(name))
        except MilvusException as exc:
            raise TransientIndexError(f"cannot prepare Milvus collections at {self.uri}: {exc}") from exc
        self.collection = name
        self._pinned = pin or self._explicit is not None
        return name

    @property
    def target(self) -> str:
        """What reads and writes of this index address: the pinned collection of a writer, the
        alias for a reader (so a reader follows a swap at once)."""
        return self.collection if self._pinned else self.alias

    def behind_alias(self) -> str | None:
        """The collection the alias points at now (None: there is no alias yet)."""
        try:
            if self.alias not in self.client.list_aliases().get("aliases", []):
                return None
            return self.client.describe_alias(self.alias)["collection_name"]
        except MilvusException as exc:
            raise self._transient(f"Milvus alias lookup failed: {exc}", exc) from exc

    def point_alias(self, name: str) -> str | None:
        """Move the alias to collection ``name`` in one call (Milvus swaps it atomically: a
        search reads either the old or the new collection, never neither); return the
        collection it pointed at before."""
        before = self.behind_alias()
        try:
            self.client.load_collection(name)
            if before is None:
                self.client.create_alias(collection_name=name, alias=self.alias)
            elif before != name:
                self.client.alter_alias(collection_name=name, alias=self.alias)
        except MilvusException as exc:
            raise self._transient(f"moving alias {self.alias} to {name} failed: {exc}", exc) from exc
        return before

    def chunk_collections(self) -> list[str]:
        """This alias's chunk collections (``<alias>_<seconds>``, oldest first), behind the alias or not."""
        pattern = re.compile(rf"^{re.escape(self.alias)}_\d+$")
        try:
            return sorted((n for n in self.client.list_collections() if pattern.match(n)),
                          key=lambda n: int(n.rsplit("_", 1)[1]))
        except MilvusException as exc:
            raise self._transient(f"listing Milvus collections failed: {exc}", exc) from exc

    def drop(self, name: str) -> None:
        """Drop chunk collection ``name`` with its registry and ACL sets; never the one behind the alias."""
        if name == self.behind_alias():
            raise ValueError(f"{name} is behind alias {self.alias}; move the alias first")
        try:
            for n in (name, self._registry(name), self._acl_sets(name)):
                if self.client.has_collection(n):
                    self.client.drop_collection(n)
        except MilvusException as exc:
            raise self._transient(f"dropping {name} failed: {exc}", exc) from exc

    def count(self) -> int:
        """Rows (chunks) in the collection this index addresses."""
        try:
            res = self.client.query(collection_name=self.target, filter="", output_fields=["count(*)"],
                                    consistency_level="Strong")
        except MilvusException as exc:
            raise self._transient(f"Milvus count failed: {exc}", exc) from exc
        return int(res[0]["count(*)"]) if res else 0

    def _transient(self, message: str, exc: BaseException | None = None) -> Exception:
        """A failed call, classified (:mod:`ragstream.failures`). Invalid input becomes an
        :class:`IndexInputError` (dead-lettered at once); anything else is transient, and
        before the caller retries the collections are made sure of and loaded again (a
        restarted Milvus lists them as released)."""
        if exc is not None and classify(exc) is Kind.permanent:
            return IndexInputError(message)
        pinned = self._pinned
        try:
            self.ensure(pin=pinned)
        except TransientIndexError:
            pass  # still down; the retry will come back here
        finally:
            self._pinned = pinned  # a reader keeps following the alias (ensure() may have failed half-way)
        return TransientIndexError(message)

    @staticmethod
    def _registry(name: str) -> str:
        return f"{name}_docs"

    def _create_registry(self, name: str) -> None:
        """One row per document: the version applied last (deletes included), so a late,
        older event is recognised after a restart. Milvus wants a vector field in every
        collection; ``unused`` is a constant 2-d placeholder."""
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=2048, is_primary=True)
        schema.add_field("version", DataType.INT64)
        schema.add_field("deleted", DataType.BOOL)
        schema.add_field("meta", DataType.VARCHAR, max_length=64)
        schema.add_field("acl", DataType.VARCHAR, max_length=16384)
        schema.add_field("acl_version", DataType.INT64)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
        index = self.client.prepare_index_params()
        index.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
        self.client.create_collection(collection_name=name, schema=schema, index_params=index,
                                      consistency_level="Strong")

    @staticmethod
    def _acl_sets(name: str) -> str:
        return f"{name}_acls"

    def _create_acl_sets(self, name: str) -> None:
        """One row per distinct ACL set: ``acl_key`` → ``acl``. Insert-only; small (sets,
        not documents: folders and sites share them)."""
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("acl_key", DataType.VARCHAR, max_length=32, is_primary=True)
        schema.add_field("acl", DataType.VARCHAR, max_length=16384)
        schema.add_field("added_ms", DataType.INT64)  # registration time: readers fetch what is new
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
        index = self.client.prepare_index_params()
        index.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
        self.client.create_collection(collection_name=name, schema=schema, index_params=index,
                                      consistency_level="Strong")

    def register_acls(self, acls: Iterable[str]) -> None:
        """Store ACL sets before the rows that use them (a search must be able to resolve
        every key a row carries; a set stored without rows is harmless)."""
        new = {acl_key(a): a for a in acls if a and not self.acl_sets.known(acl_key(a))}
        if not new:
            return
        added_ms = int(time.time() * 1000)
        self.client.upsert(collection_name=self._acl_sets(self.collection),
                           data=[{"acl_key": k, "acl": a, "added_ms": added_ms, "unused": [0.0, 0.0]}
                                 for k, a in sorted(new.items())])
        for k, a in new.items():
            self.acl_sets.add(k, a)

    def _acl_sets_since(self, since_ms: int | None) -> list[tuple[str, str, int]]:
        """ACL sets registered at or after ``since_ms`` (all of them for ``None``). A reader
        that never called :meth:`ensure` (``ragstream search``) finds the collection behind
        the alias here; with no alias yet, nothing is indexed and there are no sets."""
        if not self._pinned and self._explicit is None:  # a reader: the sets of whatever the alias points at now (a reindex moves it)
            if self.alias not in self.client.list_aliases().get("aliases", []):
                return []
            self.collection = self.client.describe_alias(self.alias)["collection_name"]
        name = self._acl_sets(self.collection)
        expr = 'acl_key != ""' if since_ms is None else f"added_ms >= {since_ms}"
        fields = ["acl_key", "acl", "added_ms"]
        rows = self.client.query(collection_name=name, filter=expr, output_fields=fields, limit=16384,
                                 consistency_level="Strong")
        if len(rows) == 16384:  # more than one query returns: page through them all
            rows, it = [], self.client.query_iterator(collection_name=name, filter=expr, batch_size=4096,
                                                      output_fields=fields, consistency_level="Strong")
            while batch := it.next():
                rows += batch
            it.close()
        return [(r["acl_key"], r["acl"], r["added_ms"]) for r in rows]

    def doc_state(self, doc_id: str) -> dict[str, Any] | None:
        """The registry row: ``version`` applied last, ``deleted``, ``meta`` (hash of what
        every row repeats), and the newest permission change seen (``acl``, ``acl_version``)."""
        return self.doc_states([doc_id]).get(doc_id)

    def doc_states(self, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """:meth:`doc_state` of several documents in one read (absent: never seen)."""
        ids = sorted(set(doc_ids))
        out: dict[str, dict[str, Any]] = {}
        try:
            for i in range(0, len(ids), 500):
                listed = ", ".join(f'"{escape_literal(d)}"' for d in ids[i:i + 500])
                for row in self.client.query(collection_name=self._registry(self.collection),
                                             filter=f"doc_id in [{listed}]",
                                             output_fields=["doc_id", "version", "deleted", "meta", "acl",
                                                            "acl_version"]):
                    out[row["doc_id"]] = _state(dict(row))
        except MilvusException as exc:
            raise self._transient(f"Milvus registry read failed: {exc}", exc) from exc
        return out

    def set_doc_state(self, doc_id: str, version: int, deleted: bool, meta: str, acl: str = "",
                      acl_version: int = -1, *, revision: int = 0) -> None:
        self.set_doc_states([dict(doc_id=doc_id, version=version, deleted=deleted, meta=meta, acl=acl,
                                  acl_version=acl_version, revision=revision)])

    def set_doc_states(self, states: list[dict[str, Any]]) -> None:
        """Write registry rows (keys as :meth:`set_doc_state`'s arguments) in one upsert."""
        rows = [{"doc_id": s["doc_id"], "version": s["version"], "deleted": s["deleted"],
                 "meta": f"r{s['revision']}:{s['meta']}" if s.get("revision") else s["meta"],
                 "acl": s.get("acl", ""), "acl_version": s.get("acl_version", -1), "unused": [0.0, 0.0]}
                for s in states]
        if not rows:
            return
        try:
            self.client.upsert(collection_name=self._registry(self.collection), data=rows)
        except MilvusException as exc:
            raise self._transient(f"Milvus registry write failed: {exc}", exc) from exc

    def set_acl(self, doc_id: str, acl: str) -> int:
        """Rewrite the ACL of every row of a document (vectors and text as stored); return
        the rows rewritten. No model is involved."""
        check_acl(acl)
        try:
            rows = self.rows(f'doc_id == "{escape_literal(doc_id)}"', self.writable_fields())
            for r in rows:
                r["acl"] = acl
                r["acl_key"] = acl_key(acl)
            if rows:
                self.register_acls([acl])
                self.client.upsert(collection_name=self.target, data=rows)
        except MilvusException as exc:
            raise self._transient(f"Milvus ACL update failed for {doc_id}: {exc}", exc) from exc
        return len(rows)

    def chunk_ids_of(self, doc_id: str) -> set[str]:
        return self.chunk_ids_by_doc([doc_id]).get(doc_id, set())

    def chunk_ids_by_doc(self, doc_ids: Iterable[str]) -> dict[str, set[str]]:
        """The chunk ids stored per document, for several documents in one read."""
        ids = sorted(set(doc_ids))
        out: dict[str, set[str]] = {}
        try:
            for i in range(0, len(ids), 500):
                listed = ", ".join(f'"{escape_literal(d)}"' for d in ids[i:i + 500])
                for r in self.rows(f"doc_id in [{listed}]", ["doc_id", "chunk_id"]):
                    out.setdefault(r["doc_id"], set()).add(r["chunk_id"])
        except MilvusException as exc:
            raise self._transient(f"Milvus read of the documents' chunks failed: {exc}", exc) from exc
        return out

    #: The engine behind the URI (:mod:`consumers.milvus.engine`), asked once.
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """Which Milvus this is and what it can do (scalar index types, BM25), from its version."""
        if self._engine is None:
            try:
                self._engine = parse_version(self.client.get_server_version())
            except MilvusException as exc:
                raise TransientIndexError(f"cannot ask Milvus at {self.uri} for its version: {exc}") from exc
        return self._engine

    def create(self, name: str) -> None:
        engine = self.engine
        if not engine.full_text:
            # Milvus < 2.5 (the `milvus` PyPI package is 2.3.5): no BM25 functions. Chosen from the
            # version before creating anything: 2.3 would create the collection and then refuse
            # the sparse index, leaving it half made.
            log.warning("milvus.no_full_text_search", collection=name, engine=str(engine),
                        consequence="searches are dense-only; hybrid and lexical modes fall back to dense")
            self._create_dense_only(name)
            return
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.VARCHAR, max_length=64, is_primary=True)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=2048)
        schema.add_field("source", DataType.VARCHAR, max_length=64)
        schema.add_field("source_kind", DataType.VARCHAR, max_length=32)
        schema.add_field("version", DataType.INT64)
        schema.add_field("heading", DataType.VARCHAR, max_length=1024)
        schema.add_field("title", DataType.VARCHAR, max_length=1024)
        schema.add_field("uri", DataType.VARCHAR, max_length=2048)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT, enable_analyzer=True,
                         analyzer_params=dict(ANALYZER))
        schema.add_field("acl", DataType.VARCHAR, max_length=16384)
        schema.add_field("acl_key", DataType.VARCHAR, max_length=32)
        schema.add_field("classification", DataType.VARCHAR, max_length=32)
        schema.add_field("subjects", DataType.VARCHAR, max_length=16384)
        schema.add_field("retain_until", DataType.INT64)
        schema.add_field(MODIFIED_FIELD, DataType.INT64, default_value=0)  # rows written without it: unknown
        schema.add_field("model", DataType.VARCHAR, max_length=256)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="text_bm25", function_type=FunctionType.BM25,
                                     input_field_names=["text"], output_field_names=[SPARSE_FIELD]))
        index = self.client.prepare_index_params()
        self._scalar_indexes(index)
        index.add_index(field_name="vector", index_type="HNSW", metric_type="COSINE",
                        params={"M": 16, "efConstruction": 200})
        index.add_index(field_name=SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        try:
            self.client.create_collection(collection_name=name, schema=schema, index_params=index,
                                          consistency_level="Strong")
        except MilvusException as exc:
            if "function" not in str(exc).lower() and "analyzer" not in str(exc).lower() \
                    and "sparse" not in str(exc).lower() and "104" not in str(exc):
                raise
            # An engine whose version claimed full-text search but refuses it: the dense-only
            # schema. The refused index may have left the collection behind: drop it first.
            log.warning("milvus.no_full_text_search", collection=name, engine=str(engine), error=str(exc)[:300],
                        consequence="searches are dense-only; hybrid and lexical modes fall back to dense")
            if self.client.has_collection(name):
                self.client.drop_collection(name)
            self._create_dense_only(name)

    def _scalar_indexes(self, index: Any) -> None:
        """The scalar indexes of the chunk collection: the equality/``in`` filters' fields
        (``acl_key``: every search; ``doc_id``: every write), of the type the engine has."""
        for field in ("doc_id", "acl_key"):
            index.add_index(field_name=field, index_type=self.engine.varchar_index)

    def _create_dense_only(self, name: str) -> None:
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        for f in REQUIRED_FIELDS:
            if f == "vector":
                schema.add_field(MODIFIED_FIELD, DataType.INT64, default_value=0)
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
            elif f in ("version", "retain_until"):
                schema.add_field(f, DataType.INT64)
            else:
                schema.add_field(f, DataType.VARCHAR, max_length=_VARCHAR_LIMITS[f], is_primary=f == "chunk_id")
        index = self.client.prepare_index_params()
        self._scalar_indexes(index)
        index.add_index(field_name="vector", index_type="HNSW", metric_type="COSINE",
                        params={"M": 16, "efConstruction": 200})
        self.client.create_collection(collection_name=name, schema=schema, index_params=index,
                                      consistency_level="Strong")

    # -- the collection's fields ------------------------------------------------------------
    def _field_map(self) -> dict[str, bool]:
        """The collection's fields (name -> written by us); empty while there is none yet."""
        if self._fields is None:
            if self.collection == self.alias:  # a reader that never called ensure()
                if self.alias not in self.client.list_aliases().get("aliases", []):
                    return {}
                self.collection = self.client.describe_alias(self.alias)["collection_name"]
            fields = self.client.describe_collection(self.collection)["fields"]
            self._fields = {f["name"]: not f.get("is_function_output", False) for f in fields}
        return self._fields

    def writable_fields(self) -> list[str]:
        """The fields a whole-row upsert writes: every field but a function's output (Milvus
        computes ``sparse`` from ``text`` and refuses it as input)."""
        return [name for name, ours in self._field_map().items() if ours]

    @property
    def lexical(self) -> bool:
        """Whether the collection has the BM25 field (else searches are dense-only); true while
        there is no collection yet (the one :meth:`ensure` creates will have it)."""
        fields = self._field_map()
        return not fields or SPARSE_FIELD in fields

    def vectors(self, chunk_ids: list[str], model: str) -> dict[str, list[float]]:
        """Stored vectors of these chunks, if they were made by ``model`` (for reuse)."""
        out: dict[str, list[float]] = {}
        try:
            for i in range(0, len(chunk_ids), 500):
                ids = ", ".join(f'"{escape_literal(c)}"' for c in chunk_ids[i:i + 500])
                for row in self.client.query(collection_name=self.target, filter=f"chunk_id in [{ids}]",
                                             output_fields=["chunk_id", "model", "vector"]):
                    if row["model"] == model:
                        out[row["chunk_id"]] = [float(x) for x in row["vector"]]
        except MilvusException as exc:
            raise self._transient(f"Milvus query failed: {exc}", exc) from exc
        return out

    def first_rows(self, expr: str, fields: list[str], limit: int = 16384) -> list[dict[str, Any]]:
        """Up to ``limit`` rows matching ``expr`` in one call (no iterator: periodic sweeps)."""
        try:
            return [dict(r) for r in self.client.query(collection_name=self.target, filter=expr, output_fields=fields,
                                                       limit=limit, consistency_level="Strong")]
        except MilvusException as exc:
            raise self._transient(f"Milvus query failed: {exc}", exc) from exc

    def rows(self, expr: str = 'chunk_id != ""', fields: list[str] | None = None) -> list[dict[str, Any]]:
        """Every row matching ``expr`` (Strong consistency): for tests, audits and erasure proofs."""
        out: list[dict[str, Any]] = []
        try:
            it = self.client.query_iterator(collection_name=self.target, filter=expr, batch_size=1000,
                                            output_fields=fields or ["chunk_id", "doc_id", "version", "text"],
                                            consistency_level="Strong")
            while True:
                batch = it.next()
                if not batch:
                    it.close()
                    return out
                out += batch
        except MilvusException as exc:
            raise self._transient(f"Milvus query failed: {exc}", exc) from exc



def _state(row: dict[str, Any]) -> dict[str, Any]:
    """A registry row as :meth:`MilvusIndex.doc_state` returns it. The revision (ragstream's own
    rewrites of a version) rides in ``meta`` as "r<n>:<hash>" so registries made before it need
    no rebuild; no prefix means revision 0."""
    rev, sep, meta = row["meta"].partition(":")
    if sep and rev.startswith("r") and rev[1:].isdigit():
        row["revision"], row["meta"] = int(rev[1:]), meta
    else:
        row["revision"] = 0
    return row
