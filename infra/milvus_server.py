"""milvus-lite's gRPC server with a token check: ``python -m infra.milvus_server``.

milvus-lite (3.2) serves the Milvus protocol with ``add_insecure_port`` and checks no
credentials, so on a shared machine any local user could read and change the index with
plain pymilvus. This runs the same server (milvus-lite's own servicer and storage, in this
process; consumers/milvus/lite_server.py) with a gRPC server interceptor in front of every
method: a call whose
``authorization`` metadata is not the token of ``--token-file`` is refused with
UNAUTHENTICATED before milvus-lite sees it. pymilvus sends ``base64(token)`` there when a
client is made with ``token=`` (``consumers.milvus.milvus_client`` does). The token is
read from a file (0600, made by ``stack up``), never from the command line, where ``ps``
would show it. No proxy hop: the check costs one comparison per call (bench note in
docs/security.md). ``--tls-cert``/``--tls-key`` serve TLS; ``--tls-client-ca`` also demands a
client certificate signed by that CA (mutual TLS), refusing the handshake otherwise.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

import grpc

from consumers.milvus.lite_server import build_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.milvus_server", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", required=True, type=Path, help="a file holding the token (first line)")
    parser.add_argument("--max-workers", type=int, default=10)
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve TLS (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", type=Path,
                        help="PEM CA bundle: require a client certificate it signed (mutual TLS; with --tls-cert)")
    args = parser.parse_args(argv)
    token = args.token_file.read_text(encoding="utf-8").strip()
    if len(token) < 32:
        parser.error(f"{args.token_file} holds no usable token")
    server, db = build_server(args.data_dir, token, args.max_workers)
    if args.tls_client_ca and not (args.tls_cert and args.tls_key):
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if args.tls_cert and args.tls_key:
        client_ca = args.tls_client_ca.read_bytes() if args.tls_client_ca else None
        creds = grpc.ssl_server_credentials([(args.tls_key.read_bytes(), args.tls_cert.read_bytes())],
                                            root_certificates=client_ca, require_client_auth=client_ca is not None)
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
