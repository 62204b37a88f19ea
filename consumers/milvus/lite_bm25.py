"""BM25 scoring for milvus-lite with numpy, result for result the same as milvus-lite's own.

milvus-lite 3.2 scores a BM25 query in pure Python, one loop step per posting (every chunk
holding a query word, and most chunks hold "the"), which made a lexical search at 100k chunks
cost 4x a dense one for a caller who sees everything (p50 341 against 82 ms: bench/README.md,
"At 100k chunks"). :class:`ArrayBM25Index`
is milvus-lite's ``SparseInvertedIndex`` with the same index (it is a subclass: built and
cached by milvus-lite as before) whose postings are also kept as numpy arrays, built
on a term's first query (12 bytes per posting, a fraction of what milvus-lite's own
Python tuples take), and scored a term at a time over the whole array.

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


class ArrayBM25Index(SparseInvertedIndex):
    """milvus-lite's BM25 index, its postings also as numpy arrays, searched a term at a time."""

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        super().__init__(k1=k1, b=b)
        self._arrays: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _postings(self, term: int) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(rows, tf as float32, tf x (k1 + 1) as float32) of ``term``, or None when no row holds it."""
        got = self._arrays.get(term)
        if got is None:
            posting = self._posting_lists.get(term)
            if not posting:
                return None
            rows = np.fromiter((p[0] for p in posting), dtype=np.int32, count=len(posting))
            tf = np.fromiter((p[1] for p in posting), dtype=np.float64, count=len(posting))
            # milvus-lite computes tf * (k1 + 1) on Python floats, then meets float32 (the
            # document length): the product is rounded to float32 once, as here.
            got = (rows, tf.astype(np.float32), (tf * (self.k1 + 1.0)).astype(np.float32))
            self._arrays[term] = got  # a race computes the same arrays twice, harmlessly
        return got

    def build(self, sparse_vectors: List[Dict[int, float]], valid_mask: Optional[np.ndarray] = None) -> None:
        self._arrays = {}  # before and after: no search may pair old arrays with new statistics
        super().build(sparse_vectors, valid_mask)
        self._arrays = {}

    def search(self, query_sparse_vectors: List[Dict[int, float]], top_k: int,
               valid_mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        lengths = self._doc_lengths
        valid_mask = validate_mask(valid_mask, len(lengths))
        nq = len(query_sparse_vectors)
        all_ids, all_dists = empty_results(nq, top_k)
        if self.doc_count == 0 or top_k == 0:
            return all_ids, all_dists
        n_docs = self.doc_count
        k1, b = self.k1, self.b
        avgdl = self.avgdl if self.avgdl > 0 else 1.0
        # The length part of the denominator, per row: float32 as milvus-lite computes it
        # (b * dl / avgdl on a float32 dl, then 1 - b + …, then k1 x …).
        norm = np.float32(k1) * (np.float32(1.0 - b) + np.float32(b) * lengths / np.float32(avgdl))
        for qi, query in enumerate(query_sparse_vectors):
            if not query:
                continue
            scores = np.zeros(len(lengths), dtype=np.float32)
            first = np.full(len(lengths), len(query), dtype=np.int64)  # the first query term a row matched
            for t, (term, weight) in enumerate(query.items()):
                got = self._postings(term)
                if got is None:
                    continue
                rows, tf, tf_k1 = got
                if valid_mask is not None:
                    keep = valid_mask[rows]
                    rows, tf, tf_k1 = rows[keep], tf[keep], tf_k1[keep]
                    if not len(rows):
                        continue
                df = self._df[term]
                idf = math.log((n_docs - df + 0.5) / (df + 0.5) + 1.0)
                contribution = np.float32(idf) * (tf_k1 / (tf + norm[rows])) * np.float32(weight)
                scores[rows] += contribution  # rows are distinct within a posting list
                first[rows] = np.minimum(first[rows], t)  # distinct rows: a plain assignment
            hit = np.flatnonzero(first < len(query))
            if not len(hit):
                continue
            if len(hit) > top_k:  # only the rows that can be in the top k need ordering
                kth = np.partition(scores[hit], len(hit) - top_k)[len(hit) - top_k]
                hit = hit[scores[hit] >= kth]
            order = np.lexsort((hit, first[hit], -scores[hit]))[:top_k]
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
