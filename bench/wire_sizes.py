"""Bytes per chunk on ``rag.vectors``: vectors as JSON numbers (VectorSet schema v1) against
base64 float32 (schema v2), on real chunks of real documents.

    .venv/bin/python bench/wire_sizes.py [--docs 40]     # writes bench/results/wire_sizes.json

Chunks come from this machine's package documentation (bench/realworld.py), chunked by the
pipeline's chunker and embedded by its default runtime; each document's VectorSet is encoded
both ways. Also reported: how many documents' VectorSets would exceed the broker's default
1 MB limit in each encoding (those travel by claim check).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.realworld import assemble  # noqa: E402
from producers.extract import content_type_for, extract  # noqa: E402
from ragstream.settings import load_settings  # noqa: E402
from schemas.events import EmbeddedChunk, VectorSet  # noqa: E402
from schemas.serde import encode  # noqa: E402
from streams.chunking import Chunker  # noqa: E402
from streams.embedding import make_embedder  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "wire_sizes.json"
LIMIT = 1_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=40, help="small documents besides the 3 largest (default 40)")
    ap.add_argument("--large", type=int, default=1, help="how many of the largest documents to add (default 1)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    settings = load_settings()
    embedder = make_embedder(settings)
    chunker = Chunker(count=embedder.count_tokens, max_tokens=settings.chunk_max_tokens,
                      overlap_tokens=settings.chunk_overlap_tokens)
    v1_bytes = v2_bytes = chunks = 0
    over = {"v1": 0, "v2": 0}
    per_doc = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = assemble(Path(tmp), small=args.docs, large=args.large)
        for m in manifest:
            path = Path(tmp) / m["path"]
            text = extract(path.read_bytes(), content_type_for(path.name))
            cs = chunker.chunk(f"doc:{m['path']}", text)
            if not cs:
                continue
            vectors = embedder.embed([c.text for c in cs])
            vs = VectorSet(source="doc", doc_id=f"doc:{m['path']}", op="upsert", version=1, source_kind="filesystem",
                           chunker="structural-v1", model=embedder.model_id, dim=embedder.dim,
                           chunks=tuple(EmbeddedChunk(**c.model_dump(), vector=v) for c, v in zip(cs, vectors)))
            v2 = len(encode(vs))
            as_v1 = json.loads(encode(vs))
            as_v1["schema_version"] = 1
            for c, full in zip(as_v1["chunks"], vs.chunks):
                c["vector"] = full.floats()
            v1 = len(json.dumps(as_v1, separators=(",", ":")).encode())
            v1_bytes, v2_bytes, chunks = v1_bytes + v1, v2_bytes + v2, chunks + len(cs)
            over["v1"] += v1 > LIMIT
            over["v2"] += v2 > LIMIT
            per_doc.append({"doc": m["path"], "chunks": len(cs), "v1_bytes": v1, "v2_bytes": v2})
    out = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "documents": len(per_doc), "chunks": chunks, "model": embedder.model_id, "dim": embedder.dim,
        "bytes_per_chunk": {"v1_json_numbers": round(v1_bytes / chunks), "v2_base64_float32": round(v2_bytes / chunks)},
        "ratio_v2_to_v1": round(v2_bytes / v1_bytes, 3),
        "median_chunks_per_doc": statistics.median(d["chunks"] for d in per_doc),
        "max_chunks_fitting_1mb": {"v1": int(LIMIT // (v1_bytes / chunks)), "v2": int(LIMIT // (v2_bytes / chunks))},
        "documents_over_1mb": over,
        "per_document": per_doc,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "per_document"}, indent=2))


if __name__ == "__main__":
    main()
