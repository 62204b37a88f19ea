"""milvus-lite's gRPC server with a token check: ``python -m infra.milvus_server``.

milvus-lite (3.2) serves the Milvus protocol with ``add_insecure_port`` and checks no
credentials, so on a shared machine any local user could read and change the index with
plain pymilvus. This runs the same server (milvus-lite's own servicer and storage, in this
process) with a gRPC server interceptor in front of every method: a call whose
``authorization`` metadata is not the token of ``--token-file`` is refused with
UNAUTHENTICATED before milvus-lite sees it. pymilvus sends ``base64(token)`` there when a
client is made with ``token=`` (``consumers.milvus.milvus_client`` does). The token is
read from a file (0600, made by ``stack up``), never from the command line, where ``ps``
would show it. No proxy hop: the check costs one comparison per call (bench note in
docs/security.md).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc


class TokenCheck(grpc.ServerInterceptor):
    """Refuse every call whose ``authorization`` metadata is not ``base64(token)``."""

    def __init__(self, token: str) -> None:
        self._expected = base64.b64encode(token.encode())

        def deny(_request: bytes, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid token is required (authorization metadata)")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        got: str | bytes = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                got = value
                break
        if isinstance(got, str):
            got = got.encode()
        if hmac.compare_digest(got, self._expected):
            return continuation(handler_call_details)
        return self._deny


def build_server(data_dir: str, token: str, max_workers: int = 10):  # type: ignore[no-untyped-def]
    """(server, db): milvus-lite's servicer on its storage behind :class:`TokenCheck` (not started, no port)."""
    from milvus_lite.adapter.grpc import server as lite_server
    from milvus_lite.adapter.grpc.servicer import MilvusServicer
    from milvus_lite.db import MilvusLite
    from pymilvus.grpc_gen import milvus_pb2_grpc

    size = getattr(lite_server, "_MAX_MESSAGE_SIZE", 256 * 1024 * 1024)
    db = MilvusLite(data_dir)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)],
                         interceptors=[TokenCheck(token)])
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(MilvusServicer(db), server)
    return server, db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.milvus_server", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", required=True, type=Path, help="a file holding the token (first line)")
    parser.add_argument("--max-workers", type=int, default=10)
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve TLS (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    args = parser.parse_args(argv)
    token = args.token_file.read_text(encoding="utf-8").strip()
    if len(token) < 32:
        parser.error(f"{args.token_file} holds no usable token")
    server, db = build_server(args.data_dir, token, args.max_workers)
    if args.tls_cert and args.tls_key:
        creds = grpc.ssl_server_credentials([(args.tls_key.read_bytes(), args.tls_cert.read_bytes())])
        server.add_secure_port(f"{args.host}:{args.port}", creds)
    else:
        server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    print(f"milvus-lite gRPC server (token required) on {args.host}:{args.port}, data {args.data_dir}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.stop(grace=5).wait()
        db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
