"""GraphStore: the Neo4j writes (one transaction per document version) and the ACL-filtered reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from ragstream.failures import Permanent, Transient
from ragstream.logging import get_logger

from consumers.graph.model import GraphDoc, normalize_name

if TYPE_CHECKING:
    from ragstream.settings import Settings

log = get_logger(__name__)
T = TypeVar("T")

#: A document the caller may read: live (not deleted, not a link stub) and naming one of the
#: caller's principals. ``$principals`` is never empty here (callers are refused before).
VISIBLE = "(NOT {d}.deleted AND any(p IN {d}.acl WHERE p IN $principals))"


def visible(var: str) -> str:
    return VISIBLE.format(d=var)


def _int(v: Any) -> int:
    return -1 if v is None else int(v)


class GraphUnavailable(Transient):
    """Neo4j cannot be reached, is restarting, or refused the credentials (retried within the budget)."""


# -- connection -----------------------------------------------------------------------------------


def password_file(settings: "Settings") -> Path:
    """Where the local Neo4j's generated password is kept (mode 0600)."""
    return settings.home / "neo4j" / "password"


def neo4j_uri(settings: "Settings") -> str:
    return settings.neo4j_uri or f"bolt://127.0.0.1:{settings.neo4j_port}"


def neo4j_password(settings: "Settings") -> str:
    if settings.neo4j_password is not None:
        return settings.neo4j_password.get_secret_value()
    path = password_file(settings)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        raise GraphUnavailable(f"no Neo4j password: set RAGSTREAM_NEO4J_PASSWORD, or start the local Neo4j "
                               f"(`ragstream stack up -s neo4j`), which writes {path}") from None


def write_password(path: Path) -> str:
    """Create ``path`` with a new random password, mode 0600 from the first byte; return it."""
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(password + "\n")
    return password


def classified(exc: BaseException) -> Exception:
    """Neo4j's errors in the one classification: unavailable/transient → retry; the rest → permanent."""
    from neo4j import exceptions as nx

    if isinstance(exc, (nx.ServiceUnavailable, nx.SessionExpired, nx.TransientError, nx.AuthError)):
        return GraphUnavailable(f"Neo4j: {type(exc).__name__}: {exc}")
    if isinstance(exc, (nx.Neo4jError, nx.DriverError)) and exc.is_retryable():
        return GraphUnavailable(f"Neo4j: {type(exc).__name__}: {exc}")
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return GraphUnavailable(f"Neo4j: {type(exc).__name__}: {exc}")
    return Permanent(f"Neo4j: {type(exc).__name__}: {exc}")


# -- Cypher ---------------------------------------------------------------------------------------

SCHEMA = (
    "CREATE CONSTRAINT document_id IF NOT EXISTS FOR (d:Document) REQUIRE d.doc_id IS UNIQUE",
    "CREATE CONSTRAINT entity_key IF NOT EXISTS FOR (e:Entity) REQUIRE e.key IS UNIQUE",
    "CREATE INDEX entity_ref IF NOT EXISTS FOR (e:Entity) ON (e.ref)",
    "CREATE TEXT INDEX entity_name IF NOT EXISTS FOR (e:Entity) ON (e.name_lc)",
)

_STATE = """
MATCH (d:Document {doc_id: $doc_id})
RETURN d.version AS version, d.revision AS revision, d.deleted AS deleted, d.stub AS stub,
       d.acl AS acl, d.acl_version AS acl_version, d.pending_acl AS pending_acl
"""

