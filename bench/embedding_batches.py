"""How many padded tokens the default ONNX embedder should put in one model call.

    .venv/bin/python bench/embedding_batches.py [--docs 100] [--budgets 4096,2048,1024,512,256]
                                                # writes bench/results/embedding_batches.json

Chunks two corpora with the pipeline's own chunker (200 tokens, as the chunk stage): the
synthetic benchmark corpus (bench/corpus.py) and this machine's package documentation
(bench/realworld.py, small files only). For every token budget
(``streams.embedding.TOKEN_BUDGET``: a batch holds at most budget / longest-text chunks, and
at most 64), a fresh process loads the default embedder, warms up on one batch, embeds every
chunk once and reports chunks/s, CPU seconds and its peak resident memory (VmHWM: what an
embed worker holds, since ONNX Runtime's arena keeps the largest batch's activations). The
vectors of every budget are compared with the first budget's (lowest cosine): padding is
masked, so they should agree to float rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "embedding_batches.json"


def worker(budget: str, chunks_file: str, out_file: str) -> None:
    """One budget in this (fresh) process."""
    import time

    import numpy as np

    from ragstream.settings import load_settings
    from streams import embedding

    embedding.TOKEN_BUDGET = int(budget)
    texts = json.loads(Path(chunks_file).read_text())
    embedder = embedding.make_embedder(load_settings())
    embedder.embed(texts[:64])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    np.save(out_file, vectors)
    status = Path("/proc/self/status").read_text()
    peak_kib = int(status.split("VmHWM:")[1].split()[0])
    print(json.dumps({"seconds": round(seconds, 2), "chunks_per_s": round(len(texts) / seconds, 1),
                      "cpu_seconds": round(cpu, 1), "peak_rss_mib": round(peak_kib / 1024)}))


def corpus_texts(kind: str, folder: Path, docs: int) -> list[str]:
    from producers.extract import content_type_for, extract
    from streams.chunking import Chunker
    from streams.embedding import TokenCounter

    if kind == "synthetic":
        from bench.corpus import generate

        paths = generate(folder, docs)
    else:
        from bench.realworld import assemble

        paths = [folder / m["path"] for m in assemble(folder, small=docs, large=0)]
    chunker = Chunker(count=TokenCounter(), max_tokens=200, overlap_tokens=24)
    return [c.text for p in paths
            for c in chunker.chunk(f"bench:{p.name}", extract(p.read_bytes(), content_type_for(p.name)))]


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100, help="documents per corpus (default 100)")
    ap.add_argument("--budgets", default="4096,2048,1024,512,256", help="padded tokens per call to compare")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    result: dict = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "docs": args.docs, "threads": os.cpu_count(), "corpora": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("synthetic", "realworld"):
            texts = corpus_texts(kind, Path(tmp) / kind, args.docs)
            chunks_file = Path(tmp) / f"{kind}.json"
            chunks_file.write_text(json.dumps(texts))
            runs, first = {}, None
            for budget in budgets:
                out = Path(tmp) / f"{kind}-{budget}.npy"
                proc = subprocess.run([sys.executable, __file__, "--worker", str(budget), str(chunks_file), str(out)],
                                      capture_output=True, text=True, check=True,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                vectors = np.load(out)
                first = vectors if first is None else first
                run["lowest_cosine_vs_first"] = round(float((vectors * first).sum(axis=1).min()), 5)
                runs[str(budget)] = run
                print(kind, budget, run, flush=True)
            result["corpora"][kind] = {"chunks": len(texts), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
    else:
        main()
