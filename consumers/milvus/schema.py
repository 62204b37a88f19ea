"""Milvus connection, limits, field names and the errors the sink raises."""

from __future__ import annotations

from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException
from ragstream.failures import Permanent, Transient
from ragstream.settings import MilvusTLS, system_ca_file, milvus_tls, milvus_token
from ragstream.logging import adopt_pymilvus_logging

adopt_pymilvus_logging()  # pymilvus' import set up a console handler of its own


MAX_TEXT = 65535
#: VARCHAR limits of the chunk collection, in bytes (Milvus counts UTF-8 bytes).
MAX_HEADING = 1024
MAX_TITLE = 1024
MAX_URI = 2048
MAX_ACL = 16384
MAX_SUBJECTS = 16384
_VARCHAR_LIMITS = {"chunk_id": 64, "doc_id": 2048, "source": 64, "source_kind": 32, "heading": MAX_HEADING,
                   "title": MAX_TITLE, "uri": MAX_URI, "text": MAX_TEXT, "acl": MAX_ACL, "acl_key": 32,
                   "classification": 32, "subjects": MAX_SUBJECTS, "model": 256}


#: gRPC channel options for every client: pymilvus pings every 10 s even when idle, which
#: milvus-lite's gRPC server (5-minute minimum ping interval) answers with GOAWAY
#: "too_many_pings", breaking the pooled channel under whoever uses it next.
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": False}


def milvus_client(uri: str, timeout: float | None = None, token: str | None = None) -> MilvusClient:
    """The one way to make a Milvus client (pymilvus pools channels per address and token: a
    client created with other options would share, and keep, the first one's).

    It sends ``token``, or the one the settings registered for ``uri``
    (:func:`ragstream.settings.milvus_token`: ``RAGSTREAM_MILVUS_TOKEN``, or the local
    milvus-lite server's generated token, or ``root:<it>`` for the local Milvus standalone), as
    gRPC ``authorization`` metadata; an ``https://`` URI is TLS, checked against
    ``RAGSTREAM_MILVUS_CA_FILE`` when set, presenting ``RAGSTREAM_MILVUS_CLIENT_CERT_FILE``/
    ``_KEY_FILE`` when set (mutual TLS). A ``.db`` URI (embedded
    milvus-lite) is served by this process on a loopback port behind a random token only it
    knows (:func:`consumers.milvus.lite_server.embedded`), not by pymilvus' open server."""
    if uri.endswith(".db"):
        from consumers.milvus.lite_server import embedded

        uri, token = embedded(uri)
    token = token if token is not None else milvus_token(uri)
    extra: dict[str, object] = {"token": token} if token else {}
    tls = milvus_tls(uri)
    if tls is not None and tls.client_cert_file is not None:
        # pymilvus' two-way TLS: all three files (the CA as a file: the system's bundle if unset).
        extra |= {"secure": True, "client_pem_path": str(tls.client_cert_file),
                  "client_key_path": str(tls.client_key_file), "ca_pem_path": str(tls.ca_file or system_ca_file())}
    elif tls is not None and tls.ca_file is not None:
        extra |= {"secure": True, "server_pem_path": str(tls.ca_file)}
    try:
        return MilvusClient(uri=uri, timeout=timeout, grpc_options=dict(GRPC_OPTIONS), **extra)
    except MilvusException as exc:
        reason = _tls_refusal(uri, tls) if uri.startswith("https://") else None
        if reason is None:
            raise
        raise MilvusException(code=exc.code, message=f"{exc.message}: the TLS handshake failed ({reason})") from None


def _tls_refusal(uri: str, tls: MilvusTLS | None) -> str | None:
    """Why a TLS connection to ``uri`` with these files fails (the SSL library's reason, e.g.
    "CERTIFICATE_VERIFY_FAILED", or a server hanging up right after the handshake: it refused
    the client certificate, or its absence), or None if nothing is wrong at the TLS level.
    gRPC reports only "unavailable"; this names the cause."""
    import socket
    import ssl
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls and tls.ca_file else None)
    ctx.set_alpn_protocols(["h2"])
    try:
        if tls is not None and tls.client_cert_file is not None:
            ctx.load_cert_chain(str(tls.client_cert_file), str(tls.client_key_file))
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=parsed.hostname) as conn:
                conn.settimeout(2)
                try:
                    # TLS 1.3: the server checks the client certificate after the client's side
                    # of the handshake is done; a gRPC server that refuses it hangs up (or
                    # sends an alert), one that accepts it speaks HTTP/2 first.
                    if conn.recv(1) == b"":
                        given = "the one of RAGSTREAM_MILVUS_CLIENT_CERT_FILE" if tls and tls.client_cert_file \
                            else "none was given: RAGSTREAM_MILVUS_CLIENT_CERT_FILE/_KEY_FILE"
                        return ("the server hung up after the handshake: it refused the client certificate, "
                                f"{given}")
                except (TimeoutError, socket.timeout):
                    return None
    except ssl.SSLError as exc:
        return exc.reason or type(exc).__name__
    except OSError:
        return None
    return None


