"""Hybrid against dense search latency at 100k chunks (issue 21: hybrid p95 ≤ 1.5x dense).

    .venv/bin/python bench/search_latency.py [--rows 100000] [--queries 200] [--repeat 3]
                                             # writes bench/results/search_latency.json

Starts a private milvus-lite server and fills the real collection (``MilvusIndex``: HNSW
and the BM25 function) with ``--rows`` chunks. Their texts are the real chunk texts of
bench/search_quality.py's corpus (220 files of /usr/share/doc through the real chunker),
repeated to the size wanted, so BM25's posting lists have real word statistics; their
vectors are clustered unit vectors as in bench/acl_search.py (no model run: 100k embeddings
would take an hour here, and the dense leg's cost does not depend on what the vectors mean).
Queries: 14-word passages of those texts, with a vector near a topic centre. Every row is
readable by ``group:bench``, and 5% also by ``group:narrow``; both callers are timed, each
mode through ``MilvusIndex.search`` (limit 10) as the API calls it, the query's embedding
excluded (it is the same for dense and hybrid), on a warm index: a first pass of lexical
searches over the queries, timed apart (``cold_lexical_*``), builds each query term's arrays
for the numpy BM25 scorer, which a term's first query after an index build pays once. As a
reference, not a ragstream mode: Milvus's own one-request ``hybrid_search`` of the same two
legs (``ONE_REQUEST``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.acl_search import normalized, settle  # noqa: E402
from bench.search_quality import corpus  # noqa: E402
from consumers.milvus import MilvusIndex, acl_key, encode_acl  # noqa: E402
from consumers.milvus.search import exact_terms  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "search_latency.json"
DIM = 384
TOPICS = 1000


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


#: A reference, not a ragstream mode: the same two legs (dense and BM25, the caller's ACL
#: filter on both, FUSION_CANDIDATES each) fused by Milvus itself in one ``hybrid_search``
#: request (``RRFRanker``), without the verbatim leg, the question weighting or the dense
#: leg's retry. What two legs cost on this engine when they are one request.
ONE_REQUEST = "one_request_rrf_reference"


def one_request(index: MilvusIndex, caller: list[str]):
    from pymilvus import AnnSearchRequest, RRFRanker

    from consumers.milvus.schema import FUSION_CANDIDATES, RRF_K, SPARSE_FIELD

    def run(query: str, vector: list[float]) -> None:
        expr, ef = index.search_plan(caller, 10)  # per search, as ragstream's: the share estimate learns
        legs = [AnnSearchRequest(data=[vector], anns_field="vector", limit=FUSION_CANDIDATES, expr=expr,
                                 param={"metric_type": "COSINE", "params": {"ef": ef}}),
                AnnSearchRequest(data=[query], anns_field=SPARSE_FIELD, limit=FUSION_CANDIDATES, expr=expr,
                                 param={"metric_type": "BM25"})]
        index.client.hybrid_search(collection_name=index.target, reqs=legs, ranker=RRFRanker(RRF_K), limit=10,
                                   output_fields=index.OUTPUT, consistency_level=index.search_consistency)
    return run


def chunk_texts(settings) -> list[str]:
    from streams.chunking import Chunker
    from streams.embedding import token_counter

    chunker = Chunker(count=token_counter(settings), max_tokens=settings.chunk_max_tokens,
                      overlap_tokens=settings.chunk_overlap_tokens)
    return [c.text for path, text in corpus(220) for c in chunker.chunk(str(path), text)]


def fill(index: MilvusIndex, texts: list[str], rows: int, gen: np.random.Generator) -> tuple[float, np.ndarray]:
    t0 = time.monotonic()
    centres = normalized(gen.standard_normal((TOPICS, DIM), dtype=np.float32))
    acls = {False: encode_acl(["group:bench"]), True: encode_acl(["group:bench", "group:narrow"])}
    index.register_acls(acls.values())
    batch = []
    for i in range(rows):
        if i % 2000 == 0:
            topics = gen.integers(0, TOPICS, 200)
            noise = gen.standard_normal((2000, DIM), dtype=np.float32)
            vecs = normalized(centres[topics[np.arange(2000) // 10]] + 0.045 * noise)
        acl = acls[(i // 10) % 20 == 0]  # 5% of the documents
        batch.append({"chunk_id": f"c{i:07d}", "doc_id": f"bench:d{i // 10}", "source": "bench",
                      "source_kind": "filesystem", "version": 1, "heading": "", "title": f"doc {i // 10}",
                      "uri": "", "text": texts[i % len(texts)], "acl": acl, "acl_key": acl_key(acl),
                      "classification": "internal", "subjects": "", "retain_until": 0, "model": "random",
                      "vector": vecs[i % 2000].tolist()})
        if len(batch) == 2000:
            index.client.insert(collection_name=index.alias, data=batch)
            batch = []
    if batch:
        index.client.insert(collection_name=index.alias, data=batch)
    index.flush()
    return time.monotonic() - t0, centres


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3, help="times each query is timed in each mode")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    from infra.stack import Stack, isolated_settings

    rng, gen = random.Random(21), np.random.default_rng(21)
    with tempfile.TemporaryDirectory() as tmp:
        s = isolated_settings(Path(tmp) / "home", start_timeout_s=180)
        texts = chunk_texts(s)
        stack = Stack(s, ("milvus",))
        try:
            stack.up()
            index = MilvusIndex(s.resolved_milvus_uri, "bench_latency", DIM, timeout=600)
            index.ensure()
            fill_s, centres = fill(index, texts, args.rows, gen)
            settle_s = settle(s.home / "milvus")
            queries = []
            for _ in range(args.queries):
                words = rng.choice(texts).split()
                start = rng.randrange(max(1, len(words) - 14))
                vec = normalized(centres[rng.randrange(TOPICS)] + 0.06 * gen.standard_normal(DIM, dtype=np.float32))
                queries.append((" ".join(words[start:start + 14]), vec.tolist()))
            identifiers = [bool(exact_terms(q)) for q, _ in queries]
            # A term's first query builds its arrays for the numpy BM25 scorer (lite_bm25.py),
            # once per index build: timed here, once, and out of the steady-state timings below
            # (every mode, in any order, then sees the same warm index).
            cold = []
            for q, v in queries:
                t0 = time.perf_counter()
                index.search(v, ["group:bench"], 10, query=q, mode="lexical")
                cold.append(1000 * (time.perf_counter() - t0))
            results: dict[str, dict] = {}
            modes = ("dense", "lexical", "hybrid", ONE_REQUEST)
            for caller in (["group:bench"], ["group:narrow"]):
                runs = {mode: one_request(index, caller) if mode == ONE_REQUEST else
                        (lambda q, v, mode=mode: index.search(v, caller, 10, query=q, mode=mode)) for mode in modes}
                for q, v in queries[:10]:  # warm up
                    for run in runs.values():
                        run(q, v)
                # Each query in every mode, one after the other, and the query set --repeat
                # times: what the machine does meanwhile falls on every mode alike.
                timed: dict[str, list[float]] = {mode: [] for mode in modes}
                for _ in range(args.repeat):
                    for q, v in queries:
                        for mode, run in runs.items():
                            t0 = time.perf_counter()
                            run(q, v)
                            timed[mode].append(1000 * (time.perf_counter() - t0))
                for mode, times in timed.items():
                    split = {kind: [t for t, has in zip(times, identifiers * args.repeat) if has == (kind == "with")]
                             for kind in ("with", "without")}
                    results.setdefault(caller[0], {})[mode] = {
                        "p50_ms": round(pct(times, 50), 1), "p95_ms": round(pct(times, 95), 1),
                        # the queries holding an identifier (a verbatim lookup each) and the others
                        **{f"{kind}_identifiers_p50_ms": round(pct(ts, 50), 1) for kind, ts in split.items() if len(ts) > 1},
                        **{f"{kind}_identifiers_p95_ms": round(pct(ts, 95), 1) for kind, ts in split.items() if len(ts) > 1}}
                r = results[caller[0]]
                r["hybrid_p95_vs_dense"] = round(r["hybrid"]["p95_ms"] / r["dense"]["p95_ms"], 2)
                r[f"{ONE_REQUEST}_p95_vs_dense"] = round(r[ONE_REQUEST]["p95_ms"] / r["dense"]["p95_ms"], 2)
        finally:
            stack.down()
    out = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": "bench/search_latency.py " + " ".join(sys.argv[1:]), "rows": args.rows,
           "distinct_texts": len(set(texts)), "queries": args.queries, "repeat": args.repeat,
           "queries_with_identifiers": sum(identifiers), "limit": 10,
           "fill_seconds": round(fill_s, 1), "settle_seconds": round(settle_s, 1),
           # the first pass of lexical searches over the queries, each new term's arrays built
           "cold_lexical_p50_ms": round(pct(cold, 50), 1), "cold_lexical_p95_ms": round(pct(cold, 95), 1),
           "results": results,
           "goal": "hybrid p95 <= 1.5x dense p95",
           "goal_met": all(r["hybrid_p95_vs_dense"] <= 1.5 for r in results.values())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
