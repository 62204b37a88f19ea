"""How full the chunker's chunks are on real documents, and how local an edit stays.

On the real-world corpus (bench/realworld.py: this machine's package documentation, the
265 small files and the 3 largest), with the default model's tokenizer and the default
budget (``chunk_max_tokens``), it reports the number of chunks, their token counts (median,
p10, p90, share under 50 tokens) and, per document, what one edit costs, for three kinds of
edit of one prose paragraph (chosen with a fixed seed): a sentence added ("grow"), its last
sentence removed ("shrink"), the paragraph deleted ("delete"); the chunks whose id changed
(what the embed stage re-embeds) are counted.

    .venv/bin/python bench/chunk_sizes.py [--small 265] [--out bench/results/chunk_sizes.json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.realworld import extracted  # noqa: E402
from ragstream.settings import load_settings  # noqa: E402
from streams.chunking import CHUNKER_ID, Chunker  # noqa: E402
from streams.embedding import token_counter  # noqa: E402

EDIT = " This sentence was added by an edit, and it is twelve words long."


EDITS = ("grow", "shrink", "delete")


def edited(text: str, rng: random.Random, kind: str) -> str | None:
    """The text with one of its prose paragraphs edited (None: it has none)."""
    paras = text.split("\n\n")
    prose = [i for i, p in enumerate(paras)
             if len(p.split()) >= 8 and not p.lstrip().startswith(("#", "|", "-", "*", "```"))]
    if not prose:
        return None
    i = rng.choice(prose)
    if kind == "grow":
        paras[i] = paras[i].rstrip() + EDIT
    elif kind == "shrink":
        sentences = re.split(r"(?<=[.!?])\s+", paras[i].strip())
        paras[i] = " ".join(sentences[:-1]) if len(sentences) > 1 else " ".join(paras[i].split()[: len(paras[i].split()) // 2])
    else:
        del paras[i]
    return "\n\n".join(paras)


def pct(values: list[int], q: float) -> float:
    values = sorted(values)
    return float(values[min(len(values) - 1, int(q * len(values)))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=265)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chunk_sizes.json")
    args = ap.parse_args()
    s = load_settings()
    count = token_counter(s)
    chunker = Chunker(count=count, max_tokens=s.chunk_max_tokens, overlap_tokens=s.chunk_overlap_tokens)
    rng = random.Random(7)
    tokens: list[int] = []
    changed: dict[str, list[int]] = {k: [] for k in EDITS}
    t0 = time.perf_counter()
    _, docs = extracted(small=args.small, large=3)
    for path, text in docs:
        doc_id = f"fs:{path}"
        before = chunker.chunk(doc_id, text)
        tokens += [count(c.text) for c in before]
        for kind in EDITS:
            after_text = edited(text, rng, kind)
            if after_text is not None and before:
                after = chunker.chunk(doc_id, after_text)
                changed[kind].append(len({c.chunk_id for c in after} - {c.chunk_id for c in before}))
    result = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "bench/chunk_sizes.py " + " ".join(sys.argv[1:]),
        "chunker": CHUNKER_ID,
        "budget": {"max_tokens": s.chunk_max_tokens, "overlap_tokens": s.chunk_overlap_tokens, "tokenizer": f"{s.embed_backend} ({type(count).__name__})"},
        "files": len(docs),
        "chunks": len(tokens),
        "tokens": {"total": sum(tokens), "median": statistics.median(tokens), "p10": pct(tokens, 0.10),
                   "p90": pct(tokens, 0.90), "under_50_share": round(sum(t < 50 for t in tokens) / len(tokens), 3)},
        "one_edit": {kind: {"documents": len(n), "chunks_changed_mean": round(statistics.mean(n), 2),
                            "chunks_changed_p95": pct(n, 0.95), "chunks_changed_max": max(n)}
                     for kind, n in changed.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
