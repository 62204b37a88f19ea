"""How many chunks of the real-world corpus (bench/realworld.py: this machine's package
documentation) repeat a text another chunk already has: what embedding identical texts once
(streams/stages.py, EmbedStage) saves the embed stage.

    .venv/bin/python bench/chunk_repeats.py [SMALL_FILES]   # default: 265 small files + the 3 largest
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.realworld import extracted  # noqa: E402
from ragstream.settings import load_settings  # noqa: E402
from streams.chunking import Chunker  # noqa: E402
from streams.embedding import token_counter  # noqa: E402


def main() -> None:
    small = int(sys.argv[1]) if len(sys.argv) > 1 else 265
    s = load_settings()
    chunker = Chunker(count=token_counter(s), max_tokens=s.chunk_max_tokens, overlap_tokens=s.chunk_overlap_tokens)
    manifest, docs = extracted(small=small, large=3)
    texts = [c.text for path, text in docs for c in chunker.chunk(f"fs:{path}", text)]
    counts = collections.Counter(texts)
    saved = len(texts) - len(counts)
    print(f"files {len(manifest)}, chunks {len(texts)}, distinct texts {len(counts)}: "
          f"embedding each text once saves {saved} model calls ({saved / max(len(texts), 1):.1%})")
    print("most repeated:", [(n, t[:60]) for t, n in counts.most_common(3)])


if __name__ == "__main__":
    main()
