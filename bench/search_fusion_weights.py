"""Issue 21: the BM25 leg's weight for natural-language questions in hybrid search.

    .venv/bin/python bench/search_fusion_weights.py      # ~15 min on 2 cores; writes results/search_fusion_weights.json

The corpus, queries and index of bench/search_quality.py (220 files of /usr/share/doc, seed
21), then hybrid search with the fusion replaced by a weighted RRF: ``rrf`` (every leg 1),
``adaptive_q0.5`` and ``adaptive_q0.3`` (the BM25 leg weighs 0.5 / 0.3 when
``consumers.milvus.search.is_question`` says the query is a question, else 1). Printed per
kind of query (passage, identifier, question, question_held_out) with dense alone last. The
weight was chosen on ``question`` (12) and checked on ``question_held_out`` (16, written
after the choice); the results of 2026-11-26 are in bench/README.md ("Search quality").
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import consumers.milvus.search as S  # noqa: E402
import search_quality as SQ  # noqa: E402
from consumers.milvus.index import MilvusIndex  # noqa: E402
from infra.stack import Stack, isolated_settings  # noqa: E402

VARIANTS = [("rrf", None), ("adaptive_q0.5", 0.5), ("adaptive_q0.3", 0.3)]
RESULTS = ROOT / "bench" / "results" / "search_fusion_weights.json"
_state: dict = {"question_weight": None, "query": ""}
_FUSE = S._fuse  # the real fusion, called with each variant's weights


def _weighted_fuse(ranked, verbatim, limit, weights=None):  # noqa: ANN001, ANN202 - S._fuse's signature
    """S._fuse with the variant's weights (the ones search() passes are ignored)."""
    w = [1.0] * len(ranked)
    if _state["question_weight"] is not None and len(ranked) == 2 and S.is_question(_state["query"]):
        w = [1.0, _state["question_weight"]]
    return _FUSE(ranked, verbatim, limit, w)


def main() -> None:
    S._fuse = _weighted_fuse
    search = S.SearchMixin.search

    def remembering(self, vector, principals, limit=10, *, query=None, mode="dense", filters=None):  # noqa: ANN001, ANN202
        _state["query"] = query or ""
        return search(self, vector, principals, limit, query=query, mode=mode, filters=filters)

    S.SearchMixin.search = remembering
    SQ.MODES = ("dense", "lexical", "hybrid")
    rng = random.Random(21)
    docs = SQ.corpus(220)
    kinds = {"passage": SQ.passage_queries(docs, 100, rng), "identifier": SQ.identifier_queries(docs, 60, rng),
             "question": SQ.question_queries(docs),
             "question_held_out": SQ.question_queries(docs, SQ.QUESTIONS_HELD_OUT)}
    out: dict = {}
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
            for name, weight in VARIANTS:
                _state["question_weight"] = weight
                report, _ = SQ.evaluate(index, embedder, kinds, 30)
                out[name] = {k: report[k]["hybrid"] for k in kinds}
                print(name, json.dumps(out[name]), flush=True)
            out["dense"] = {k: report[k]["dense"] for k in kinds}
            print("dense", json.dumps(out["dense"]), flush=True)
        finally:
            stack.down()
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