# A document's contributions, removed: its share of each co-occurrence's evidence first
# (reached through the entities it mentions), then its outgoing relations.
_DROP_EVIDENCE = """
MATCH (d:Document {doc_id: $doc_id})-[:MENTIONS]->(:Entity)-[c:CO_OCCURS]-(:Entity)
WHERE $doc_id IN c.evidence
WITH DISTINCT c
WITH c, [i IN range(0, size(c.evidence) - 1) WHERE c.evidence[i] <> $doc_id] AS keep
SET c.counts = [i IN keep | c.counts[i]], c.evidence = [i IN keep | c.evidence[i]]
WITH c WHERE size(c.evidence) = 0
DELETE c
"""
_DROP_OUTGOING = """
MATCH (d:Document {doc_id: $doc_id})-[r:MENTIONS|LINKS_TO]->(x)
WITH r, x.key AS key, x.doc_id AS target
DELETE r
RETURN collect(DISTINCT key) AS keys, collect(DISTINCT target) AS targets
"""
_SET_DOC = """
MERGE (d:Document {doc_id: $doc_id})
ON CREATE SET d.acl_version = -1
SET d.version = $version, d.revision = $revision, d.deleted = $deleted, d.stub = false, d.source = $source,
    d.acl = $acl, d.title = $title, d.uri = $uri
"""
_MENTIONS = """
MATCH (d:Document {doc_id: $doc_id})
UNWIND $mentions AS m
MERGE (e:Entity {key: m.key})
ON CREATE SET e.type = m.type, e.name = m.name, e.name_lc = m.name_lc
SET e.ref = coalesce(e.ref, m.ref)
MERGE (d)-[r:MENTIONS]->(e)
SET r.count = m.count, r.roles = m.roles
"""
_LINKS = """
MATCH (d:Document {doc_id: $doc_id})
UNWIND $links AS target
MERGE (t:Document {doc_id: target})
ON CREATE SET t.stub = true, t.deleted = true, t.version = -1, t.revision = 0, t.acl = [], t.acl_version = -1
MERGE (d)-[:LINKS_TO]->(t)
"""
_PAIRS = """
UNWIND $pairs AS p
MATCH (a:Entity {key: p.a}), (b:Entity {key: p.b})
MERGE (a)-[c:CO_OCCURS]->(b)
ON CREATE SET c.evidence = [], c.counts = []
SET c.evidence = c.evidence + $doc_id, c.counts = c.counts + p.n
"""
# Entities left without evidence disappear; so do link stubs nothing points at any more.
_GC_ENTITIES = """
UNWIND $keys AS k
MATCH (e:Entity {key: k})
WHERE NOT (e)<-[:MENTIONS]-()
DETACH DELETE e
RETURN count(*) AS removed
"""
_GC_STUBS = """
UNWIND $targets AS t
MATCH (x:Document {doc_id: t})
WHERE x.stub AND x.acl_version < 0 AND NOT (x)<-[:LINKS_TO]-()
DELETE x
"""


