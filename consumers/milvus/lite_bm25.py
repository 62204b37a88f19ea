"""BM25 scoring for milvus-lite with numpy, result for result the same as milvus-lite's own.

milvus-lite 3.2 scores a BM25 query in pure Python, one loop step per posting (every chunk
holding a query word, and most chunks hold "the"), which made a lexical search at 100k chunks
cost 4x a dense one for a caller who sees everything (p50 341 against 82 ms: bench/README.md,
"At 100k chunks"). :class:`ArrayBM25Index`
is milvus-lite's ``SparseInvertedIndex`` with the same index (it is a subclass: built and
cached by milvus-lite as before) whose postings are also kept as numpy arrays, built
on a term's first query (8 bytes per posting — the row, and the term's BM25 weight in it but
for idf and the query's weight — a fraction of what milvus-lite's own Python tuples take),
and scored a term at a time over the whole array: a multiply and a scatter-add per posting.
A filter is applied once, to the rows matched, and the tie order is looked up only for the
rows that can make the top k.

The scores are bit for bit those of milvus-lite: the same float32 arithmetic (NumPy 2's
rules for a Python float meeting a float32 — it is converted to float32 — apply to arrays as
to scalars), summed term by term in the query's order; ties keep milvus-lite's order (the
chunk whose first matching term comes first in the query, then the lower row). The test
tests/consumers/test_lite_bm25.py compares both on random corpora, filters included.

:func:`install` puts the class into milvus-lite's sparse index factory; the servers this
package starts (lite_server.build_server) call it. It installs only on the milvus-lite
release it was written against (pyproject pins it) and leaves another one as it is, with a
warning: the attributes read here are that release's internals.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
from milvus_lite.index.sparse_common import empty_results, validate_mask
from milvus_lite.index.sparse_inverted import SparseInvertedIndex

from consumers.milvus.lite_patch import on_written_release


#: A term held by at least this share of the rows ("the", "and", "of") is kept as arrays
#: over every row (5 bytes a row, 2.5x its posting list's 8 at the threshold, less above it)
#: and scored by one vectorized add over every row instead of a gather and a scatter per
#: listed row, which costs several times more from a quarter of the rows up.
DENSE_SHARE = 0.25

#: A term's arrays: (rows ascending, weight) with the weight per listed row, or (None,
#: weight, held) over every row, the weight 0 where ``held`` is False. The weight is the
#: term's BM25 weight in a row but for idf and the query's weight: tf x (k1 + 1) / (tf + the
#: row's length part), float32.
Postings = Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]


class ArrayBM25Index(SparseInvertedIndex):
    """milvus-lite's BM25 index, its postings also as numpy arrays, searched a term at a time."""

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        super().__init__(k1=k1, b=b)
        self._arrays: Dict[int, Postings] = {}
        self._norms: Optional[np.ndarray] = None

    def _postings(self, term: int) -> Optional[Postings]:
        """``term``'s arrays (:data:`Postings`), or None when no row holds it: built on its
        first query, fixed until the next build (a new index)."""
        got = self._arrays.get(term)
        if got is None:
            posting = self._posting_lists.get(term)
            if not posting:
                return None
            rows = np.fromiter((p[0] for p in posting), dtype=np.int32, count=len(posting))
            tf = np.fromiter((p[1] for p in posting), dtype=np.float64, count=len(posting))
            # milvus-lite's build and load list a term's rows once each, ascending (its tie
            # order is that order); kept so should a release change that.
            if len(rows) > 1 and not bool(np.all(rows[1:] > rows[:-1])):
                order = np.argsort(rows, kind="stable")
                rows, tf = rows[order], tf[order]
            # milvus-lite computes tf * (k1 + 1) on Python floats, then meets float32 (the
            # document length): the product is rounded to float32 once, as here.
            tf_k1 = (tf * (self.k1 + 1.0)).astype(np.float32)
            weight = tf_k1 / (tf.astype(np.float32) + self._norm()[rows])
            every = len(self._doc_lengths)
            if len(rows) >= DENSE_SHARE * every:
                held = np.zeros(every, dtype=bool)
                held[rows] = True
                spread = np.zeros(every, dtype=np.float32)
                spread[rows] = weight
                got = (None, spread, held)
            else:
                got = (rows, weight, None)
            self._arrays[term] = got  # a race computes the same arrays twice, harmlessly
        return got

    def _norm(self) -> np.ndarray:
        """The length part of the denominator, per row: float32 as milvus-lite computes it
        (b * dl / avgdl on a float32 dl, then 1 - b + …, then k1 x …)."""
        norm = self._norms
        if norm is None or len(norm) != len(self._doc_lengths):
            k1, b = self.k1, self.b
            avgdl = self.avgdl if self.avgdl > 0 else 1.0
            norm = np.float32(k1) * (np.float32(1.0 - b) + np.float32(b) * self._doc_lengths / np.float32(avgdl))
            self._norms = norm
        return norm

    def build(self, sparse_vectors: List[Dict[int, float]], valid_mask: Optional[np.ndarray] = None) -> None:
        self._arrays, self._norms = {}, None  # before and after: no search may pair old arrays with new statistics
        super().build(sparse_vectors, valid_mask)
        self._arrays, self._norms = {}, None

    def search(self, query_sparse_vectors: List[Dict[int, float]], top_k: int,
               valid_mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        if not all(math.isfinite(w) for query in query_sparse_vectors for w in query.values()):
            # not from the BM25 function (counts of the query's words): milvus-lite's own
            # arithmetic for it (0 x inf over every row would be NaN here)
            return super().search(query_sparse_vectors, top_k, valid_mask)
        rows_total = len(self._doc_lengths)
        valid_mask = validate_mask(valid_mask, rows_total)
        nq = len(query_sparse_vectors)
        all_ids, all_dists = empty_results(nq, top_k)
        if self.doc_count == 0 or top_k == 0:
            return all_ids, all_dists
        n_docs = self.doc_count
        for qi, query in enumerate(query_sparse_vectors):
            if not query:
                continue
            scores = np.zeros(rows_total, dtype=np.float32)
            matched = np.zeros(rows_total, dtype=bool)
            postings = []  # (query position, rows, held) of the terms some row holds
            for t, (term, weight) in enumerate(query.items()):
                got = self._postings(term)
                if got is None:
                    continue
                rows, part, held = got
                postings.append((t, rows, held))
                df = self._df[term]
                idf = math.log((n_docs - df + 0.5) / (df + 0.5) + 1.0)
                # Every row is scored, the filter applied once at the end: a row's sum is the
                # same float32 additions in the same order (adding 0.0 changes nothing).
                contribution = np.float32(idf) * part * np.float32(weight)
                if held is None:
                    scores[rows] += contribution  # rows are distinct within a posting list
                    matched[rows] = True
                else:
                    scores += contribution
                    matched |= held
            hit = np.flatnonzero(matched if valid_mask is None else matched & valid_mask)
            if not len(hit):
                continue
            if len(hit) > top_k:  # only the rows that can be in the top k need ordering
                kth = np.partition(scores[hit], len(hit) - top_k)[len(hit) - top_k]
                hit = hit[scores[hit] >= kth]
            # Ties keep milvus-lite's order: the row whose first matching term comes first in
            # the query, then the lower row; looked up for these rows only.
            first = np.full(len(hit), len(query), dtype=np.int64)
            for t, rows, held in postings:
                if held is not None:
                    holds = held[hit]
                else:
                    at = np.minimum(np.searchsorted(rows, hit), len(rows) - 1)
                    holds = rows[at] == hit
                first[holds] = np.minimum(first[holds], t)
            order = np.lexsort((hit, first, -scores[hit]))[:top_k]
            best = hit[order]
            all_ids[qi, :len(best)] = best
            all_dists[qi, :len(best)] = -scores[best]
        return all_ids, all_dists


def install() -> bool:
    """Make milvus-lite's sparse index factory build :class:`ArrayBM25Index` for BM25 fields.
    True when installed (or already); False, with a warning, on another milvus-lite release."""
    from milvus_lite.index import sparse_factory

    if sparse_factory.SparseInvertedIndex is ArrayBM25Index:
        return True
    if not on_written_release("bm25_scorer", "BM25 searches use milvus-lite's own (slower) scorer"):
        return False
    sparse_factory.SparseInvertedIndex = ArrayBM25Index
    return True
