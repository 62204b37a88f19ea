"""The knowledge-graph endpoints of the retrieval API: entity lookup, neighbours, search with related documents.

Everything is filtered by the caller's principals inside the Cypher queries
(:class:`consumers.graph.GraphStore`): an entity, a relation or a count is reached only
through documents the caller may read, and a caller without principals gets nothing. An
entity nobody lets the caller see answers 404 exactly like one that does not exist. The
endpoints need the ``search:query`` permission, like search. With the graph not enabled
(``RAGSTREAM_GRAPH_ENABLED``) they answer 404 and say so.

``create_app`` calls :func:`add_graph_routes` with its own authentication dependency.
"""

# No `from __future__ import annotations`: FastAPI resolves the endpoint annotations.

import threading
from typing import Annotated, Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from ragstream.auth import Identity
from ragstream.metrics import GRAPH_QUERIES

ENTITY_TYPES = ("PERSON", "ORGANIZATION", "LOCATION", "SOURCE", "SPACE")


class GraphEntity(BaseModel):
    key: str = Field(description="'<type>:<normalised name>', e.g. 'person:ada lovelace'")
    type: str
    name: str
    documents: int = Field(description="documents you may read that mention it")
    mentions: int = Field(description="mentions in those documents")


class Mentioned(BaseModel):
    doc_id: str
    title: str | None = None
    uri: str | None = None
    source: str | None = None
    count: int
    roles: list[str]


class GraphEntityDetail(GraphEntity):
    mentioned_in: list[Mentioned]


class Neighbour(BaseModel):
    key: str
    type: str
    name: str
    documents: int = Field(description="documents you may read in which both are named in one chunk")
    chunks: int = Field(description="chunks of those documents naming both")
    evidence: list[str] = Field(description="a few of those documents")


class RelatedDocument(BaseModel):
    doc_id: str
    title: str | None = None
    uri: str | None = None
    source: str | None = None
    score: float = Field(description="shared entities (a space counts a quarter) plus 2 per link")
    via: list[str] = Field(description="what relates it: shared entity names, or 'link'")


