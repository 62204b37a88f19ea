"""The peer: the same corpus through LangChain's indexing API — initial load and incremental update.

    .venv/bin/python bench/peer_langchain.py [--docs 200]   # writes bench/results/peer_langchain.json

What a LangChain user writes: load every file of the folder (text extracted by the same
extractors as ragstream's producer, so both index the same text), split it with
``RecursiveCharacterTextSplitter`` bounded by the model's own token count (the same
``chunk_max_tokens``/``chunk_overlap_tokens`` as ragstream's chunker), and call
``langchain_core.indexing.index`` with a ``SQLRecordManager`` (SQLite) and
``cleanup="incremental"`` into ``langchain_milvus.Milvus`` on a private milvus-lite server
(HNSW, COSINE, Strong consistency, as ragstream's collection). The embedding model and
runtime are ragstream's default (``make_embedder``), wrapped as a LangChain ``Embeddings``
that counts the texts it embeds.

The incremental update makes the very edits bench/pipeline.py makes (``corpus.edit_tenth``)
and re-runs the same indexing job, as a LangChain user must: the indexing API has no change
feed, it hashes every chunk of every document again and embeds the ones it has not seen.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import edit_tenth, generate  # noqa: E402
from infra.stack import Stack, isolated_settings  # noqa: E402
from ragstream.settings import milvus_token  # noqa: E402
from producers.extract import content_type_for, extract  # noqa: E402
from streams.embedding import TokenCounter, make_embedder  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "peer_langchain.json"


def main() -> None:
    from langchain_classic.indexes import SQLRecordManager
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.indexing import index
    from langchain_milvus import Milvus
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS.name})")
    args = ap.parse_args()

    class CountingEmbeddings(Embeddings):
        def __init__(self, embedder) -> None:
            self.embedder, self.texts = embedder, 0

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            self.texts += len(texts)
            return [[float(x) for x in v] for v in self.embedder.embed(texts)]

        def embed_query(self, text: str) -> list[float]:
            return [float(x) for x in self.embedder.embed([text])[0]]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "corpus"
        paths = generate(folder, args.docs)
        s = isolated_settings(Path(tmp) / "home", start_timeout_s=180)
        splitter = RecursiveCharacterTextSplitter(chunk_size=s.chunk_max_tokens, chunk_overlap=s.chunk_overlap_tokens,
                                                  length_function=TokenCounter())
        embeddings = CountingEmbeddings(make_embedder(s))
        embeddings.embed_documents(["warm up"] * 8)
        embeddings.texts = 0

        def load() -> list[Document]:
            docs = []
            for p in sorted(folder.rglob("*")):
                if p.is_file() and content_type_for(p.name):
                    docs.append(Document(page_content=extract(p.read_bytes(), content_type_for(p.name)),
                                         metadata={"source": str(p.relative_to(folder))}))
            return splitter.split_documents(docs)

        stack = Stack(s, ("milvus",))
        stack.up()
        try:
            store = Milvus(embedding_function=embeddings, collection_name="peer", auto_id=False,
                           connection_args={"uri": s.resolved_milvus_uri,  # the local server checks its token
                                            "token": milvus_token(s.resolved_milvus_uri) or ""},
                           consistency_level="Strong",
                           index_params={"index_type": "HNSW", "metric_type": "COSINE",
                                         "params": {"M": 16, "efConstruction": 200}})
            records = SQLRecordManager("peer", db_url=f"sqlite:///{tmp}/records.sqlite")
            records.create_schema()

            t0 = time.monotonic()
            chunks = load()
            first = index(chunks, records, store, cleanup="incremental", source_id_key="source")
            initial_s = time.monotonic() - t0
            initial_embedded = embeddings.texts

            edited = edit_tenth(paths)
            embeddings.texts = 0
            t0 = time.monotonic()
            second = index(load(), records, store, cleanup="incremental", source_id_key="source")
            incremental_s = time.monotonic() - t0
        finally:
            stack.down()
    result = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "docs": args.docs, "chunks": len(chunks), "embedding_runtime": s.embed_backend,
        "initial_load": {"seconds": round(initial_s, 1), "chunks_per_s": round(len(chunks) / initial_s, 1),
                         "chunks_embedded": initial_embedded, "index_result": first},
        "incremental": {"docs_edited": len(edited), "seconds_to_converge": round(incremental_s, 2),
                        "chunks_reembedded": embeddings.texts, "index_result": second},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
