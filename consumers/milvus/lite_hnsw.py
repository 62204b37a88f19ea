"""Filtered HNSW search in milvus-lite as Milvus does it: exact when the filter keeps few rows.

milvus-lite 3.2 answers a filtered dense search by walking its HNSW graph (faiss) with the
filter as an ``IDSelector``: when the filter keeps a small share of a segment, the walk
meets few rows that pass and misses the nearest ones (recall@10 0.85 for a caller who may
see 50 of 100k chunks even at a beam of 4,096: bench/README.md, "ACL-filtered search").
Milvus itself (knowhere) does not walk then: it compares the query with every row the
filter keeps when the filter drops at least 93% of the segment, or when k is at least half
of what it keeps (``kHnswSearchKnnBFFilterThreshold``, ``kHnswSearchBFTopkThreshold`` in
knowhere's HNSW). :func:`install` gives milvus-lite's ``FaissHnswIndex.search`` the same
rule: such a search runs on the index's own flat storage (the same vectors, normalized as
for the graph) with the same selector, which is exact, and its distances are converted as
milvus-lite converts the graph's. Other searches are milvus-lite's own.

Installed by the servers ragstream starts (lite_server.build_server), on the pinned
milvus-lite release only, like lite_bm25.py and lite_live.py.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from consumers.milvus.lite_patch import on_written_release

#: knowhere's thresholds: search exactly when the filter drops at least this share of the
#: rows, or when k is at least this share of the rows it keeps.
DROPPED_SHARE_FOR_EXACT = 0.93
TOPK_SHARE_FOR_EXACT = 0.5

_ORIGINAL: Dict[str, Callable[..., Any]] = {}


def exact_is_better(kept: int, total: int, top_k: int) -> bool:
    """Whether a search among ``kept`` of ``total`` rows for ``top_k`` should be exact (knowhere's rule)."""
    return 0 < kept < total and (total - kept >= DROPPED_SHARE_FOR_EXACT * total or top_k >= TOPK_SHARE_FOR_EXACT * kept)


def search(self: Any, queries: np.ndarray, top_k: int, valid_mask: Optional[np.ndarray] = None,
           params: Optional[dict] = None) -> Tuple[np.ndarray, np.ndarray]:
    """milvus-lite's ``FaissHnswIndex.search``, exact over the kept rows when few are kept."""
    if valid_mask is None or top_k <= 0 or self.num_vectors == 0 or valid_mask.shape[0] != self.num_vectors:
        return _ORIGINAL["search"](self, queries, top_k, valid_mask=valid_mask, params=params)
    kept = int(np.count_nonzero(valid_mask))
    if not exact_is_better(kept, self.num_vectors, top_k):
        return _ORIGINAL["search"](self, queries, top_k, valid_mask=valid_mask, params=params)
    import faiss
    from milvus_lite.index.faiss_hnsw import _l2_normalize

    if queries.ndim == 1:
        queries = queries.reshape(1, -1)
    queries = queries.astype(np.float32, copy=False)
    if self.metric == "COSINE":
        queries = _l2_normalize(queries)
    bits = np.packbits(valid_mask.astype(bool), bitorder="little")
    storage = faiss.downcast_index(self._index.storage)
    dists, ids = storage.search(np.ascontiguousarray(queries, dtype=np.float32), top_k,
                                params=faiss.SearchParameters(sel=faiss.IDSelectorBitmap(bits)))
    nq = int(queries.shape[0])
    result_ids = np.full((nq, top_k), -1, dtype=np.int64)
    result_dists = np.full((nq, top_k), np.inf, dtype=np.float32)
    for q in range(nq):
        for j in range(top_k):
            fid, fdist = int(ids[q, j]), float(dists[q, j])
            if fid < 0 or fdist >= 1e30:  # padding, as milvus-lite reads it
                continue
            result_ids[q, j] = fid
            result_dists[q, j] = self._normalize_distance(fdist)
    return result_ids, result_dists


def install() -> bool:
    """Put :func:`search` in ``FaissHnswIndex``'s place. True when installed (or already);
    False, with a warning, on another milvus-lite release."""
    from milvus_lite.index.faiss_hnsw import FaissHnswIndex

    if FaissHnswIndex.search is search:
        return True
    if not on_written_release("exact_filtered_search",
                              "a search a filter keeps few rows for walks the HNSW graph and can miss the nearest"):
        return False
    _ORIGINAL.setdefault("search", FaissHnswIndex.search)
    FaissHnswIndex.search = search
    return True
