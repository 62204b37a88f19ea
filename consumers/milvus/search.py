"""Search results, filters and rank fusion (reciprocal rank fusion of the legs)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Iterable
from consumers.milvus.schema import EXACT_TERMS_MAX, MODIFIED_FIELD, RRF_K
from consumers.milvus.acl import escape_literal


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


def rrf(rankings: Iterable[list[str]], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal rank fusion: each id scores the sum of 1 / (k + rank) over the rankings it
    appears in (rank from 1)."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, 1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    return fused



def _hit(h: Any, score: float) -> Hit:
    e = h.entity
    return Hit(chunk_id=str(h.id), doc_id=e.get("doc_id"), score=score, source=e.get("source"), title=e.get("title"),
               uri=e.get("uri"), heading=e.get("heading"), text=e.get("text"))


def _fuse(ranked: list[list[Hit]], verbatim: list[list[Hit]], limit: int) -> list[Hit]:
    """The ``limit`` best hits of the legs by reciprocal rank, scored by it. A verbatim leg
    is unordered (every row in it matches equally), so its hits share rank 1."""
    by_id = {h.chunk_id: h for leg in [*verbatim, *ranked] for h in leg}
    fused = rrf([[h.chunk_id for h in leg] for leg in ranked])
    for leg in verbatim:
        for h in leg:
            fused[h.chunk_id] = fused.get(h.chunk_id, 0.0) + 1.0 / (RRF_K + 1)
    best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [replace(by_id[cid], score=round(score, 6)) for cid, score in best]
