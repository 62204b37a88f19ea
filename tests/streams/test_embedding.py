"""The OpenAI-compatible embedder against a local HTTP server speaking that API's shape
(POST /v1/embeddings → {"data": [{"index", "embedding"}]}), and the local model's basics."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.embedding import OpenAIEmbedder, TransientEmbeddingError


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


def test_onnx_runtimes_agree_with_the_pytorch_model(tmp_path):
    """fp32 ONNX gives the baseline's vectors; int8 stays close and says it is a different
    model (its vectors must not be mixed with fp32 ones in one index)."""
    import numpy as np

    from streams.embedding import LocalEmbedder, OnnxEmbedder

    texts = ["short", "The storage migration ships in the third quarter, after the audit. " * 30,
             "Quarterly figures are in the shared drive.", "Meal allowance when travelling: 40 EUR a day."]
    base = np.asarray(LocalEmbedder().embed(texts))
    fp32 = OnnxEmbedder(tmp_path)
    int8 = OnnxEmbedder(tmp_path, quantized=True)
    assert fp32.model_id == LocalEmbedder.model_id and int8.model_id != fp32.model_id
    assert fp32.dim == int8.dim == 384
    assert ((np.asarray(fp32.embed(texts)) * base).sum(axis=1) > 0.9999).all()
    assert ((np.asarray(int8.embed(texts)) * base).sum(axis=1) > 0.95).all()
    # order and batch boundaries do not change a text's vector
    shuffled = fp32.embed(texts[::-1])[::-1]
    assert np.allclose(shuffled, fp32.embed(texts), atol=1e-5)
