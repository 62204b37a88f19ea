"""milvus-lite's gRPC server behind a token check.

milvus-lite (3.2) serves the Milvus protocol with ``add_insecure_port`` and checks no
credentials: on a shared machine any local user could read and change the index with plain
pymilvus. Here milvus-lite's own servicer and storage run behind a gRPC server interceptor
(:class:`TokenCheck`) that refuses, with UNAUTHENTICATED, every call whose ``authorization``
metadata is not ``base64(token)`` (what pymilvus sends for ``token=``). Used by

* the local stack's server (``python -m infra.milvus_server``, token in the home), and
* :func:`embedded`: a ``.db`` URI. pymilvus would start milvus-lite's open server on a free
  loopback port for it; :func:`consumers.milvus.milvus_client` starts this one instead, with
  a random token only this process knows.
"""

from __future__ import annotations

import atexit
import base64
import hmac
import os
import secrets
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc


class TokenCheck(grpc.ServerInterceptor):
    """Refuse every call whose ``authorization`` metadata is not ``base64(token)`` or
    ``base64("root:" + token)``: the home's secret is root's password on the Milvus
    standalone engine, and ragstream's clients send it in that form to both engines (a bare
    secret sent to the standalone would be written to its log as an unverifiable API key)."""

    def __init__(self, token: str) -> None:
        from ragstream.settings import MILVUS_SERVER_USER

        self._accepted = (base64.b64encode(token.encode()), base64.b64encode(f"{MILVUS_SERVER_USER}:{token}".encode()))

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
        matches = [hmac.compare_digest(got, accepted) for accepted in self._accepted]  # both, always
        if any(matches):
            return continuation(handler_call_details)
        return self._deny


def build_server(data_dir: str, token: str, max_workers: int = 10) -> tuple[grpc.Server, Any]:
    """(server, db): milvus-lite's servicer on its storage behind :class:`TokenCheck` (not started, no port)."""
    from milvus_lite.adapter.grpc import server as lite_server
    from milvus_lite.adapter.grpc.servicer import MilvusServicer
    from milvus_lite.db import MilvusLite
    from pymilvus.grpc_gen import milvus_pb2_grpc

    from consumers.milvus import lite_bm25, lite_hnsw, lite_live

    lite_bm25.install()  # BM25 scored with numpy, the same results as milvus-lite's own scorer
    lite_live.install()  # live rows found by hashing the suspect keys, not a Python step per row
    lite_hnsw.install()  # a filter that keeps few rows gets an exact search, as in Milvus
    size = getattr(lite_server, "_MAX_MESSAGE_SIZE", 256 * 1024 * 1024)
    db = MilvusLite(data_dir)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)],
                         interceptors=[TokenCheck(token)])
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(MilvusServicer(db), server)
    return server, db


_EMBEDDED: dict[str, tuple[grpc.Server, Any, str, str]] = {}  # data dir -> (server, db, uri, token)
_LOCK = threading.Lock()


def embedded(path: str) -> tuple[str, str]:
    """(uri, token) of this process' server for the ``.db`` data folder ``path``: started on
    first use on a free loopback port, with a random token; stopped at exit."""
    data_dir = os.path.abspath(path)
    with _LOCK:
        if data_dir not in _EMBEDDED:
            if not Path(data_dir).parent.is_dir():
                from pymilvus.exceptions import ConnectionConfigException

                raise ConnectionConfigException(message=f"Open local milvus failed, dir: {Path(data_dir).parent} "
                                                        "does not exist")
            token = secrets.token_urlsafe(32)
            server, db = build_server(data_dir, token)
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            _EMBEDDED[data_dir] = (server, db, f"http://127.0.0.1:{port}", token)
        _, _, uri, token = _EMBEDDED[data_dir]
    return uri, token


def _stop_all() -> None:
    with _LOCK:
        running = list(_EMBEDDED.values())
        _EMBEDDED.clear()
    for server, db, _, _ in running:
        try:
            # Bounded: should this run after concurrent.futures has shut the server's executor
            # down, an RPC arriving then (a client thread still polling) kills gRPC's serving
            # thread and the shutdown event is never set — an unbounded wait hung a finished
            # pytest run.
            server.stop(grace=2).wait(timeout=5)
        finally:
            db.close()


# Stop before concurrent.futures joins its executors' threads at exit (threading's exit hooks
# run last-registered first, and before atexit's): a gRPC worker waiting for a request that
# will never come would block that join forever. atexit as well, for a process that never
# imported threading's shutdown path (a second call finds nothing to stop).
threading._register_atexit(_stop_all)  # the hook concurrent.futures itself uses
atexit.register(_stop_all)
