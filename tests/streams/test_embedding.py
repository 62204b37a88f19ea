"""The OpenAI-compatible embedder against a local HTTP server speaking that API's shape
(POST /v1/embeddings → {"data": [{"index", "embedding"}]}), and the local model's basics: the
default runtime (prebuilt int8 ONNX, no PyTorch) against fp32 reference vectors committed in
tests/data/embedding, so no test needs PyTorch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from streams.embedding import OpenAIEmbedder, TransientEmbeddingError

ROOT = Path(__file__).resolve().parents[2]


class Endpoint(BaseHTTPRequestHandler):
    calls: list[dict] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Endpoint.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        if Endpoint.status != 200:
            self.send_response(Endpoint.status)
            self.end_headers()
            return
        # deterministic 3-d vectors, deliberately unnormalised and out of order
        data = [{"object": "embedding", "index": i, "embedding": [len(t), 1.0, 2.0]} for i, t in enumerate(body["input"])]
        payload = json.dumps({"object": "list", "data": list(reversed(data)), "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint():
    Endpoint.calls, Endpoint.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_compatible_endpoint(endpoint):
    emb = OpenAIEmbedder(endpoint, "bge-small", api_key="s3cret", batch_size=2)
    assert emb.dim == 3
    vectors = emb.embed(["a", "bbb", "cc"])
    assert [c["path"] for c in Endpoint.calls] == ["/v1/embeddings"] * 3  # probe + 2 batches of ≤ 2
    assert Endpoint.calls[-1]["model"] == "bge-small" and Endpoint.calls[-1]["auth"] == "Bearer s3cret"
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-6) for v in vectors)  # normalised
    assert vectors[1][0] > vectors[0][0]  # order restored by "index"


def test_busy_endpoint_is_transient(endpoint):
    emb = OpenAIEmbedder(endpoint, "m")
    Endpoint.status = 503
    with pytest.raises(TransientEmbeddingError, match="503"):
        emb.embed(["x"])


def test_unreachable_endpoint_is_transient():
    with pytest.raises(TransientEmbeddingError, match="unreachable"):
        OpenAIEmbedder("http://127.0.0.1:1/v1", "m")


def test_local_model_is_real_and_offline():
    from streams.embedding import LocalEmbedder

    emb = LocalEmbedder()
    a, b, c = emb.embed(["The invoice is overdue.", "Payment for the bill is late.", "A cat sleeps on the sofa."])
    cos = lambda x, y: sum(i * j for i, j in zip(x, y))  # noqa: E731 - vectors are normalised
    assert emb.dim == 384 and len(a) == 384
    assert cos(a, b) > cos(a, c) + 0.2  # related sentences are closer: a real model, not a stub


def test_the_default_runtime_loads_no_pytorch():
    """The default install has no PyTorch; the default runtime must not reach for it."""
    code = ("import sys; from ragstream.settings import load_settings; from streams.embedding import make_embedder, "
            "LocalEmbedder; e = make_embedder(load_settings()); assert isinstance(e, LocalEmbedder), e; "
            "e.embed(['x']); bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]; "
            "assert not bad, bad; print(e.model_id)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTREAM_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    from streams.embedding import LOCAL_MODEL_ID

    assert out.stdout.strip() == LOCAL_MODEL_ID


REFERENCE = Path(__file__).resolve().parents[1] / "data" / "embedding"


def test_the_default_model_keeps_the_fp32_models_vectors_and_neighbours():
    """The prebuilt int8 model against vectors computed once with the fp32 PyTorch model (the
    previous default; tests/data/embedding/make_reference.py): close vectors, the same nearest
    passages for every query, the same answers found. Its own model id: stored fp32 vectors
    are not reused for it."""
    import numpy as np

    from streams.embedding import FP32_MODEL_ID, LocalEmbedder

    data = json.loads((REFERENCE / "texts.json").read_text())
    texts = data["passages"] + data["queries"]
    ref = np.load(REFERENCE / "reference.npy")
    emb = LocalEmbedder()
    assert emb.model_id != FP32_MODEL_ID and emb.dim == ref.shape[1] == 384
    got = np.asarray(emb.embed(texts))
    assert ref.shape == got.shape == (len(texts), 384)
    cos = (got * ref).sum(axis=1)
    assert cos.min() > 0.995 and cos.mean() > 0.999, (cos.min(), cos.mean())
    n = len(data["passages"])

    def ranking(v: np.ndarray) -> np.ndarray:
        return np.argsort(-(v[n:] @ v[:n].T), axis=1)

    want, have = ranking(ref), ranking(got)
    assert (want[:, 0] == have[:, 0]).all()  # every query's nearest passage is unchanged
    assert np.mean([len(set(a[:5]) & set(b[:5])) / 5 for a, b in zip(want, have)]) >= 0.95
    answers = np.asarray(data["answers"])
    assert (have[:, 0] == answers).mean() == (want[:, 0] == answers).mean() >= 0.9  # hit@1, as before
    # order and batch boundaries do not change a text's vector
    assert np.allclose(emb.embed(texts[::-1])[::-1], got, atol=1e-5)


def test_the_default_model_file_is_the_pinned_one(monkeypatch):
    from streams import embedding

    monkeypatch.setattr(embedding, "LOCAL_MODEL_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="sha256"):
        embedding.LocalEmbedder()


def test_the_pytorch_runtimes_say_which_extra_they_need(monkeypatch):
    from ragstream.settings import load_settings
    from streams.embedding import make_embedder

    for module in ("sentence_transformers", "torch", "transformers"):
        monkeypatch.setitem(sys.modules, module, None)  # as on a default install: not importable
    with pytest.raises(RuntimeError, match=r"\[torch\]"):
        make_embedder(load_settings(embed_backend="local"))
