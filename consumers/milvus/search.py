"""Search: results, filters, rank fusion, and the search legs (SearchMixin, a part of MilvusIndex)."""

from __future__ import annotations

import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Iterable
from consumers.milvus.schema import EF_MAX, EF_PER_SELECTIVITY, EF_SEARCH, EXACT_TERMS_MAX, FUSION_CANDIDATES, IndexSchemaError, KEYS_PER_PRINCIPAL_MAX, MODES, MODIFIED_FIELD, POSTFILTER_MAX, POSTFILTER_MIN_SHARE, POSTFILTER_OVERSAMPLE, QUESTION_LEXICAL_WEIGHT, RRF_K, SPARSE_FIELD, VERBATIM_CANDIDATES
from consumers.milvus.acl import acl_filter, escape_like, escape_literal, keys_filter
from pymilvus.exceptions import MilvusException
from ragstream.logging import get_logger

log = get_logger(__name__)

#: Workers that run hybrid searches' dense legs while the calling threads run the BM25 legs.
LEG_WORKERS = 8
_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _legs() -> ThreadPoolExecutor:
    """This process's leg workers (threads start on first use; a forked child makes its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=LEG_WORKERS, thread_name_prefix="search-leg"))
        return _pool[1]


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    doc_id: str
    score: float
    source: str
    title: str
    uri: str
    heading: str
    text: str


@dataclass(frozen=True)
class SearchFilters:
    """Narrowing a search; ANDed to the ACL expression (which they can never widen)."""

    sources: tuple[str, ...] = ()
    classifications: tuple[str, ...] = ()
    modified_after: int | None = None  # epoch seconds, inclusive
    modified_before: int | None = None  # epoch seconds, exclusive

    @property
    def by_modified(self) -> bool:
        return self.modified_after is not None or self.modified_before is not None

    def expr(self) -> str:
        parts = []
        if self.sources:
            parts.append("source in [" + ", ".join(f'"{escape_literal(v)}"' for v in sorted(set(self.sources))) + "]")
        if self.classifications:
            parts.append("classification in ["
                         + ", ".join(f'"{escape_literal(v)}"' for v in sorted(set(self.classifications))) + "]")
        if self.modified_after is not None:
            parts.append(f"{MODIFIED_FIELD} >= {int(self.modified_after)}")
        if self.modified_before is not None:
            parts.append(f"{MODIFIED_FIELD} < {int(self.modified_before)}")
        return " and ".join(parts)


_EXACT_QUOTED = re.compile(r'"([^"]{2,200})"')
_EXACT_TOKEN = re.compile(r"[^\s\"'()\[\]{}<>,;]+")


def exact_terms(query: str) -> list[str]:
    """What a query asks for verbatim: double-quoted phrases, and identifier-like tokens — a
    digit together with a letter or inner punctuation (``E1234-X``, ``JIRA-4711``, ``4.2.1``,
    ``#3017``, ``RFC2616``). Plain words and plain numbers are left to BM25."""
    out = [m.strip() for m in _EXACT_QUOTED.findall(query) if m.strip()]
    for tok in _EXACT_TOKEN.findall(_EXACT_QUOTED.sub(" ", query)):
        tok = tok.strip(".:!?")
        if len(tok) >= 3 and any(ch.isdigit() for ch in tok) and (
                any(ch.isalpha() for ch in tok) or any(ch in "-_./:#" for ch in tok)):
            out.append(tok)
    # Control characters can be in no indexed text worth finding, and upset expression parsers.
    return [t for t in dict.fromkeys(out) if t.isprintable()][:EXACT_TERMS_MAX]


def rrf(rankings: Iterable[list[str]], k: int = RRF_K, weights: Iterable[float] | None = None) -> dict[str, float]:
    """Reciprocal rank fusion: each id scores the sum of weight / (k + rank) over the rankings
    it appears in (rank from 1; every weight 1 unless given)."""
    fused: dict[str, float] = {}
    rankings = list(rankings)
    for ranking, w in zip(rankings, weights if weights is not None else [1.0] * len(rankings), strict=True):
        for rank, key in enumerate(ranking, 1):
            fused[key] = fused.get(key, 0.0) + w / (k + rank)
    return fused


_QUESTION = re.compile(
    r"^\W*(?i:how|what|which|who|whom|whose|where|when|why)\b"
    # an auxiliary first is a question in lower case ("can Debian packages be built …") or
    # before a pronoun or article ("Is it safe …"); "May 2024 board minutes", "Will Smith
    # contract", "Can opener recall" and "Do not disturb policy" are lookups
    r"|^\W*(?:(?:can|could|does|do|did|is|are|was|should|would|will|may|might)\s"
    r"|(?i:can|could|does|do|did|is|are|was|should|would|will|may|might)\s+"
    r"(?i:i|you|we|they|he|she|it|my|your|our|their|his|her|its|the|a|an|this|that|these|those|there|someone|anyone)\b)"
    r"|\?\s*$")


def is_question(query: str) -> bool:
    """A natural-language question: a question word first, or an auxiliary verb first in a
    question's shape, or "?" last; and it asks for nothing verbatim (no quoted phrase, no
    identifier: :func:`exact_terms`)."""
    return bool(_QUESTION.search(query.strip())) and not exact_terms(query)



def _hit(h: Any, score: float) -> Hit:
    e = h.entity
    return Hit(chunk_id=str(h.id), doc_id=e.get("doc_id"), score=score, source=e.get("source"), title=e.get("title"),
               uri=e.get("uri"), heading=e.get("heading"), text=e.get("text"))


def _holding(term: str, hits: Iterable[Hit], limit: int) -> list[Hit]:
    """The first ``limit`` of ``hits`` whose text holds ``term`` as written, scored 1."""
    return [replace(h, score=1.0) for h in hits if term in (h.text or "")][:limit]


def _fuse(ranked: list[list[Hit]], verbatim: list[list[Hit]], limit: int,
          weights: list[float] | None = None) -> list[Hit]:
    """The ``limit`` best hits of the legs by (weighted) reciprocal rank, scored by it. A
    verbatim leg is unordered (every row in it matches equally), so its hits share rank 1."""
    by_id = {h.chunk_id: h for leg in [*verbatim, *ranked] for h in leg}
    fused = rrf([[h.chunk_id for h in leg] for leg in ranked], weights=weights)
    for leg in verbatim:
        for h in leg:
            fused[h.chunk_id] = fused.get(h.chunk_id, 0.0) + 1.0 / (RRF_K + 1)
    best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [replace(by_id[cid], score=round(score, 6)) for cid, score in best]


class SearchMixin:
    """Search legs and their fusion (a mixin of MilvusIndex: consumers/milvus/index.py)."""

    #: Consistency level of the search legs. ``Strong`` (every write acknowledged before the
    #: search is visible) is free on milvus-lite; a Milvus server makes a Strong read wait for
    #: its next time tick (``proxy.timeTickInterval``: ~2 ticks, 200 ms each by default).
    #: ``Session`` sees this process's own writes at once and other processes' within about a
    #: tick (bench/README.md, "ACL search on the real Milvus server"). The API and `ragstream
    #: search` pass ``Settings.search_consistency`` (Bounded on a server, Strong on milvus-lite).
    search_consistency: str = "Strong"

    # -- reads ----------------------------------------------------------------------------
    def search(self, vector: list[float] | None, principals: Iterable[str], limit: int = 10, *,
               query: str | None = None, mode: str = "dense", filters: SearchFilters | None = None) -> list[Hit]:
        """The ``limit`` best chunks among those the caller may see.

        ``mode`` ``dense``: nearest to ``vector`` (score: cosine similarity); ``lexical``: BM25
        over ``query`` plus its verbatim identifiers (score: fused rank); ``hybrid``: both,
        fused by reciprocal rank (score: the RRF sum; a question's BM25 leg weighs
        QUESTION_LEXICAL_WEIGHT). On a collection without the BM25 field,
        hybrid and lexical fall back to dense (see :meth:`effective_mode`).

        >>> index.search(embed("disk full E1234-X"), ["group:eng"], 5, query="disk full E1234-X", mode="hybrid")
        """
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}: one of {', '.join(MODES)}")
        try:
            plan = self.search_plan(principals, limit)  # raises before any query when there are no principals
            if plan is None:
                return []
            expr, ef = plan
            other = filters.expr() if filters is not None else ""
            if filters is not None and filters.expr():
                if filters.by_modified and MODIFIED_FIELD not in self._field_map():
                    raise IndexSchemaError(
                        f"Milvus collection {self.collection} has no {MODIFIED_FIELD!r} field (made before "
                        "date filters): rebuild the index (a fresh RAGSTREAM_HOME or RAGSTREAM_COLLECTION) "
                        "to filter by modification time")
                expr = f"({expr}) and {filters.expr()}"
            mode = self.effective_mode(mode)
            if mode == "dense":
                if vector is None:
                    raise ValueError("dense search needs the query's vector")
                wide = self._dense_postfiltered(vector, principals, other, limit)
                return wide if wide is not None else self._dense(vector, expr, limit, ef)
            if not query or not query.strip():
                raise ValueError(f"{mode} search needs the query's text")
            k = max(FUSION_CANDIDATES, 3 * limit)
            if mode == "lexical":
                bm25, verbatim = self._lexical(query, exact_terms(query), expr, k, limit)
                return _fuse([bm25], verbatim, limit)
            if vector is None:
                raise ValueError("hybrid search needs the query's vector")
            # The legs run at once, the dense one in a worker thread: they overlap in part (a
            # milvus-lite server's HNSW walk and numpy BM25 scoring release the GIL; bench/README.md,
            # "At 100k chunks"). A dense leg still queued when the BM25 leg ends (every worker
            # busy) runs here instead: never slower than one leg after the other.
            dense = _legs().submit(self._dense, vector, expr, k, ef)
            bm25 = self._bm25(query, expr, k)  # on an error here the dense leg ends unread
            legs = [self._dense(vector, expr, k, ef) if dense.cancel() else dense.result()]  # its error raised here
            weights = [1.0, QUESTION_LEXICAL_WEIGHT if is_question(query) else 1.0]
            verbatim = self._verbatim_legs(exact_terms(query), [*bm25, *legs[0]], expr, k, limit)
            return _fuse([*legs, bm25], verbatim, limit, weights)
        except MilvusException as exc:
            raise self._transient(f"Milvus search failed: {exc}", exc) from exc

    def effective_mode(self, mode: str) -> str:
        """The mode a search in ``mode`` runs in: dense where the collection has no BM25 field."""
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}: one of {', '.join(MODES)}")
        try:
            lexical = mode == "dense" or self.lexical
        except MilvusException as exc:
            raise self._transient(f"Milvus describe failed: {exc}", exc) from exc
        if not lexical:
            if self.collection not in self._warned:
                self._warned.add(self.collection)
                log.warning("milvus.dense_only", collection=self.collection, requested=mode,
                            reason=f"the collection has no {SPARSE_FIELD!r} field (made before hybrid search, or "
                                   "by an engine without BM25): rebuild it for hybrid and lexical search")
            return "dense"
        return mode

    def _dense(self, vector: list[float], expr: str, limit: int, ef: int) -> list[Hit]:
        hits = self._ann(vector, expr, limit, ef)
        if len(hits) < limit and ef < EF_MAX:  # the filtered walk starved: widen the beam
            hits = self._ann(vector, expr, limit, EF_MAX)
        return hits

    def _dense_postfiltered(self, vector: list[float], principals: Iterable[str], other: str,
                            limit: int) -> list[Hit] | None:
        """Dense search for a caller who may see much: the nearest chunks without the ACL filter
        in Milvus, kept when their ACL set is one of the caller's (POSTFILTER_MIN_SHARE). ``None``
        when the caller sees too little for it, or fewer than ``limit`` of the nearest are
        theirs: the filtered search answers then. Chunks the caller may not see never leave
        this method."""
        keys = self.acl_sets.keys_for(sorted(set(principals)))
        share = self.acl_sets.share(keys)
        if share < POSTFILTER_MIN_SHARE:
            return None
        k = min(POSTFILTER_MAX, math.ceil(limit * POSTFILTER_OVERSAMPLE / share))
        res = self.client.search(collection_name=self.target, data=[vector], filter=other, limit=k,
                                 output_fields=[*self.OUTPUT, "acl_key"],
                                 search_params={"metric_type": "COSINE", "ef": min(EF_MAX, max(EF_SEARCH, 2 * k))},
                                 consistency_level=self.search_consistency)
        visible = [_hit(h, float(h.distance)) for h in res[0] if h.entity.get("acl_key") in keys]
        self.acl_sets.observe(keys, len(res[0]), len(visible))  # the share estimate learns from it
        return visible[:limit] if len(visible) >= limit else None

    def _bm25(self, query: str, expr: str, limit: int) -> list[Hit]:
        return self._bm25_each([query], expr, limit)[0]

    def _bm25_each(self, queries: list[str], expr: str, limit: int) -> list[list[Hit]]:
        """The ``limit`` best chunks by BM25 for each of ``queries``, in one request."""
        res = self.client.search(collection_name=self.target, data=queries, anns_field=SPARSE_FIELD, filter=expr,
                                 limit=limit, output_fields=self.OUTPUT, search_params={"metric_type": "BM25"},
                                 consistency_level=self.search_consistency)
        # BM25 is never negative; milvus-lite reports it negated (smaller distance = better).
        return [[_hit(h, abs(float(h.distance))) for h in hits] for hits in res]

    def _lexical(self, query: str, terms: list[str], expr: str, limit: int,
                 page: int) -> tuple[list[Hit], list[list[Hit]]]:
        """The BM25 leg of ``query`` (its ``limit`` best) and the verbatim leg of each of
        ``terms`` (:meth:`_verbatim_legs`) for a page of ``page`` results."""
        ranked = self._bm25(query, expr, limit)
        return ranked, self._verbatim_legs(terms, ranked, expr, limit, page)

    def _verbatim_legs(self, terms: list[str], at_hand: list[Hit], expr: str, limit: int,
                       page: int) -> list[list[Hit]]:
        """The verbatim leg of each of ``terms`` (:meth:`_verbatim`) for a page of ``page``
        results, the chunks the other legs found (``at_hand``) looked at first.

        When ``page`` of them hold a term as written, its own lookups are skipped: a chunk
        holding it that no leg found would score 1 / (RRF_K + 1) in the fusion, below each of
        those ``page`` (the same, plus their leg's rank), so it could not reach the page.
        (With several identifiers, a chunk no leg found that holds more of them than those
        do could; that is the price.) Otherwise the term is looked up (:meth:`_verbatim`),
        one request for all the terms that need it: a request costs milvus-lite a pass over
        every row (bench/README.md, "At 100k chunks")."""
        at_hand = list({h.chunk_id: h for h in at_hand}.values())
        verbatim = {t: _holding(t, at_hand, limit) for t in terms}
        missing = [t for t, found in verbatim.items() if len(found) < min(page, limit)]
        if missing:
            wide = max(limit, VERBATIM_CANDIDATES)
            for t, candidates in zip(missing, self._bm25_each(missing, expr, wide)):
                verbatim[t] = self._verbatim(t, expr, limit, candidates)
        return [verbatim[t] for t in terms]

    def _verbatim(self, term: str, expr: str, limit: int, candidates: list[Hit] | None = None) -> list[Hit]:
        """Chunks holding ``term`` exactly as written (case and punctuation included).

        First among the VERBATIM_CANDIDATES chunks BM25 ranks best for ``term`` alone (an index
        lookup; ``candidates`` when the caller has them), in BM25 order; only when none of
        them holds it (or the index has it nowhere), a ``like`` scan of every visible chunk
        (exact, but 1-4 s at 100k chunks on milvus-lite). The price: when some candidates
        hold it, chunks holding it that BM25 ranked lower (identifiers of common pieces,
        ``4.2.1``, in a crowd of others) are not looked at."""
        if candidates is None:
            candidates = self._bm25(term, expr, max(limit, VERBATIM_CANDIDATES))
        found = _holding(term, candidates, limit)
        if found:
            return found
        rows = self.client.query(collection_name=self.target, filter=f'({expr}) and text like "%{escape_like(term)}%"',
                                 output_fields=["chunk_id", *self.OUTPUT], limit=limit, consistency_level=self.search_consistency)
        return [Hit(chunk_id=str(r["chunk_id"]), doc_id=r["doc_id"], score=1.0, source=r["source"], title=r["title"],
                    uri=r["uri"], heading=r["heading"], text=r["text"]) for r in rows]

    def search_plan(self, principals: Iterable[str], limit: int = 10) -> tuple[str, int] | None:
        """The filter selecting exactly the rows these principals may see and the beam width
        for it, or ``None`` when no stored ACL set names any of them (nothing is visible)."""
        ps = sorted(set(principals))
        by_principal = acl_filter(ps)  # raises PermissionError for no principals
        keys = self.acl_sets.keys_for(ps)
        if not keys:
            return None
        ef = int(min(EF_MAX, max(EF_SEARCH, EF_PER_SELECTIVITY * limit / self.acl_sets.share(keys))))
        if len(keys) > KEYS_PER_PRINCIPAL_MAX * len(ps):
            return by_principal, ef  # so many sets that scanning the chunks' ACLs is cheaper
        return keys_filter(keys), ef

    def _ann(self, vector: list[float], expr: str, limit: int, ef: int) -> list[Hit]:
        res = self.client.search(collection_name=self.target, data=[vector], filter=expr, limit=limit,
                                 output_fields=self.OUTPUT,
                                 search_params={"metric_type": "COSINE", "ef": max(ef, limit)},
                                 consistency_level=self.search_consistency)
        return [_hit(h, float(h.distance)) for h in res[0]]
