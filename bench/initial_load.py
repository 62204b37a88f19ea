"""Initial load: documents/s and chunks/s end to end, against the embedding model alone.

    .venv/bin/python bench/initial_load.py [--docs 200]   # writes bench/results/initial_load.json

Generates the corpus (bench/corpus.py), starts a private stack with the four workers,
publishes the folder and times first publish → every stage caught up (all chunks in
Milvus). In the same run it embeds the very same chunk texts with the same model in this
process (batch 64): the ceiling. Reports the ratio, each stage's busy time (from the
workers' ``ragstream_stage_processing_seconds_sum``) and each worker's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import generate  # noqa: E402
from infra.stack import WORKERS, isolated_settings, rss_bytes, running_pipeline  # noqa: E402
from producers.extract import content_type_for, extract  # noqa: E402
from producers.filesystem import FilesystemSource  # noqa: E402
from ragstream.admin import wait_drained  # noqa: E402
from streams.chunking import Chunker  # noqa: E402
from streams.embedding import LocalEmbedder, TokenCounter  # noqa: E402
from streams.worker import STAGES, metrics_port  # noqa: E402


def stage_seconds(settings, stage: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(settings, stage)}/metrics", timeout=5).read().decode()
    m = re.search(rf'^ragstream_stage_processing_seconds_sum{{stage="{stage}"}} ([0-9.e+-]+)$', body, re.M)
    return float(m.group(1)) if m else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "corpus"
        generate(folder, args.docs)
        s = isolated_settings(Path(tmp) / "home", start_timeout_s=180)
        with running_pipeline(s) as stack:
            peaks = {w: 0 for w in WORKERS}
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.is_set():
                    for w in WORKERS:
                        pid = stack[w].pid()
                        if pid:
                            peaks[w] = max(peaks[w], rss_bytes(pid) or 0)
                    time.sleep(0.5)

            threading.Thread(target=sample, daemon=True).start()
            src = FilesystemSource(s, folder)
            t0 = time.monotonic()
            stats = src.sync()
            publish_s = time.monotonic() - t0
            assert wait_drained(s, timeout=3600)
            total_s = time.monotonic() - t0
            busy = {st: round(stage_seconds(s, st), 2) for st in STAGES}
            sampling.set()
        chunker = Chunker(count=TokenCounter(), max_tokens=s.chunk_max_tokens, overlap_tokens=s.chunk_overlap_tokens)
        texts = []
        for rel in src.listing():
            texts += [c.text for c in chunker.chunk(src.doc_id(rel), extract((folder / rel).read_bytes(), content_type_for(rel)))]
    embedder = LocalEmbedder()
    embedder.embed(texts[:64])  # warm-up
    t0 = time.monotonic()
    embedder.embed(texts)
    ceiling_s = time.monotonic() - t0
    result = {
        "docs": stats.upserts,
        "chunks": len(texts),
        "pipeline": {"seconds": round(total_s, 1), "publish_seconds": round(publish_s, 1),
                     "docs_per_s": round(stats.upserts / total_s, 2), "chunks_per_s": round(len(texts) / total_s, 1)},
        "embedding_ceiling": {"seconds": round(ceiling_s, 1), "chunks_per_s": round(len(texts) / ceiling_s, 1)},
        "ratio_to_ceiling": round(ceiling_s / total_s, 3),
        "stage_busy_seconds": busy,
        "worker_peak_rss_mib": {w: round(v / 2**20) for w, v in peaks.items()},
    }
    out = ROOT / "bench" / "results" / "initial_load.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
