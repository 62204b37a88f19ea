"""Search quality on real documents nobody here wrote: dense, lexical and hybrid retrieval.

    .venv/bin/python bench/search_quality.py [--docs 220] [--passages 100] [--identifiers 60]
                                             [--no-peer] [--nanoranker]
                                             # writes bench/results/search_quality.json

Issue 21's experiment, made repeatable. The corpus is this machine's package documentation
(``/usr/share/doc``, the readable files of at most 12 KB — READMEs, release notes,
changelogs, licences — ``--docs`` of them taken round-robin over the packages; the manifest
with sha256 is in the JSON). Each file goes through the real extraction
(``producers.extract``), the real chunker (``streams.chunking.Chunker`` with the model's
token counter and the configured sizes) and the real embedder
(``streams.embedding.make_embedder``), into the real collection (``MilvusIndex``: HNSW +
BM25 function) on a private milvus-lite *server* (the mode ``ragstream up`` runs). Every
document is readable by ``group:bench`` and every query runs as that principal, so the ACL
filter is on every leg as in production.

Queries (seeded):

* ``passage``: 14 consecutive words from the middle of a file (whitespace-normalised); the
  relevant documents are the files whose text contains that passage (usually just the one;
  boilerplate shared by several files makes each of them relevant);
* ``identifier``: a token from the corpus that a person would paste — a Debian bug number
  (``#859384``), a version (``2.36.1-2``), a CVE or any token mixing digits with letters or
  inner punctuation — found in at most two files; relevant are the files containing it;
* ``question``: hand-written natural-language questions about specific files, each with the
  file that answers it (:data:`QUESTIONS`; only those whose file is in the corpus are asked).

For each mode (``dense``, ``lexical``, ``hybrid``; plus ``hybrid_no_verbatim`` — hybrid
without the verbatim identifier leg — and ``hybrid_server``: pymilvus ``hybrid_search`` with
``RRFRanker`` over the dense and BM25 legs, for comparison with the fusion in Python) it
reports, per query kind: hit@5 (a relevant file among the first five distinct files),
recall@5 (relevant files among the first five, over min(5, relevant)), MRR@10 and nDCG@10
(binary relevance, over distinct files in result order), and the search latency (p50/p95,
the query's embedding excluded — it is the same for every mode that needs it, and timed
apart).

The LangChain peer (``--no-peer`` skips it) answers the same queries over the same corpus:
the same extracted texts as LangChain documents, split by ``RecursiveCharacterTextSplitter``
bounded by the model's token count (as bench/peer_langchain.py), embedded by the same model,
into ``langchain_milvus.Milvus`` collections on the same milvus-lite server (HNSW, COSINE,
Strong consistency, ``ef`` = ragstream's floor :data:`EF_SEARCH`, flushed after loading as
ragstream's collection is): ``langchain_dense``
(``similarity_search_by_vector``, what peer_langchain.py builds) and ``langchain_hybrid``
(``BM25BuiltInFunction`` with its default analyzer + the dense field, ``similarity_search``
with ``ranker_type="rrf"``, k=60, and as many candidates per leg as ragstream's fusion
takes). The peer has no ACL filter (every document here is readable by the one principal
anyway).

``--nanoranker``: ``hybrid_rerank_nanoranker`` — hybrid's chunks reordered by the
``nanoranker`` package (PyPI, MIT, ONNX weights in the wheel; not a cross-encoder: an MLP
over the query's and the chunk's universal-sentence-encoder-multilingual embeddings and
character n-gram hashes). It must be importable (e.g. ``pip install --target DIR nanoranker
onnxruntime-extensions`` and ``PYTHONPATH=DIR``); it is not a dependency of ragstream.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.acl_search import settle  # noqa: E402
from bench.realworld import DOC_ROOT, candidates  # noqa: E402
from consumers.milvus import MilvusIndex  # noqa: E402
from consumers.milvus.schema import EF_SEARCH, FUSION_CANDIDATES, RRF_K  # noqa: E402
from producers.extract import content_type_for, extract  # noqa: E402
from schemas.events import Acl, DocMetadata, EmbeddedChunk, Op, SourceKind, VectorSet  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "search_quality.json"
MAX_BYTES = 12_000
PRINCIPALS = ["group:bench"]
PASSAGE_WORDS = 14
MODES = ("dense", "lexical", "hybrid", "hybrid_no_verbatim", "hybrid_server")

#: (file under /usr/share/doc, question). Written by reading the file; a question is asked
#: only when its file is in the corpus.
QUESTIONS: list[tuple[str, str]] = [
    ("python3-pip/html/installation.md", "how can I install pip when my Python does not have it"),
    ("python3-pip/html/topics/https-certificates.md", "how do I make pip trust my company's own CA certificate"),
    ("python3-pip/html/topics/repeatable-installs.md", "how to get the exact same packages every time I install"),
    ("python3-pip/html/topics/authentication.md", "how do I give pip a username and password for a private index"),
    ("systemd/TRANSLATORS.md", "how do I add a new language translation to systemd"),
    ("zstd/TESTING.md", "which tests run on every pull request for zstandard"),
    ("util-linux/release-schedule.txt", "how often does util-linux publish a new version"),
    ("dpkg/spec/rootless-builds.txt", "can Debian packages be built without fakeroot"),
    ("util-linux/modems-with-agetty.txt", "setting up a dial-in modem so people can log in over the phone line"),
    ("openssl/HOWTO/keys.txt", "how do I generate an RSA private key with OpenSSL"),
    ("util-linux/howto-debug.txt", "why can't I run gdb directly on the mount binary built from source"),
    ("libffi8/html/Thread-Safety.html", "is it safe to use libffi closures from several threads"),
]

#: Written later (2026-11-26), after the fusion weights were chosen on :data:`QUESTIONS`, as a
#: held-out check of that choice; paraphrased, like a user who has not read the file.
QUESTIONS_HELD_OUT: list[tuple[str, str]] = [
    ("procps/bugs.md", "where should I report a problem I found in ps or top"),
    ("linux-perf/tips.txt", "quick hints for getting more out of the perf profiler"),
    ("util-linux/deprecated.txt", "which util-linux command line options are going away and what replaces them"),
    ("nodejs/api/punycode.md", "should I still use the built-in module for internationalized domain names in node"),
    ("nodejs/api/tty.md", "how can a node program tell whether its output goes to a terminal"),
    ("python3-pip/html/topics/local-project-installs.md",
     "install a project from a folder on my disk so that my code changes show up without reinstalling"),
    ("openssl/fingerprints.txt", "how can I check that an OpenSSL download was really signed by the team"),
    ("nodejs/contributing/building-node-with-ninja.md", "how to compile node faster than with make"),
    ("nodejs/api/debugger.md", "how do I step through my node script from the command line"),
    ("valgrind/html/QuickStart.html", "getting started with finding memory errors in a C program"),
    ("psmisc/README.md", "which tool shows what process is holding a file open"),
    ("util-linux/PAM-configuration.txt", "which pam.d files do login and su expect"),
    ("nodejs/contributing/backporting-to-release-lines.md", "how do I bring a fix from main into an older node release"),
    ("polkitd/README.md", "what lets unprivileged programs ask privileged ones for permission"),
    ("libsodium23/README.markdown", "an easy to use library for encryption and password hashing"),
    ("python3-httplib2/README.md", "a python http client library that keeps connections alive and caches responses"),
]

_IDENT = re.compile(r"^(#\d{4,}|[A-Za-z]*\d[\w.+~:-]*[.\-_:+~][\w.+~:-]*\w|[A-Za-z]+\d+[A-Za-z0-9]*|\d+[A-Za-z]+\w*)$")


def normalise(text: str) -> str:
    return " ".join(text.split())


def corpus(n: int) -> list[tuple[Path, str]]:
    by_package: dict[str, list[Path]] = {}
    for p in candidates():
        if p.stat().st_size <= MAX_BYTES:
            by_package.setdefault(p.relative_to(DOC_ROOT).parts[0], []).append(p)
    # Round-robin over the packages (sorted paths within each): every package's files come in,
    # and the many release notes of one package (git) do not crowd out the rest.
    files = [p for group in itertools.zip_longest(*by_package.values()) for p in group if p is not None]
    picked: list[tuple[Path, str]] = []
    for p in files:  # skip unreadable or near-empty files
        try:
            text = extract(p.read_bytes(), content_type_for(p.name) or "text/plain")
        except Exception:  # noqa: BLE001 - the corpus takes what extracts; the pipeline dead-letters the rest
            continue
        if len(text.split()) >= 40:
            picked.append((p, text))
        if len(picked) == n:
            break
    return picked


def index_corpus(index: MilvusIndex, docs: list[tuple[Path, str]], settings) -> dict:
    from streams.chunking import Chunker
    from streams.embedding import make_embedder, token_counter

    embedder = make_embedder(settings)
    chunker = Chunker(count=token_counter(settings), max_tokens=settings.chunk_max_tokens,
                      overlap_tokens=settings.chunk_overlap_tokens)
    chunks_total, t0 = 0, time.monotonic()
    for path, text in docs:
        doc_id = doc_of(path)
        chunks = chunker.chunk(doc_id, text)
        vectors = embedder.embed([c.text for c in chunks]) if chunks else []
        vs = VectorSet(source="bench", source_kind=SourceKind.filesystem, doc_id=doc_id, op=Op.upsert, version=1,
                       metadata=DocMetadata(title=path.name, uri=path.as_uri(),
                                            modified_at=datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)),
                       acl=Acl(principals=tuple(PRINCIPALS), known=True), chunker="structural", model="bench",
                       dim=embedder.dim, chunks=tuple(EmbeddedChunk(**c.model_dump(), vector=v)
                                                      for c, v in zip(chunks, vectors)))
        index.apply(vs)
        chunks_total += len(chunks)
    index.flush()
    return {"chunks": chunks_total, "index_seconds": round(time.monotonic() - t0, 1), "embedder": embedder}


def doc_of(path: Path) -> str:
    return f"bench:{path.relative_to(DOC_ROOT)}"


def passage_queries(docs: list[tuple[Path, str]], n: int, rng: random.Random) -> list[dict]:
    texts = {doc_of(p): normalise(t) for p, t in docs}
    out = []
    for path, text in rng.sample(docs, min(n, len(docs))):
        words = normalise(text).split()
        mid = len(words) // 2
        passage = " ".join(words[mid - PASSAGE_WORDS // 2: mid + PASSAGE_WORDS - PASSAGE_WORDS // 2])
        out.append({"query": passage, "relevant": sorted(d for d, t in texts.items() if passage in t),
                    "file": doc_of(path)})
    return out


def identifier_queries(docs: list[tuple[Path, str]], n: int, rng: random.Random) -> list[dict]:
    df: Counter[str] = Counter()
    where: dict[str, set[str]] = {}
    for path, text in docs:
        for tok in {t.strip(",;()[]{}<>\"'`") for t in text.split()}:
            tok = tok.rstrip(".:")
            if 4 <= len(tok) <= 40 and _IDENT.match(tok) and any(ch.isdigit() for ch in tok):
                where.setdefault(tok, set()).add(doc_of(path))
    for tok, ds in where.items():
        df[tok] = len(ds)
    pool = sorted(t for t, c in df.items() if c <= 2)
    texts = {doc_of(p): t for p, t in docs}
    picked = rng.sample(pool, min(n, len(pool)))
    return [{"query": t, "relevant": sorted(d for d, x in texts.items() if t in x)} for t in picked]


def question_queries(docs: list[tuple[Path, str]], questions: list[tuple[str, str]] = QUESTIONS) -> list[dict]:
    have = {str(p.relative_to(DOC_ROOT)) for p, _ in docs}
    return [{"query": q, "relevant": [f"bench:{f}"]} for f, q in questions if f in have]


def ranked_docs(hits) -> list[str]:
    return list(dict.fromkeys(h.doc_id for h in hits))


Runner = Callable[[str, list[float], int], list[str]]  # (query, its vector, limit) -> doc ids, best first


def langchain_peer(docs: list[tuple[Path, str]], settings, embedder) -> tuple[dict[str, Runner], dict]:
    """The peer's two retrievers over the same texts (see the module docstring), and what it indexed."""
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_milvus import BM25BuiltInFunction, Milvus
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from ragstream.settings import milvus_token
    from streams.embedding import TokenCounter

    class CachedEmbeddings(Embeddings):
        """ragstream's model; each distinct text embedded once (both collections hold the
        same chunks, and a query's vector is the one the other modes get)."""

        def __init__(self) -> None:
            self.cache: dict[str, list[float]] = {}

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
            for i in range(0, len(todo), 64):
                for t, v in zip(todo[i:i + 64], embedder.embed(todo[i:i + 64])):
                    self.cache[t] = [float(x) for x in v]
            return [self.cache[t] for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    splitter = RecursiveCharacterTextSplitter(chunk_size=settings.chunk_max_tokens,
                                              chunk_overlap=settings.chunk_overlap_tokens,
                                              length_function=TokenCounter())
    chunks = splitter.split_documents([Document(page_content=text, metadata={"source": doc_of(path)})
                                       for path, text in docs])
    uri = settings.resolved_milvus_uri
    emb = CachedEmbeddings()
    common = dict(embedding_function=emb, connection_args={"uri": uri, "token": milvus_token(uri) or ""},
                  consistency_level="Strong", auto_id=True)
    hnsw = {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 16, "efConstruction": 200}}
    dense_params = {"metric_type": "COSINE", "params": {"ef": EF_SEARCH}}
    t0 = time.monotonic()
    dense = Milvus(collection_name="peer_dense", index_params=hnsw, search_params=dense_params, **common)
    dense.add_documents(chunks)
    hybrid = Milvus(collection_name="peer_hybrid", builtin_function=BM25BuiltInFunction(),
                    vector_field=["dense", "sparse"],
                    index_params=[hnsw, {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25"}],
                    search_params=[dense_params, {"metric_type": "BM25"}], **common)
    hybrid.add_documents(chunks)
    for store in (dense, hybrid):  # sealed and indexed, as ragstream's collection (index_corpus flushes)
        store.client.flush(store.collection_name)
    loaded = {"chunks": len(chunks), "index_seconds": round(time.monotonic() - t0, 1)}

    def run_dense(query: str, vector: list[float], limit: int) -> list[str]:
        return list(dict.fromkeys(d.metadata["source"] for d in dense.similarity_search_by_vector(vector, k=limit)))

    def run_hybrid(query: str, vector: list[float], limit: int) -> list[str]:
        emb.cache.setdefault(query, [float(x) for x in vector])  # the query's embedding is not timed
        found = hybrid.similarity_search(query, k=limit, fetch_k=max(FUSION_CANDIDATES, 3 * limit),
                                         ranker_type="rrf", ranker_params={"k": RRF_K})
        return list(dict.fromkeys(d.metadata["source"] for d in found))

    return {"langchain_dense": run_dense, "langchain_hybrid": run_hybrid}, loaded


def nanoranker_runner(index: MilvusIndex) -> Runner:
    """Hybrid's chunks reordered by nanoranker's score (ties keep the fused order)."""
    import numpy as np
    import nanoranker as nr  # loads its two ONNX models at import

    def run(query: str, vector: list[float], limit: int) -> list[str]:
        hits = index.search(vector, PRINCIPALS, limit, query=query, mode="hybrid")
        if not hits:
            return []
        q = nr.embed(query)
        d = np.array([nr.embed(h.text) for h in hits])
        x = np.concatenate([np.tile(q, (len(d), 1)), d], axis=1).astype(np.float32)
        score = nr.reranker_model.run(["output"], {"input": x})[0].reshape(-1)
        order = sorted(range(len(hits)), key=lambda i: (-float(score[i]), i))
        return ranked_docs([hits[i] for i in order])

    return run


def server_hybrid(index: MilvusIndex, vector: list[float], query: str, limit: int) -> list:
    """pymilvus' own hybrid search (RRFRanker) over the dense and BM25 legs, same ACL filter."""
    from pymilvus import AnnSearchRequest, RRFRanker

    from consumers.milvus import Hit
    from consumers.milvus.schema import SPARSE_FIELD

    plan = index.search_plan(PRINCIPALS, limit)
    if plan is None:
        return []
    expr, ef = plan
    k = max(FUSION_CANDIDATES, 3 * limit)
    reqs = [AnnSearchRequest(data=[vector], anns_field="vector", param={"metric_type": "COSINE", "ef": max(ef, k)},
                             limit=k, expr=expr),
            AnnSearchRequest(data=[query], anns_field=SPARSE_FIELD, param={"metric_type": "BM25"}, limit=k, expr=expr)]
    res = index.client.hybrid_search(collection_name=index.alias, reqs=reqs, ranker=RRFRanker(60), limit=limit,
                                     output_fields=index.OUTPUT)
    return [Hit(chunk_id=str(h.id), doc_id=h.entity.get("doc_id"), score=float(h.distance), source="", title="",
                uri="", heading="", text="") for h in res[0]]


def run_mode(index: MilvusIndex, mode: str, query: str, vector: list[float], limit: int) -> list:
    import consumers.milvus.search as m  # exact_terms reads its module's EXACT_TERMS_MAX

    if mode == "hybrid_server":
        return server_hybrid(index, vector, query, limit)
    if mode == "hybrid_no_verbatim":
        saved, m.EXACT_TERMS_MAX = m.EXACT_TERMS_MAX, 0
        try:
            return index.search(vector, PRINCIPALS, limit, query=query, mode="hybrid")
        finally:
            m.EXACT_TERMS_MAX = saved
    return index.search(vector, PRINCIPALS, limit, query=query, mode=mode)


def scores(relevant: set[str], ranking: list[str]) -> dict[str, float]:
    top5, top10 = ranking[:5], ranking[:10]
    rr = next((1 / (i + 1) for i, d in enumerate(top10) if d in relevant), 0.0)
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(top10) if d in relevant)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return {"hit@5": float(any(d in relevant for d in top5)),
            "recall@5": len(relevant & set(top5)) / min(5, len(relevant)),
            "mrr@10": rr, "ndcg@10": dcg / idcg if idcg else 0.0}


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def evaluate(index: MilvusIndex, embedder, kinds: dict[str, list[dict]], limit: int,
             extra: dict[str, Runner] | None = None) -> tuple[dict, list[dict]]:
    runners: dict[str, Runner] = {
        mode: (lambda q, v, n, mode=mode: ranked_docs(run_mode(index, mode, q, v, n))) for mode in MODES}
    runners |= extra or {}
    report: dict[str, dict] = {}
    misses: list[dict] = []
    vectors = {}
    t_embed = []
    for qs in kinds.values():
        for q in qs:
            t0 = time.perf_counter()
            vectors[q["query"]] = embedder.embed([q["query"]])[0]
            t_embed.append(1000 * (time.perf_counter() - t0))
    for run in runners.values():  # warm-up: load segments and caches
        for q in next(iter(kinds.values()))[:5]:
            run(q["query"], vectors[q["query"]], limit)
    for kind, qs in kinds.items():
        report[kind] = {"queries": len(qs)}
        for mode, run in runners.items():
            per, times = [], []
            for q in qs:
                t0 = time.perf_counter()
                ranking = run(q["query"], vectors[q["query"]], limit)
                times.append(1000 * (time.perf_counter() - t0))
                s = scores(set(q["relevant"]), ranking)
                per.append(s)
                if mode in ("dense", "hybrid") and not s["hit@5"]:
                    misses.append({"kind": kind, "mode": mode, "query": q["query"], "relevant": q["relevant"],
                                   "top5": ranking[:5]})
            report[kind][mode] = {m: round(sum(s[m] for s in per) / len(per), 3) for m in per[0]} | {
                "p50_ms": round(pct(times, 50), 1), "p95_ms": round(pct(times, 95), 1)}
    report["query_embedding_ms"] = {"p50": round(pct(t_embed, 50), 1), "p95": round(pct(t_embed, 95), 1)}
    return report, misses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=220)
    ap.add_argument("--passages", type=int, default=100)
    ap.add_argument("--identifiers", type=int, default=60)
    ap.add_argument("--limit", type=int, default=30, help="chunks asked for per search (distinct files ranked)")
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-peer", action="store_true", help="skip the LangChain peer")
    ap.add_argument("--nanoranker", action="store_true", help="also hybrid reranked by the nanoranker package")
    args = ap.parse_args()
    from infra.stack import Stack, isolated_settings

    rng = random.Random(args.seed)
    docs = corpus(args.docs)
    kinds = {"passage": passage_queries(docs, args.passages, rng),
             "identifier": identifier_queries(docs, args.identifiers, rng)}
    if qs := question_queries(docs):
        kinds["question"] = qs
    if qs := question_queries(docs, QUESTIONS_HELD_OUT):
        kinds["question_held_out"] = qs
    with tempfile.TemporaryDirectory() as tmp:
        s = isolated_settings(Path(tmp) / "home", start_timeout_s=180)
        stack = Stack(s, ("milvus",))
        try:
            stack.up()
            index = MilvusIndex(s.resolved_milvus_uri, "bench_quality", 384, timeout=600)
            index.ensure()
            loaded = index_corpus(index, docs, s)
            embedder = loaded.pop("embedder")
            extra: dict[str, Runner] = {}
            if not args.no_peer:
                peer_runners, peer_loaded = langchain_peer(docs, s, embedder)
                extra |= peer_runners
                loaded["peer"] = peer_loaded
            if args.nanoranker:
                extra["hybrid_rerank_nanoranker"] = nanoranker_runner(index)
            settle(s.home / "milvus")
            report, misses = evaluate(index, embedder, kinds, args.limit, extra)
        finally:
            stack.down()
    out = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "bench/search_quality.py " + " ".join(sys.argv[1:]),
        "documents": len(docs), **loaded, "embed_backend": s.embed_backend,
        "chunk_max_tokens": s.chunk_max_tokens, "limit_chunks": args.limit, "seed": args.seed,
        "results": report,
        "misses": misses,
        "manifest": [{"path": str(p.relative_to(DOC_ROOT)), "bytes": p.stat().st_size,
                      "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p, _ in docs],
        "queries": kinds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("manifest", "queries", "misses")}, indent=2))


if __name__ == "__main__":
    main()