class TransientIndexError(Transient):
    """Milvus is unreachable or busy: retry with backoff (within the budget)."""


class IndexInputError(Permanent):
    """Milvus rejected this document's data (invalid for the collection's schema)."""


class IndexSchemaError(RuntimeError):
    """The collection behind the alias was made by an older ragstream (fields missing)."""


#: Fields a collection must have; an older one lacks some and must be rebuilt.
REQUIRED_FIELDS = ("chunk_id", "doc_id", "source", "source_kind", "version", "heading", "title", "uri", "text",
                   "acl", "acl_key", "classification", "subjects", "retain_until", "model", "vector")

#: Optional fields (a collection made before them lacks them and is still served): the BM25
#: output of hybrid search, and the document's modification time (epoch seconds, 0 unknown: the source gave no ``modified_at``).
SPARSE_FIELD = "sparse"
MODIFIED_FIELD = "modified"
#: How ``text`` is split for BM25: Unicode word boundaries, lower-cased (no stemming, no stop
#: words: an identifier or a version number is one token or several, never dropped).
ANALYZER = {"tokenizer": "standard", "filter": ["lowercase"]}
#: Search modes; hybrid is the default (bench/README.md, "Search quality").
MODES = ("hybrid", "dense", "lexical")
#: The mode a search runs in when none is asked for (chosen by bench/search_quality.py).
DEFAULT_MODE = "hybrid"
#: Reciprocal rank fusion constant (Cormack et al.; Milvus' RRFRanker default).
RRF_K = 60
#: Weight of the BM25 leg in the fusion when the query is a natural-language question ("how
#: do I …", "… ?") with no identifier in it: the dense leg weighs 1. Such a query's common
#: words ("install", "file") pull in chunks that repeat them; its meaning is the dense leg's
#: strength (bench/README.md, "Search quality": chosen on 12 questions, checked on 16 more).
QUESTION_LEXICAL_WEIGHT = 0.3
#: Candidates each leg contributes to the fusion: at least this many, or 3x the page.
FUSION_CANDIDATES = 30
#: At most this many verbatim identifiers are looked up per query (one BM25 lookup each).
EXACT_TERMS_MAX = 3
#: The verbatim leg looks for an identifier among the chunks the legs found; when none holds
#: it, among the chunks BM25 ranks best for the identifier alone, this many: an index lookup;
#: a ``like`` scan of every visible chunk (over a second at 100k chunks on milvus-lite;
#: bench/README.md, "At 100k chunks") only when none of those holds it either.
VERBATIM_CANDIDATES = 200
#: A caller who may see at least this share of the rows (AclSets.share) gets dense search without the
#: ACL filter in Milvus: the ``limit`` / share x POSTFILTER_OVERSAMPLE nearest chunks (at most
#: POSTFILTER_MAX), kept when their ACL set is the caller's, with a filtered search when fewer
#: than ``limit`` remain. A long ``acl_key in [...]`` (1,850 keys for a caller who sees 18.5%)
#: costs a Milvus server more than the unfiltered walk (bench/README.md, ACL search on the
#: real Milvus server).
POSTFILTER_MIN_SHARE = 0.1
POSTFILTER_OVERSAMPLE = 3
POSTFILTER_MAX = 1000
#: A caller's share of the ACL sets can be far from their share of the rows (one set may
#: hold most documents: "all staff"). Each unfiltered dense search shows what share of the
#: nearest rows the caller may see; once SHARE_OBSERVED_MIN rows have been seen, that
#: observed share replaces the estimate for these principals' sets (older rows fade: each
#: search's rows scale those before them down so that all count as at most
#: SHARE_OBSERVED_ROWS), for SHARE_OBSERVED_TTL_S, in at most SHARE_OBSERVED_KEPT entries.
SHARE_OBSERVED_MIN = 100
SHARE_OBSERVED_ROWS = 2000
SHARE_OBSERVED_TTL_S = 600.0
SHARE_OBSERVED_KEPT = 1024

#: HNSW beam width: at least EF_SEARCH, at most EF_MAX, and EF_PER_SELECTIVITY x limit /
#: the share of rows the caller may see (AclSets.share: their share of the ACL sets, or of the rows seen). A walk
#: filtered to a small share must look at more of the graph to find ``limit`` visible
#: neighbours; measured at 100k rows, recall@10 of ef 128 → 4096: 2% visible 0.49 → 0.99,
#: 0.05% visible 0.16 → 0.85, 19% visible 0.96 → 1.0 (bench/README.md).
EF_SEARCH = 128
EF_MAX = 4096
EF_PER_SELECTIVITY = 4
#: Above this many keys per principal, an ``acl like`` scan is cheaper than the key list
#: (milvus-lite 3, measured: ~5 µs per listed key against ~7 ms per ``like`` clause at 100k
#: rows).
KEYS_PER_PRINCIPAL_MAX = 1400
#: How far behind the newest registration time a refresh looks again (writers' clocks differ).
CLOCK_SLACK_MS = 5_000
#: Every this many refreshes, fetch every set (see AclSets._refresher).
FULL_RELOAD_EVERY = 60