def add_graph_routes(app: FastAPI, settings: Any, require: Callable[[str], Callable[..., Identity]],
                     request_id: Callable[[Request], str], services: Any) -> None:
    """Add the /v1/graph endpoints to ``app`` (``require`` is the app's permission dependency)."""
    from ragstream.api import ERRORS, ErrorBody, SearchHit, SearchRequest

    lock = threading.Lock()
    holder: dict[str, Any] = {}
    not_found = {**ERRORS, 404: {"model": ErrorBody, "description": "not found, or not visible to you"}}

    def graph() -> Any:
        if not settings.graph_enabled:
            raise HTTPException(404, "the knowledge graph is not enabled (RAGSTREAM_GRAPH_ENABLED)")
        with lock:
            if "store" not in holder:
                from consumers.graph import GraphStore

                holder["store"] = GraphStore.from_settings(settings)
            return holder["store"]

    def call(fn: Callable[[], Any]) -> Any:
        from ragstream.failures import Transient

        try:
            return fn()
        except Transient as exc:
            raise HTTPException(503, "the knowledge graph is unavailable; retry later") from exc

    @app.get("/v1/graph/entities", tags=["graph"], response_model=list[GraphEntity], responses=ERRORS)
    def find_entities(who: Annotated[Identity, Depends(require("search:query"))],
                      q: Annotated[str, Query(max_length=200, description="part of the name")] = "",
                      type: Annotated[list[str] | None, Query(description="only these entity types")] = None,
                      limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[GraphEntity]:
        """Entities whose name contains ``q``, mentioned in documents you may read."""
        bad = [t for t in type or () if t not in ENTITY_TYPES]
        if bad:
            raise HTTPException(422, f"unknown entity type(s) {bad}; types are {', '.join(ENTITY_TYPES)}")
        GRAPH_QUERIES.labels("entities").inc()
        if not who.principals:
            return []  # fail closed
        rows = call(lambda: graph().find_entities(q, who.principals, types=type or (), limit=limit))
        return [GraphEntity(**r) for r in rows]

    @app.get("/v1/graph/entities/{key:path}", tags=["graph"], response_model=GraphEntityDetail,
             responses=not_found)
    def entity(key: Annotated[str, Path(min_length=3, max_length=300)],
               who: Annotated[Identity, Depends(require("search:query"))],
               limit: Annotated[int, Query(ge=1, le=200)] = 50) -> GraphEntityDetail:
        """One entity and the documents you may read that mention it."""
        GRAPH_QUERIES.labels("entity").inc()
        row = call(lambda: graph().entity(key, who.principals, limit=limit)) if who.principals else None
        if row is None:
            raise HTTPException(404, "no such entity visible to you")
        return GraphEntityDetail(**row)

    @app.get("/v1/graph/neighbours/{key:path}", tags=["graph"], response_model=list[Neighbour], responses=not_found)
    def neighbours(key: Annotated[str, Path(min_length=3, max_length=300)],
                   who: Annotated[Identity, Depends(require("search:query"))],
                   limit: Annotated[int, Query(ge=1, le=100)] = 25) -> list[Neighbour]:
        """Entities named together with this one in chunks of documents you may read."""
        GRAPH_QUERIES.labels("neighbours").inc()
        rows = call(lambda: graph().neighbours(key, who.principals, limit=limit)) if who.principals else None
        if rows is None:
            raise HTTPException(404, "no such entity visible to you")
        return [Neighbour(**r) for r in rows]

    class ExpandedSearch(SearchRequest):
        related_limit: int = Field(5, ge=0, le=50, description="related documents to add (0: none)")

    class ExpandedResponse(BaseModel):
        results: list[SearchHit]
        related: list[RelatedDocument] = Field(description="documents you may read related to the results "
                                                           "through the graph, not among them")
        mode: str
        request_id: str

    @app.post("/v1/graph/search", tags=["graph"], response_model=ExpandedResponse,
              responses={**ERRORS, 422: {"model": ErrorBody, "description": "invalid request"}})
    def expanded_search(request: Request, body: ExpandedSearch,
                        who: Annotated[Identity, Depends(require("search:query"))]) -> ExpandedResponse:
        """Search (as ``POST /v1/search``), expanded with related documents from the graph (opt-in)."""
        from consumers.milvus import DEFAULT_MODE, SearchFilters
        from ragstream.api import _epoch
        from ragstream.snippets import snippet

        GRAPH_QUERIES.labels("search").inc()
        mode = body.mode or DEFAULT_MODE
        if not who.principals:
            return ExpandedResponse(results=[], related=[], mode=mode, request_id=request_id(request))
        filters = SearchFilters(sources=tuple(body.sources or ()), classifications=tuple(body.classifications or ()),
                                modified_after=_epoch(body.modified_after), modified_before=_epoch(body.modified_before))
        mode = services.index.effective_mode(mode)
        vector = services.embedder.embed([body.query])[0] if mode != "lexical" else None
        hits = services.index.search(vector, who.principals, limit=body.limit, query=body.query, mode=mode,
                                     filters=filters)
        results = []
        for h in hits:
            snip, spans = snippet(h.text, body.query)
            results.append(SearchHit(doc_id=h.doc_id, chunk_id=h.chunk_id, source=h.source, title=h.title or "",
                                     uri=h.uri or "", heading=h.heading or "", score=h.score, text=h.text,
                                     snippet=snip, highlights=spans))
        related: list[RelatedDocument] = []
        if body.related_limit and results:
            rows = call(lambda: graph().related([r.doc_id for r in results], who.principals,
                                                limit=body.related_limit))
            related = [RelatedDocument(**r) for r in rows]
        return ExpandedResponse(results=results, related=related, mode=mode, request_id=request_id(request))
