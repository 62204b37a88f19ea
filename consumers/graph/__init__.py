"""The knowledge-graph sink: documents, entities and their relations in Neo4j.

    model.py    GraphDoc / Mention: what one document version contributes (plain data)
    store.py    GraphStore: connection, writes per document version, ACL-filtered reads
    check.py    graph versus rag.documents (drift)

The graph::

    (:Document {doc_id, version, revision, source, acl, title, uri, deleted})
    (:Entity {key, type, name, ref})                   key = "<type>:<normalised name>"
    (:Document)-[:MENTIONS {count, roles}]->(:Entity)  roles: text, author, source, space
    (:Document)-[:LINKS_TO]->(:Document)
    (:Entity)-[:CO_OCCURS {evidence: [doc_id…], counts: [chunks…]}]->(:Entity)   key order

Provenance: every relation belongs to one document (its outgoing relations; its entry in a
co-occurrence's ``evidence``), so writing a version first removes exactly what the previous
version contributed, and a delete or an erasure removes exactly that. An entity left without
a ``MENTIONS`` (its evidence) is deleted in the same transaction; a co-occurrence left with no
evidence too. A deleted document stays as a marker (``deleted``, no relations) holding the
version guard, as the index's registry does; documents named only by links are stubs
(``deleted``, never visible) until they arrive.

ACLs: a document node carries its principals (empty: unknown, nobody). Everything is reached
through documents: an entity is visible when a document the caller may read mentions it, a
co-occurrence when one of its evidence documents is readable, and counts include only
readable documents. A caller without principals gets nothing (checked before Neo4j is asked).
Neo4j's errors follow ragstream's one classification (unavailable: transient, retried within
the budget; anything else: permanent).
"""

from consumers.graph.check import Expected, GraphDrift, check_graph, expected_documents
from consumers.graph.model import ENTITY_TYPES, GraphDoc, Mention, entity_key, normalize_name
from consumers.graph.store import (GraphStore, GraphUnavailable, neo4j_password, neo4j_uri, password_file,
                                   write_password)

__all__ = ["ENTITY_TYPES", "Expected", "GraphDoc", "GraphDrift", "GraphStore", "GraphUnavailable", "Mention",
           "check_graph", "entity_key", "expected_documents", "neo4j_password", "neo4j_uri", "normalize_name",
           "password_file", "write_password"]