class GraphStore:
    """The graph sink: idempotent writes per document version, ACL-filtered reads.

    Every write of a document version is one transaction: guard, remove the previous
    version's contributions, write the new ones, collect what lost its last evidence.
    """

    def __init__(self, uri: str, auth: tuple[str, str], *, database: str | None = None, retry_s: float = 10) -> None:
        from neo4j import GraphDatabase

        self.uri = uri
        self.database = database
        # The driver retries a transaction for retry_s itself; beyond that the stage's retry budget takes over.
        self.driver = GraphDatabase.driver(uri, auth=auth, connection_timeout=5, max_transaction_retry_time=retry_s,
                                           liveness_check_timeout=30, user_agent="ragstream-graph",
                                           notifications_min_severity="OFF")  # e.g. "property does not exist yet"

    @classmethod
    def from_settings(cls, settings: "Settings") -> "GraphStore":
        return cls(neo4j_uri(settings), (settings.neo4j_user, neo4j_password(settings)))

    def close(self) -> None:
        self.driver.close()

    # -- plumbing ---------------------------------------------------------------------------------
    def _write(self, fn: Callable[[Any], T]) -> T:
        try:
            with self.driver.session(database=self.database) as session:
                return session.execute_write(fn)
        except (Transient, Permanent):
            raise
        except Exception as exc:  # noqa: BLE001 - classified: retried or dead-lettered by the caller
            raise classified(exc) from exc

    def _read(self, query: str, **params: Any) -> list[dict[str, Any]]:
        def work(tx: Any) -> list[dict[str, Any]]:
            return [r.data() for r in tx.run(query, **params)]

        try:
            with self.driver.session(database=self.database) as session:
                return session.execute_read(work)
        except Exception as exc:  # noqa: BLE001
            raise classified(exc) from exc

    def ensure(self) -> None:
        """Constraints and indexes (idempotent)."""
        for statement in SCHEMA:
            try:
                self.driver.execute_query(statement, database_=self.database)
            except Exception as exc:  # noqa: BLE001
                raise classified(exc) from exc

    def ping(self) -> None:
        self._read("RETURN 1 AS ok")

    # -- writes -----------------------------------------------------------------------------------
    def doc_state(self, doc_id: str) -> dict[str, Any] | None:
        rows = self._read(_STATE, doc_id=doc_id)
        return rows[0] if rows else None

    @staticmethod
    def _stale(state: dict[str, Any] | None, version: int, revision: int) -> bool:
        if state is None or state["stub"] or state["version"] is None:
            return False
        return (version, revision) <= (state["version"], state["revision"] or 0)

    @staticmethod
    def _clear(tx: Any, doc_id: str) -> tuple[list[str], list[str]]:
        tx.run(_DROP_EVIDENCE, doc_id=doc_id).consume()
        rec = tx.run(_DROP_OUTGOING, doc_id=doc_id).single()
        return (list(rec["keys"]), list(rec["targets"])) if rec else ([], [])

    @staticmethod
    def _collect(tx: Any, keys: list[str], targets: list[str]) -> None:
        if keys:
            tx.run(_GC_ENTITIES, keys=keys).consume()
        if targets:
            tx.run(_GC_STUBS, targets=targets).consume()

    def apply(self, doc: GraphDoc) -> bool:
        """Replace the document's contributions with ``doc``'s. False: an equal or newer
        version is in the graph already (stale or redelivered; nothing written)."""
        def work(tx: Any) -> bool:
            state = tx.run(_STATE, doc_id=doc.doc_id).single()
            state = state.data() if state else None
            if self._stale(state, doc.version, doc.revision):
                return False
            acl = list(doc.acl)
            if state is not None and _int(state["acl_version"]) > doc.version:
                acl = list(state["pending_acl"] or [])  # a newer permission change wins over older content
            keys, targets = self._clear(tx, doc.doc_id)
            tx.run(_SET_DOC, doc_id=doc.doc_id, version=doc.version, revision=doc.revision, deleted=False,
                   source=doc.source, acl=acl, title=doc.title, uri=doc.uri).consume()
            if doc.mentions:
                tx.run(_MENTIONS, doc_id=doc.doc_id, mentions=[m.as_param() for m in doc.mentions]).consume()
            if doc.links:
                tx.run(_LINKS, doc_id=doc.doc_id, links=[t for t in doc.links if t != doc.doc_id]).consume()
            if doc.pairs:
                tx.run(_PAIRS, doc_id=doc.doc_id, pairs=[{"a": a, "b": b, "n": n} for a, b, n in doc.pairs]).consume()
            self._collect(tx, keys, targets)
            return True

        return self._write(work)

    def delete(self, doc_id: str, version: int, revision: int = 0, source: str = "") -> bool:
        """Remove exactly this document's contributions; keep a deleted marker (the version guard)."""
        def work(tx: Any) -> bool:
            state = tx.run(_STATE, doc_id=doc_id).single()
            if self._stale(state.data() if state else None, version, revision):
                return False
            keys, targets = self._clear(tx, doc_id)
            tx.run(_SET_DOC, doc_id=doc_id, version=version, revision=revision, deleted=True, source=source,
                   acl=[], title="", uri="").consume()
            self._collect(tx, keys, targets)
            return True

        return self._write(work)

    def apply_acl(self, doc_id: str, version: int, principals: Iterable[str]) -> bool:
        """A permission-only change. Stale when content or a permission change at least as new
        was applied; for a document not in the graph yet it is kept for its content."""
        def work(tx: Any) -> bool:
            rec = tx.run(_STATE, doc_id=doc_id).single()
            state = rec.data() if rec else None
            if state is not None and version <= max(_int(state["version"]), _int(state["acl_version"])):
                return False
            tx.run("""
                MERGE (d:Document {doc_id: $doc_id})
                ON CREATE SET d.stub = false, d.deleted = true, d.version = -1, d.revision = 0
                SET d.acl_version = $version, d.acl = CASE WHEN d.deleted THEN [] ELSE $acl END,
                    d.pending_acl = $acl
                """, doc_id=doc_id, version=version, acl=sorted(set(principals))).consume()
            return True

        return self._write(work)

    # -- data-subject erasure ---------------------------------------------------------------------
    def subject_contributions(self, refs: Iterable[str]) -> dict[str, int]:
        """What the graph holds of these subjects: entities, documents mentioning them, co-occurrences."""
        rows = self._read("""
            MATCH (e:Entity) WHERE e.ref IN $refs
            OPTIONAL MATCH (e)<-[m:MENTIONS]-(:Document)
            WITH e, count(m) AS mentions
            OPTIONAL MATCH (e)-[c:CO_OCCURS]-(:Entity)
            RETURN count(DISTINCT e) AS entities, sum(mentions) AS mentions, count(DISTINCT c) AS relations
            """, refs=sorted(set(refs)))
        r = rows[0] if rows else {}
        return {"entities": r.get("entities") or 0, "mentions": r.get("mentions") or 0,
                "relations": r.get("relations") or 0}

    def erase_subjects(self, refs: Iterable[str]) -> dict[str, int]:
        """Remove the entities of these subjects with every relation they take part in."""
        refs = sorted(set(refs))
        before = self.subject_contributions(refs)

        def work(tx: Any) -> None:
            tx.run("MATCH (e:Entity) WHERE e.ref IN $refs DETACH DELETE e", refs=refs).consume()

        if before["entities"]:
            self._write(work)
        return before

    # -- reads for operators (not ACL-filtered: the drift check, tests) ----------------------------
    def documents(self) -> dict[str, tuple[int, int]]:
        """Live documents: doc_id → (version, revision)."""
        return {r["doc_id"]: (r["version"], r["revision"]) for r in self._read(
            "MATCH (d:Document) WHERE NOT d.deleted RETURN d.doc_id AS doc_id, d.version AS version, "
            "d.revision AS revision")}

    def doc_acls(self) -> dict[str, tuple[str, ...]]:
        return {r["doc_id"]: tuple(sorted(r["acl"] or [])) for r in self._read(
            "MATCH (d:Document) WHERE NOT d.deleted RETURN d.doc_id AS doc_id, d.acl AS acl")}

    def contributions(self, doc_id: str) -> dict[str, Any]:
        """One document's mentions (key → count), links and co-occurrence pairs."""
        mentions = {r["key"]: r["count"] for r in self._read(
            "MATCH (:Document {doc_id: $d})-[m:MENTIONS]->(e:Entity) RETURN e.key AS key, m.count AS count", d=doc_id)}
        links = sorted(r["t"] for r in self._read(
            "MATCH (:Document {doc_id: $d})-[:LINKS_TO]->(t:Document) RETURN t.doc_id AS t", d=doc_id))
        pairs = {(r["a"], r["b"]): r["n"] for r in self._read("""
            MATCH (a:Entity)-[c:CO_OCCURS]->(b:Entity) WHERE $d IN c.evidence
            RETURN a.key AS a, b.key AS b, [i IN range(0, size(c.evidence) - 1) WHERE c.evidence[i] = $d
                                              | c.counts[i]][0] AS n""", d=doc_id)}
        return {"mentions": mentions, "links": links, "pairs": pairs}

    def integrity(self) -> dict[str, int]:
        """Structural drift: entities without evidence, relations whose evidence does not hold,
        deleted documents still contributing."""
        one = lambda q: (self._read(q) or [{"n": 0}])[0]["n"]  # noqa: E731
        return {
            "entities_without_evidence": one("MATCH (e:Entity) WHERE NOT (e)<-[:MENTIONS]-() RETURN count(e) AS n"),
            "relations_without_evidence": one("""
                MATCH (a:Entity)-[c:CO_OCCURS]->(b:Entity)
                UNWIND (CASE WHEN size(c.evidence) = 0 THEN [null] ELSE c.evidence END) AS doc_id
                OPTIONAL MATCH (d:Document {doc_id: doc_id})
                WITH a, b, d WHERE d IS NULL OR d.deleted OR NOT (d)-[:MENTIONS]->(a) OR NOT (d)-[:MENTIONS]->(b)
                RETURN count(*) AS n"""),
            "deleted_documents_contributing": one(
                "MATCH (d:Document)-[r:MENTIONS|LINKS_TO]->() WHERE d.deleted RETURN count(r) AS n"),
        }

    def wipe(self) -> None:
        """Everything removed (tests)."""
        self._write(lambda tx: tx.run("MATCH (n) DETACH DELETE n").consume())

    # -- ACL-filtered reads -------------------------------------------------------------------------
    def find_entities(self, name: str, principals: Iterable[str], *, types: Iterable[str] = (),
                      limit: int = 20) -> list[dict[str, Any]]:
        """Entities whose name contains ``name`` and that a document the caller may read mentions."""
        principals = sorted(set(principals))
        if not principals:
            return []  # fail closed
        return self._read(f"""
            MATCH (e:Entity) WHERE e.name_lc CONTAINS $q AND (size($types) = 0 OR e.type IN $types)
            MATCH (d:Document)-[m:MENTIONS]->(e) WHERE {visible('d')}
            WITH e, count(DISTINCT d) AS documents, sum(m.count) AS mentions
            RETURN e.key AS key, e.type AS type, e.name AS name, documents, mentions
            ORDER BY documents DESC, mentions DESC, key LIMIT $limit
            """, q=normalize_name(name), types=list(types), principals=principals, limit=limit)

    def entity(self, key: str, principals: Iterable[str], *, limit: int = 50) -> dict[str, Any] | None:
        """The entity and the documents the caller may read that mention it; None when there is
        none (absent and invisible look the same)."""
        principals = sorted(set(principals))
        if not principals:
            return None
        rows = self._read(f"""
            MATCH (e:Entity {{key: $key}})<-[m:MENTIONS]-(d:Document) WHERE {visible('d')}
            WITH e, d, m ORDER BY m.count DESC, d.doc_id
            WITH e, count(d) AS documents, sum(m.count) AS mentions,
                 collect({{doc_id: d.doc_id, title: d.title, uri: d.uri, source: d.source, count: m.count,
                          roles: m.roles}})[..$limit] AS mentioned_in
            RETURN e.key AS key, e.type AS type, e.name AS name, documents, mentions, mentioned_in
            """, key=key, principals=principals, limit=limit)
        return rows[0] if rows else None

    def neighbours(self, key: str, principals: Iterable[str], *, limit: int = 25) -> list[dict[str, Any]] | None:
        """Entities co-occurring with ``key`` in chunks of documents the caller may read, with
        the number of such documents, chunks, and a few of those documents. None when the
        entity itself is not visible."""
        principals = sorted(set(principals))
        if not principals or self.entity(key, principals, limit=1) is None:
            return None
        return self._read(f"""
            MATCH (e:Entity {{key: $key}})-[c:CO_OCCURS]-(n:Entity)
            UNWIND range(0, size(c.evidence) - 1) AS i
            WITH n, c.evidence[i] AS doc_id, c.counts[i] AS chunks
            MATCH (d:Document {{doc_id: doc_id}}) WHERE {visible('d')}
            WITH n, count(DISTINCT d) AS documents, sum(chunks) AS chunks, collect(DISTINCT d.doc_id)[..5] AS evidence
            RETURN n.key AS key, n.type AS type, n.name AS name, documents, chunks, evidence
            ORDER BY chunks DESC, documents DESC, key LIMIT $limit
            """, key=key, principals=principals, limit=limit)

    def related(self, doc_ids: Iterable[str], principals: Iterable[str], *, limit: int = 10) -> list[dict[str, Any]]:
        """Documents the caller may read related to the given ones (which the caller must be
        able to read too): sharing entities (text, author; a space counts a quarter; the source
        not at all) or linked either way. Ranked by that weight."""
        principals, seeds = sorted(set(principals)), sorted(set(doc_ids))
        if not principals or not seeds:
            return []
        return self._read(f"""
            UNWIND $seeds AS sid
            MATCH (s:Document {{doc_id: sid}}) WHERE {visible('s')}
            CALL (s) {{
                MATCH (s)-[:MENTIONS]->(e:Entity)<-[:MENTIONS]-(o:Document)
                WHERE e.type <> 'SOURCE' AND o <> s
                RETURN o, e.name AS via, CASE e.type WHEN 'SPACE' THEN 0.25 ELSE 1.0 END AS w
                UNION ALL
                MATCH (s)-[:LINKS_TO]-(o:Document) WHERE o <> s
                RETURN o, 'link' AS via, 2.0 AS w
            }}
            WITH o, via, w WHERE {visible('o')} AND NOT o.doc_id IN $seeds
            WITH o, sum(w) AS score, collect(DISTINCT via)[..5] AS via
            RETURN o.doc_id AS doc_id, o.title AS title, o.uri AS uri, o.source AS source, score, via
            ORDER BY score DESC, doc_id LIMIT $limit
            """, seeds=seeds, principals=principals, limit=limit)
