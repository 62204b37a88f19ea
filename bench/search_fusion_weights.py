"""Issue 21: the BM25 leg's weight for natural-language questions in hybrid search.

    .venv/bin/python bench/search_fusion_weights.py      # ~15 min on 2 cores; prints one line per variant

The corpus, queries and index of bench/search_quality.py (220 files of /usr/share/doc, seed
21), then hybrid search with the fusion replaced by a weighted RRF: ``rrf`` (every leg 1),
``adaptive_q0.5`` and ``adaptive_q0.3`` (the BM25 leg weighs 0.5 / 0.3 when
``consumers.milvus.search.is_question`` says the query is a question, else 1). Printed per
kind of query (passage, identifier, question, question_held_out) with dense alone last. The
weight was chosen on ``question`` (12) and checked on ``question_held_out`` (16, written
after the choice); the results of 2026-11-26 are in bench/README.md ("Search quality").
"""
import sys, json, random, tempfile, re
from pathlib import Path
sys.path.insert(0, '/work/main'); sys.path.insert(0, '/work/main/bench')
import search_quality as SQ
import consumers.milvus.search as S
from consumers.milvus.index import MilvusIndex
from infra.stack import Stack, isolated_settings

orig_fuse = S._fuse
QUESTION = re.compile(r"^(?:how|what|which|who|where|when|why|can|does|do|is|are|should|could)\b|\?\s*$", re.I)
state = {"w": (1.0, 1.0), "adaptive": None, "query": ""}

def weighted_fuse(ranked, verbatim, limit, weights=None):
    wd, wl = state["w"]
    if state["adaptive"] is not None and len(ranked) == 2:
        if S.is_question(state["query"]):
            wd, wl = state["adaptive"]
    by_id = {h.chunk_id: h for leg in [*verbatim, *ranked] for h in leg}
    fused = {}
    weights = [wd, wl] if len(ranked) == 2 else [1.0]
    for w, leg in zip(weights, ranked):
        for rank, h in enumerate(leg, 1):
            fused[h.chunk_id] = fused.get(h.chunk_id, 0.0) + w / (S.RRF_K + rank)
    for leg in verbatim:
        for h in leg:
            fused[h.chunk_id] = fused.get(h.chunk_id, 0.0) + 1.0 / (S.RRF_K + 1)
    best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    from dataclasses import replace
    return [replace(by_id[c], score=round(s, 6)) for c, s in best]
S._fuse = weighted_fuse
orig_search = S.SearchMixin.search
def search(self, vector, principals, limit=10, *, query=None, mode="dense", filters=None):
    state["query"] = query or ""
    return orig_search(self, vector, principals, limit, query=query, mode=mode, filters=filters)
S.SearchMixin.search = search
SQ.MODES = ("dense", "lexical", "hybrid")

rng = random.Random(21)
docs = SQ.corpus(220)
kinds = {"passage": SQ.passage_queries(docs, 100, rng), "identifier": SQ.identifier_queries(docs, 60, rng)}
kinds["question"] = SQ.question_queries(docs); kinds["question_held_out"] = SQ.question_queries(docs, SQ.QUESTIONS_HELD_OUT)
out = {}
with tempfile.TemporaryDirectory() as tmp:
    s = isolated_settings(Path(tmp) / "home", start_timeout_s=180)
    stack = Stack(s, ("milvus",))
    stack.up()
    try:
        index = MilvusIndex(s.resolved_milvus_uri, "bench_quality", 384, timeout=600)
        index.ensure()
        loaded = SQ.index_corpus(index, docs, s)
        embedder = loaded.pop("embedder")
        SQ.settle(s.home / "milvus")
        for name, w, adaptive in [("rrf", (1, 1), None), ("adaptive_q0.5", (1, 1), (1, .5)), ("adaptive_q0.3", (1, 1), (1, .3))]:
            state["w"], state["adaptive"] = w, adaptive
            report, misses = SQ.evaluate(index, embedder, kinds, 30)
            out[name] = {k: {m: report[k][m] for m in ("dense", "hybrid")} for k in kinds}
            print(name, json.dumps({k: report[k]["hybrid"] for k in kinds}), flush=True)
        print("dense", json.dumps({k: report[k]["dense"] for k in kinds}), flush=True)
    finally:
        stack.down()
json.dump(out, open('/tmp/sq/out.json', 'w'), indent=1)
