"""Which rows a milvus-lite search may return, found without a Python step per row.

Before milvus-lite 3.2 searches an index it decides, for every stored row, whether the row
is live: the newest version of its primary key (an upsert leaves older ones in other
segments), not shadowed by a delete. It does so in a Python loop over every row, twice
(a map of each key's newest version, then a mask per segment), on every request: at 100k
chunks that is ~90% of a dense search's time and ~70% of a BM25 one's, whatever the query
(py-spy on bench/search_latency.py's server; bench/README.md, "At 100k chunks").

Here the same decision costs hashing, in C, the keys that can be dead: keys stored in
more than one place (set intersections of the segments' key maps, which milvus-lite
already keeps: ``Segment.pk_to_row``) and keys with a delete (the tombstone map, the
memtable's pending deletes). Every other row is the only version of its key and has no
delete against it, so it is live; the suspects are judged by milvus-lite's own rule, row
by row. The result is the same mask: tests/consumers/test_lite_live.py compares searches
through both on random histories of inserts, upserts, deletes, flushes and compactions.

:func:`install` swaps the three functions that hold the loops (the dense executor,
``execute_search_with_index``; ``Collection._search_sparse`` for BM25; ``Collection.query``,
which delete-by-filter also runs): copies of milvus-lite 3.2.2's, changed only where marked
``ragstream:`` (there also: a hit materializes only the columns its projection keeps, not
the row's vectors). Like lite_bm25.py it installs on that release only (pyproject pins it)
and warns on another; a segment with a key twice (milvus-lite never writes one) is handed
to the original function.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from milvus_lite.index.brute_force import BruteForceIndex

from consumers.milvus.lite_patch import on_written_release

_ORIGINAL: Dict[str, Callable[..., Any]] = {}


def repeated(key_maps: Sequence[Mapping[Any, Any]]) -> set:
    """The keys found in more than one of ``key_maps``."""
    if len(key_maps) < 2:
        return set()
    seen, twice = set(key_maps[0]), set()
    for keys in key_maps[1:]:
        twice |= seen.intersection(keys)
        seen.update(keys)
    return twice


#: Per collection (its directory), the last segment set searched: (the segments' key lists,
#: every key, keys in more than one segment).
_SEGMENT_KEYS: "OrderedDict[str, Tuple[Tuple[list, ...], frozenset, frozenset]]" = OrderedDict()
_SEGMENT_KEYS_LOCK = threading.Lock()
_COLLECTIONS_KEPT = 32


def _collection_dir(segments: Sequence[Any]) -> str:
    path = segments[0].file_path
    cut = path.rfind(f"{os.sep}partitions{os.sep}")
    return path[:cut] if cut >= 0 else path


def in_many(segments: Sequence[Any], memtable_keys: Mapping[Any, Any]) -> set:
    """The keys stored in more than one of ``segments`` and the memtable (``memtable_keys``).

    Segments never change (a flush or compaction makes new ones), so what their keys are is
    kept per collection for the last set of segments searched, recognised by the identity of
    their key lists (held here, so an identity is never another list's; released when the
    collection's next set replaces it); a search then hashes only the memtable's keys."""
    segments = [s for s in segments if s.pks]  # an empty one holds no key (and dense search skips it)
    if not segments:
        return set()  # the memtable holds each key once
    where = _collection_dir(segments)
    with _SEGMENT_KEYS_LOCK:
        got = _SEGMENT_KEYS.get(where)
        if got is not None and len(got[0]) == len(segments) and all(a is s.pks for a, s in zip(got[0], segments)):
            _SEGMENT_KEYS.move_to_end(where)
        else:
            got = None
    if got is None:
        maps = [s.pk_to_row for s in segments]
        every: set = set()
        for keys in maps:
            every.update(keys)
        got = (tuple(s.pks for s in segments), frozenset(every), frozenset(repeated(maps)))
        with _SEGMENT_KEYS_LOCK:
            _SEGMENT_KEYS[where] = got
            _SEGMENT_KEYS.move_to_end(where)
            while len(_SEGMENT_KEYS) > _COLLECTIONS_KEPT:
                _SEGMENT_KEYS.popitem(last=False)
    _, every, twice = got
    return set(twice) | every.intersection(memtable_keys) if memtable_keys else set(twice)


def newest_seqs(twice: Iterable[Any], sources: Sequence[Tuple[Mapping[Any, int], Any]]) -> Dict[Any, int]:
    """Each key of ``twice``'s largest seq over ``sources`` (pairs of key → row and seqs)."""
    newest: Dict[Any, int] = {}
    for pk in twice:
        best = -1
        for rows, seqs in sources:
            i = rows.get(pk)
            if i is not None and int(seqs[i]) > best:
                best = int(seqs[i])
        newest[pk] = best
    return newest


def live_mask(pk_to_row: Mapping[Any, int], seqs: Any, n: int, newest: Mapping[Any, int],
              deleted: Mapping[Any, int], pending: Mapping[Any, Tuple[int, Any]],
              partition_ok: Optional[Callable[[Any], bool]] = None) -> np.ndarray:
    """milvus-lite's liveness of a source's ``n`` rows: a row is live unless a newer version
    of its key exists (``newest``: key → largest seq, for keys stored more than once), a
    delete with a larger seq is on disk (``deleted``: key → delete seq) or pending in the
    memtable (``pending``: key → (seq, partition), counted when ``partition_ok(partition)``
    or when no ``partition_ok`` is given)."""
    mask = np.ones(n, dtype=bool)
    suspects: set = set()
    for keys in (newest, deleted, pending):
        if keys:
            suspects |= (keys.keys() & pk_to_row.keys()) if len(keys) > len(pk_to_row) else \
                {pk for pk in keys if pk in pk_to_row}
    for pk in suspects:
        i = pk_to_row[pk]
        seq = int(seqs[i])
        gone = pending.get(pk)
        if (newest.get(pk, seq) > seq or deleted.get(pk, -1) > seq
                or (gone is not None and gone[0] > seq and (partition_ok is None or partition_ok(gone[1])))):
            mask[i] = False
    return mask


def _rows(pks: List[Any]) -> Optional[Dict[Any, int]]:
    rows = {pk: i for i, pk in enumerate(pks)}
    return rows if len(rows) == len(pks) else None


def _segment_rows(seg: Any) -> Optional[Dict[Any, int]]:
    rows = seg.pk_to_row
    return rows if len(rows) == len(seg.pks) else None


# ---------------------------------------------------------------------------------------------
# milvus_lite/search/executor_indexed.py, execute_search_with_index (3.2.2), its docstring and
# comments shortened; changed where marked.
def execute_search_with_index(
    query_vectors: np.ndarray, segments: Iterable[Any], memtable: Any, delta_index: Any, top_k: int,
    metric_type: str, pk_field: str, vector_field: str, partition_names: Optional[List[str]] = None,
    compiled_filter: Any = None, output_fields: Optional[List[str]] = None, indexed_filter_plan: Any = None,
    project_record_fn: Optional[Callable[[dict], dict]] = None,
    search_params: Optional[Dict[str, Any]] = None,
) -> List[List[dict]]:
    """Per-source recall + global merge search path (milvus-lite's, live rows found by :func:`live_mask`)."""
    if query_vectors.ndim == 1:
        query_vectors = query_vectors.reshape(1, -1)
    if query_vectors.dtype != np.float32:
        query_vectors = query_vectors.astype(np.float32, copy=False)
    nq = int(query_vectors.shape[0])
    if nq == 0 or top_k <= 0:
        return [[] for _ in range(nq)]
    partition_filter: Optional[set] = set(partition_names) if partition_names else None
    segments = list(segments)
    in_scope_segments = [s for s in segments if s.num_rows > 0
                         and (partition_filter is None or s.partition in partition_filter)]
    mt_pks, mt_seqs, mt_vecs, mt_row_refs, mt_table = memtable.to_search_snapshot(
        vector_field=vector_field, partition_names=partition_names, include_table=compiled_filter is not None)
    if not in_scope_segments and not mt_pks:
        return [[] for _ in range(nq)]

    # ragstream: the global max-seq map and the per-row mask loop replaced by live_mask.
    seg_rows = [_segment_rows(s) for s in in_scope_segments]
    mt_rows = _rows(mt_pks) if mt_pks else {}
    if mt_rows is None or any(r is None for r in seg_rows):
        return _ORIGINAL["execute_search_with_index"](
            query_vectors=query_vectors, segments=segments, memtable=memtable, delta_index=delta_index,
            top_k=top_k, metric_type=metric_type, pk_field=pk_field, vector_field=vector_field,
            partition_names=partition_names, compiled_filter=compiled_filter, output_fields=output_fields,
            indexed_filter_plan=indexed_filter_plan, project_record_fn=project_record_fn,
            search_params=search_params)
    newest = newest_seqs(in_many(in_scope_segments, mt_rows),
                         [*zip(seg_rows, (s.seqs for s in in_scope_segments)), (mt_rows, mt_seqs)])
    mt_deletes = memtable.delete_index_snapshot()
    deleted = delta_index._map

    seg_filter_masks: Dict[int, np.ndarray] = {}
    mt_filter_mask: Optional[np.ndarray] = None
    if compiled_filter is not None:
        from milvus_lite.search.filter import evaluate_mask
        from milvus_lite.search.indexed_filter import evaluate_segment_filter
        for seg in in_scope_segments:
            seg_filter_masks[id(seg)] = evaluate_segment_filter(seg, compiled_filter, indexed_filter_plan)
        if mt_pks and mt_table is not None:
            mt_filter_mask = evaluate_mask(compiled_filter, mt_table)

    Candidate = Tuple[float, int, int]
    per_query_candidates: List[List[Candidate]] = [[] for _ in range(nq)]
    sources: List[Tuple[List[Any], np.ndarray, np.ndarray]] = []

    def _recall_source(source_idx: int, rows: Mapping[Any, int], seqs: Any, n: int, vectors: np.ndarray,
                       filter_mask: Optional[np.ndarray], index: Any) -> None:
        if n == 0:
            return
        local_mask = live_mask(rows, seqs, n, newest, deleted, mt_deletes)  # ragstream
        if filter_mask is not None:
            local_mask = local_mask & filter_mask.astype(bool)
        if not local_mask.any():
            return
        if index is None:
            index = BruteForceIndex.build(vectors, metric_type)
        local_ids, dists = index.search(query_vectors, top_k, valid_mask=None if local_mask.all() else local_mask,
                                        params=search_params)
        for q in range(nq):
            for j in range(top_k):
                lid = int(local_ids[q, j])
                if lid < 0:
                    break
                per_query_candidates[q].append((float(dists[q, j]), source_idx, lid))

    for seg, rows in zip(in_scope_segments, seg_rows):
        seg_vectors, seg_vector_null_mask = seg.vector_data(vector_field)
        sources.append((seg.pks, seg.seqs, seg_vectors))
        combined_mask = seg_filter_masks.get(id(seg))
        if seg_vector_null_mask is not None:
            combined_mask = seg_vector_null_mask if combined_mask is None else combined_mask & seg_vector_null_mask
        _recall_source(len(sources) - 1, rows, seg.seqs, len(seg.pks), seg_vectors, combined_mask,
                       seg.indexes.get(vector_field))
    if mt_pks:
        sources.append((mt_pks, mt_seqs, mt_vecs))
        _recall_source(len(sources) - 1, mt_rows, mt_seqs, len(mt_pks), mt_vecs, mt_filter_mask, None)
    n_segments = len(in_scope_segments)

    if project_record_fn is not None:
        project_entity = project_record_fn
    elif output_fields is None:
        def project_entity(record: dict) -> dict:
            return {k: v for k, v in record.items() if k != pk_field and k != vector_field}
    else:
        keep = set(output_fields)
        keep.discard(pk_field)

        def project_entity(record: dict) -> dict:
            return {k: record[k] for k in keep if k in record}

    # ragstream: a segment row materializes only the requested columns (and the key) when the
    # projection can keep nothing else (no "*", no dynamic fields), not its vectors too.
    wanted = None if output_fields is None or {"*", "$meta"} & set(output_fields) else {*output_fields, pk_field}

    def _materialize_record(source_idx: int, local_id: int) -> dict:
        if source_idx < n_segments:
            seg = in_scope_segments[source_idx]
            names = seg.table.column_names
            if wanted is None or "$meta" in names:
                return seg.row_to_dict(local_id)
            return {name: seg.table.column(name)[local_id].as_py() for name in names if name in wanted}
        batch_idx, row_idx = mt_row_refs[local_id]
        return memtable.materialize_row(batch_idx, row_idx)

    results: List[List[dict]] = []
    for q in range(nq):
        candidates = per_query_candidates[q]
        candidates.sort(key=lambda c: (c[0], c[1], c[2]))
        per_query: List[dict] = []
        for dist, source_idx, local_id in candidates[:top_k]:
            record = _materialize_record(source_idx, local_id)
            pk = record.get(pk_field) if pk_field in record else sources[source_idx][0][local_id]
            per_query.append({"id": pk, "distance": dist, "entity": project_entity(record)})
        results.append(per_query)
    return results


# ---------------------------------------------------------------------------------------------
# milvus_lite/engine/collection.py, Collection._search_sparse (3.2.2), its docstring and comments
# shortened; changed where marked.
def _search_sparse(self: Any, query_vectors: List, vector_field: str, top_k: int, metric_type: str,
                   partition_names: Optional[List[str]], expr: Optional[str], output_fields: Optional[List[str]],
                   timezone: Optional[str] = None) -> List[List[dict]]:
    """Sparse search over per-segment cached indexes (milvus-lite's, live rows found by :func:`live_mask`)."""
    from milvus_lite.analyzer.sparse import bytes_to_sparse
    from milvus_lite.constants import ALL_PARTITIONS
    from milvus_lite.engine.projection import build_projection_plan, project_record
    from milvus_lite.index.sparse_factory import (_search_prepared_sparse_index, create_sparse_index,
                                                  sparse_index_matches)

    partition_filter = set(partition_names) if partition_names else None
    projection_plan = build_projection_plan(output_fields, self._schema, api_kind="search")
    sparse_spec = self._index_specs.get(vector_field)
    index_params = sparse_spec.build_params if sparse_spec else {}
    query_sparse = self._prepare_sparse_queries(query_vectors, vector_field)
    nq = len(query_sparse)
    compiled_filter = self._compile_filter(expr, timezone=timezone) if expr else None
    indexed_filter_plan = self._indexed_filter_plan(compiled_filter)
    per_query_candidates: List[List[Tuple[float, Any, Any]]] = [[] for _ in range(nq)]
    seg_snapshot, delta_snap = self._read_snapshot()
    mt_deletes = self._memtable.delete_index_snapshot()

    # ragstream: the global pk -> best seq map over every segment (not only the searched
    # partitions) and the memtable's live keys, for the keys stored more than once only.
    seg_rows = [_segment_rows(s) for s in seg_snapshot]
    if any(r is None for r in seg_rows):
        return _ORIGINAL["_search_sparse"](self, query_vectors=query_vectors, vector_field=vector_field,
                                          top_k=top_k, metric_type=metric_type, partition_names=partition_names,
                                          expr=expr, output_fields=output_fields, timezone=timezone)
    mt_index = {pk: seq for pk, (_, _, seq) in self._memtable.pk_index_snapshot()}
    mt_rows = {pk: i for i, pk in enumerate(mt_index)}
    newest = newest_seqs(in_many(seg_snapshot, mt_rows),
                         [*zip(seg_rows, (s.seqs for s in seg_snapshot)), (mt_rows, list(mt_index.values()))])
    deleted = delta_snap._map

    for seg, rows in zip(seg_snapshot, seg_rows):
        if partition_filter is not None and seg.partition not in partition_filter:
            continue
        table = seg.table
        if table is None or len(table) == 0:
            continue
        cached_idx = seg.sparse_indexes.get(vector_field)
        if not sparse_index_matches(cached_idx, metric_type, index_params):
            sparse_batch = table.column(vector_field).to_pylist()
            sparse_vecs = [bytes_to_sparse(r) if isinstance(r, bytes) else (r or {}) for r in sparse_batch]
            cached_idx = create_sparse_index(metric_type, index_params)
            cached_idx.build(sparse_vecs)
            seg.sparse_indexes[vector_field] = cached_idx
        pks = seg.pks
        # ragstream: live_mask instead of a loop over every row.
        valid_mask = live_mask(rows, seg.seqs, len(pks), newest, deleted, mt_deletes,
                               partition_ok=lambda p, here=seg.partition: p in (ALL_PARTITIONS, here))
        if compiled_filter is not None:
            from milvus_lite.search.indexed_filter import evaluate_segment_filter
            valid_mask = valid_mask & evaluate_segment_filter(seg, compiled_filter, indexed_filter_plan)
        if not valid_mask.any():
            continue
        local_ids, dists = _search_prepared_sparse_index(cached_idx, query_sparse, top_k, valid_mask=valid_mask)
        for qi in range(nq):
            for j in range(top_k):
                lid = int(local_ids[qi, j])
                if lid < 0:
                    break
                per_query_candidates[qi].append((float(dists[qi, j]), pks[lid], (table, lid, int(seg.seqs[lid]))))

    mt = self._memtable
    mt_pks: list = []
    mt_sparse: list = []
    mt_refs: list = []
    for pk, seq, record in mt.active_record_snapshots(partition_names=partition_names):
        # ragstream: newest holds the keys stored more than once; one stored once is its own newest
        if delta_snap.is_deleted(pk, seq) or newest.get(pk, -1) > seq:
            continue
        raw = record.get(vector_field)
        mt_pks.append(pk)
        mt_sparse.append(bytes_to_sparse(raw) if isinstance(raw, bytes) else (raw or {}))
        mt_refs.append((record, seq))
    if mt_pks:
        mt_valid = np.ones(len(mt_pks), dtype=bool)
        if compiled_filter is not None:
            from milvus_lite.search.filter.eval.python_backend import _eval_row
            for i in range(len(mt_pks)):
                if mt_valid[i]:
                    record, _seq = mt_refs[i]
                    if not _eval_row(compiled_filter.ast, record):
                        mt_valid[i] = False
        mt_idx = create_sparse_index(metric_type, index_params)
        mt_idx.build(mt_sparse, valid_mask=mt_valid)
        local_ids, dists = _search_prepared_sparse_index(mt_idx, query_sparse, top_k)
        for qi in range(nq):
            for j in range(top_k):
                lid = int(local_ids[qi, j])
                if lid < 0:
                    break
                per_query_candidates[qi].append((float(dists[qi, j]), mt_pks[lid], mt_refs[lid]))

    def _is_memtable_sparse_ref(source: Any) -> bool:
        return isinstance(source, tuple) and bool(source) and isinstance(source[0], dict)

    # ragstream: a segment's hits are read in one take() of the projected columns (and the
    # projection done here) where milvus-lite reads every column of every hit one value at a
    # time; the seq for the dedup comes with the candidate.
    plan = projection_plan
    dynamic = plan.include_all_dynamic or plan.explicit_dynamic_fields or plan.include_raw_meta
    pk_name = self._pk_name
    chosen: List[List[Tuple[float, Any, Any]]] = []
    for qi in range(nq):
        pk_best: dict = {}
        for cand in per_query_candidates[qi]:
            dist, pk, source = cand
            seq = int(source[1]) if _is_memtable_sparse_ref(source) else source[2]
            if pk not in pk_best or seq > pk_best[pk][0]:
                pk_best[pk] = (seq, cand)
        deduped = [v[1] for v in pk_best.values()]
        deduped.sort(key=lambda c: c[0])
        chosen.append(deduped[:top_k])
    rows_of: Dict[int, Tuple[Any, List[int]]] = {}
    for hits in chosen:
        for _dist, _pk, source in hits:
            if not _is_memtable_sparse_ref(source):
                rows_of.setdefault(id(source[0]), (source[0], []))[1].append(source[1])
    read: Dict[Tuple[int, int], dict] = {}
    for key, (tbl, rows) in rows_of.items():
        columns = [name for name in tbl.column_names if name not in ("_seq", "_partition")
                   and (dynamic or name in plan.response_schema_fields)]
        records = tbl.select(columns).take(rows).to_pylist() if columns else [{} for _ in rows]  # no column: no rows
        for row_i, record in zip(rows, records):
            read[(key, row_i)] = record
    results: List[List[dict]] = []
    for hits in chosen:
        out: list = []
        for dist, pk, source in hits:
            if _is_memtable_sparse_ref(source):
                entity = project_record(source[0], self._schema, projection_plan)
            else:
                record = read[(id(source[0]), source[1])]
                entity = (project_record(record, self._schema, projection_plan) if dynamic else
                          {name: record[name] for name in plan.response_schema_fields
                           if name != pk_name and name in record})
            out.append({"id": pk, "distance": dist, "entity": entity})
        results.append(out)
    return results


# ---------------------------------------------------------------------------------------------
# milvus_lite/engine/collection.py, Collection.query (3.2.2), with assemble_candidates and
# build_valid_mask folded in; changed where marked.
def query(self: Any, expr: Optional[str] = None, output_fields: Optional[List[str]] = None,
          partition_names: Optional[List[str]] = None, limit: Optional[int] = None, offset: int = 0,
          timezone: Optional[str] = None, order_by_pk: bool = False) -> List[dict]:
    """Pure scalar query (milvus-lite's, live rows found by :func:`live_mask`, source by source)."""
    from milvus_lite.engine.projection import build_projection_plan, project_record
    from milvus_lite.search.filter import evaluate_mask
    from milvus_lite.search.indexed_filter import evaluate_segment_filter

    if expr is not None and not isinstance(expr, str):
        raise TypeError("query() expr must be a string or None")
    self._require_loaded()
    compiled_filter = self._compile_filter(expr, timezone=timezone) if expr else None
    projection_plan = build_projection_plan(output_fields, self._schema, api_kind="query")
    indexed_filter_plan = self._indexed_filter_plan(compiled_filter)
    seg_snap, delta_snap = self._read_snapshot()

    # ragstream: assemble_candidates' sources, without a reference per row.
    partition_filter = set(partition_names) if partition_names else None
    segments = [seg for seg in seg_snap
                if (partition_filter is None or seg.partition in partition_filter) and seg.num_rows > 0]
    mt_pks, mt_seqs, _vecs, mt_row_refs, mt_table = self._memtable.to_search_snapshot(
        vector_field=self._vector_name, partition_names=partition_names, include_table=compiled_filter is not None)
    seg_rows = [_segment_rows(seg) for seg in segments]
    mt_rows = _rows(mt_pks) if mt_pks else {}
    if mt_rows is None or any(r is None for r in seg_rows) or (
            mt_pks and compiled_filter is not None and mt_table is None):
        return _ORIGINAL["query"](self, expr=expr, output_fields=output_fields, partition_names=partition_names,
                                  limit=limit, offset=offset, timezone=timezone, order_by_pk=order_by_pk)
    if not segments and not mt_pks:
        return []
    # ragstream: build_valid_mask's rule (newest version over these sources, no later delete
    # on disk or in the memtable), by live_mask.
    newest = newest_seqs(in_many(segments, mt_rows),
                         [*zip(seg_rows, (seg.seqs for seg in segments)), (mt_rows, mt_seqs)])
    deleted, pending = delta_snap._map, self._memtable.delete_index_snapshot()
    live: List[Tuple[Callable[[int], dict], List[Any], np.ndarray]] = []
    for seg, rows in zip(segments, seg_rows):
        mask = live_mask(rows, seg.seqs, seg.num_rows, newest, deleted, pending)
        if compiled_filter is not None:
            mask &= evaluate_segment_filter(seg, compiled_filter, indexed_filter_plan).astype(bool)
        live.append((seg.row_to_dict, seg.pks, np.flatnonzero(mask)))
    if mt_pks:
        mask = live_mask(mt_rows, mt_seqs, len(mt_pks), newest, deleted, pending)
        if compiled_filter is not None:
            mask &= evaluate_mask(compiled_filter, mt_table).astype(bool)
        live.append((lambda i: self._memtable.materialize_row(*mt_row_refs[i]), mt_pks, np.flatnonzero(mask)))

    effective_limit = (offset + limit) if limit is not None else None
    refs = ((row_of, pks, int(i)) for row_of, pks, kept in live for i in kept)
    if order_by_pk:
        refs = iter(sorted(refs, key=lambda ref: ref[1][ref[2]]))
    out: List[dict] = []
    for row_of, _pks, i in refs:
        out.append(project_record(row_of(i), self._schema, projection_plan))
        if effective_limit is not None and len(out) >= effective_limit:
            break
    return out[offset:]


def install() -> bool:
    """Put :func:`execute_search_with_index`, :func:`_search_sparse` and :func:`query` in milvus-lite's place.
    True when installed (or already); False, with a warning, on another milvus-lite release."""
    from milvus_lite.engine import collection

    if (collection.execute_search_with_index is execute_search_with_index
            and collection.Collection._search_sparse is _search_sparse and collection.Collection.query is query):
        return True
    if not on_written_release("live_rows", "every search walks every stored row in Python (slower at scale)"):
        return False
    _ORIGINAL.setdefault("execute_search_with_index", collection.execute_search_with_index)
    _ORIGINAL.setdefault("_search_sparse", collection.Collection._search_sparse)
    _ORIGINAL.setdefault("query", collection.Collection.query)
    collection.execute_search_with_index = execute_search_with_index
    collection.Collection._search_sparse = _search_sparse
    collection.Collection.query = query
    return True
