"""The retrieval API (FastAPI): search, documents, data-subject requests and dead letters.

``ragstream api`` serves it; the OpenAPI document is at ``/openapi.json`` (``/docs`` for
people). Every endpoint but ``/healthz`` and ``/readyz`` authenticates
(:mod:`ragstream.auth`: OIDC bearer JWTs, session tokens, API keys; LDAP through
``POST /v1/auth/login``), is rate-limited per identity, and checks one RBAC permission;
denials are audited. Search filters by the caller's principals inside Milvus (pre-filter):
no principals, no results.

What reaches the application is bounded before anything is parsed (:class:`RequestGuard`,
:func:`serve`): request headers must be complete within ``api_header_timeout_s``, a body
larger than ``api_max_body_bytes`` is refused with 413 without being read, a body must
arrive within ``api_body_timeout_s`` (408), and a caller without valid credentials is
rate-limited per client address before its body is read (so malformed JSON costs it too).
The client address is the TCP peer; ``X-Forwarded-For`` counts only from the proxies listed
in ``api_trusted_proxies``.

Errors are JSON ``{"error": ..., "request_id": ...}`` with no stack trace or internal
detail; every response carries ``X-Request-ID`` and every log line of the request has it.
"""

# No `from __future__ import annotations`: FastAPI resolves the endpoint annotations,
# which refer to names local to create_app().

import asyncio
import math
import re
import threading
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, AsyncIterator, Callable, Literal

from fastapi import Depends, FastAPI, Form, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, Field
from structlog.contextvars import bind_contextvars, clear_contextvars

from ragstream.api_graph import add_graph_routes
from ragstream.auth import AuthError, Authenticator, Identity, load_auth_config
from ragstream.logging import get_logger
from ragstream.settings import Settings
from schemas.events import SOURCE_ID

log = get_logger(__name__)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
#: A doc_id as the contracts define it (``<source>:<native id>``), without control characters:
#: they can name no document the API could show, and they break Milvus' expression parser.
DOC_ID = r"^[a-z0-9][a-z0-9_.-]{0,63}:[^\x00-\x1f\x7f]+$"
#: How long a readiness answer is reused: probes cost the index one query per this, not per call.
READY_TTL_S = 5.0
#: Paths that need no rate limit (cheap, constant answer).
UNLIMITED = frozenset({"/healthz"})


def _epoch(when: datetime | None) -> int | None:
    """Epoch seconds; a time without a zone is read as UTC."""
    if when is None:
        return None
    from datetime import timezone

    return int((when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp())


def printable(text: str) -> str:
    """``text`` for a log line: control characters escaped, so a path cannot forge lines."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")[:2048]


class RequestGuard:
    """Outermost ASGI layer: refuse a body over ``max_body`` (413, from ``Content-Length``
    before reading, or as soon as a chunked body passes it) and a body that does not arrive
    within ``timeout_s`` (408). The refusal is sent at once with ``Connection: close``; the
    application then sees a disconnect and whatever it sends is dropped."""

    def __init__(self, app: Any, max_body: int, timeout_s: float) -> None:
        self.app = app
        self.max_body = max_body
        self.timeout_s = timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"started": False, "refused": False, "read": 0}

        async def refuse(status: int, message: str) -> None:
            state["refused"] = True
            if state["started"]:
                return
            state["started"] = True
            rid = uuid.uuid4().hex
            body = JSONResponse({"error": message, "request_id": rid}).body
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"), (b"x-request-id", rid.encode())]})
            await send({"type": "http.response.body", "body": body})

        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            log.warning("request refused", path=printable(scope.get("path", "")), reason="body too large",
                        declared=length[:20].decode("latin-1"))
            return await refuse(413, f"request body over {self.max_body} bytes")
        deadline = time.monotonic() + self.timeout_s

        async def guarded_receive() -> dict:
            if state["refused"]:
                return {"type": "http.disconnect"}
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await refuse(408, f"request body not received within {self.timeout_s:g} s")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.max_body:
                    await refuse(413, f"request body over {self.max_body} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not state["refused"]:
                raise


# -- models (the published contract) -------------------------------------------------------------


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=2000, description="natural-language query, words or identifiers")
    limit: int = Field(10, ge=1, le=50)
    mode: Literal["hybrid", "dense", "lexical"] | None = Field(
        None, description="hybrid (BM25 + vectors + verbatim identifiers, fused by rank; the default), dense "
                          "(vectors only) or lexical (BM25 + verbatim identifiers)")
    sources: list[Annotated[str, Field(pattern=rf"^{SOURCE_ID}$")]] | None = Field(
        None, max_length=50, description="only these sources (source ids)")
    classifications: list[Literal["public", "internal", "confidential", "restricted"]] | None = Field(
        None, description="only documents of these classifications")
    modified_after: datetime | None = Field(None, description="only documents modified at or after this time")
    modified_before: datetime | None = Field(None, description="only documents modified before this time")


class SearchHit(BaseModel):
    doc_id: str
    chunk_id: str
    source: str
    title: str
    uri: str
    heading: str
    score: float = Field(description="dense: cosine similarity; hybrid and lexical: the reciprocal-rank fusion score")
    text: str
    snippet: str = Field(description="the part of the text around what matched (whitespace collapsed)")
    highlights: list[tuple[int, int]] = Field(description="[start, end) offsets of the query's terms in snippet")


class SearchResponse(BaseModel):
    results: list[SearchHit]
    mode: str = Field(description="the mode the search ran in (dense where the index has no BM25 field)")
    request_id: str


class DocumentInfo(BaseModel):
    doc_id: str
    source: str
    source_kind: str
    title: str
    uri: str
    version: int
    classification: str
    chunks: int


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class SessionResponse(BaseModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    refresh_token: str = Field(description="good once: POST /v1/auth/refresh trades it for a new token and a new "
                                           "refresh token; presenting it twice revokes the session")
    subject: str
    roles: list[str]


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=8, max_length=256)


class RevokeSessions(BaseModel):
    subject: str = Field(min_length=3, max_length=300, pattern=r"^[a-z]+:[^\x00-\x1f\x7f|]+$")


class Revoked(BaseModel):
    revoked: int


class WhoAmI(BaseModel):
    subject: str
    provider: str
    roles: list[str]
    principals: list[str]
    permissions: list[str]


class DsrSubmit(BaseModel):
    kind: Literal["access", "erasure", "rectification", "portability"]
    framework: Literal["GDPR", "CCPA"] = "GDPR"
    tenant: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: list[str] = Field(default_factory=list, max_length=20)
    email: list[str] = Field(default_factory=list, max_length=20)
    phone: list[str] = Field(default_factory=list, max_length=20)
    subject_refs: list[str] = Field(default_factory=list, max_length=50)


class DsrAccepted(BaseModel):
    request_id: str
    kind: str
    due_at: datetime
    subject_refs: list[str]


class DeadLetterInfo(BaseModel):
    partition: int
    offset: int
    key: str | None
    topic: str | None
    error_type: str | None
    error_message: str | None
    failed_at: datetime | None


class ReplayResult(BaseModel):
    replayed: int
    unreadable: int


class WebhookAccepted(BaseModel):
    event_id: str
    doc_id: str
    version: int
    op: str


class ErrorBody(BaseModel):
    error: str
    request_id: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "not authenticated"},
    403: {"model": ErrorBody, "description": "not allowed"},
    429: {"model": ErrorBody, "description": "too many requests"},
}


# -- the app -------------------------------------------------------------------------------------


class Services:
    """What the endpoints need, created once: auth, Milvus, the model, a publisher."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator(load_auth_config(settings.auth_file), settings.home)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.limit = RateLimitItemPerMinute(self.auth.config.rate_limit.per_minute)
        self._index: Any = None
        self._embedder: Any = None
        self._publisher: Any = None
        self.webhooks = webhook_sources(settings)

    @property
    def index(self) -> Any:
        if self._index is None:
            from consumers.milvus import MilvusIndex
            from streams.embedding import model_dim

            idx = MilvusIndex(self.settings.resolved_milvus_uri, self.settings.collection, model_dim(self.settings),
                              acl_refresh_s=self.settings.acl_refresh_s,
                              search_consistency=self.settings.search_consistency)
            idx.ensure(pin=False)  # searches follow the alias: a reindex's swap shows at once
            self._index = idx
        return self._index

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from streams.embedding import make_embedder

            self._embedder = make_embedder(self.settings)
        return self._embedder

    def audit(self, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        from ragstream.publisher import Publisher
        from schemas import topics
        from schemas.events import AuditEvent
        from schemas.serde import encode

        try:
            if self._publisher is None:
                self._publisher = Publisher(self.settings, client_id="ragstream-api")
            event = AuditEvent(actor=actor, action=action, target=target, details=details)
            self._publisher.publish_raw(topics.AUDIT_EVENTS, event.event_id, encode(event))
            self._publisher.poll(0)
        except Exception as exc:  # noqa: BLE001 - auditing must not turn a 403 into a 500
            log.error("audit event not published", action=action, error=str(exc))

    def close(self) -> None:
        if self._publisher is not None:
            try:
                self._publisher.flush(10)
            except Exception as exc:  # noqa: BLE001 - shutting down: say what was lost, do not crash
                log.error("audit events not delivered at shutdown", error=str(exc))


def webhook_sources(settings: Settings) -> dict[str, Any]:
    """The webhook sources the sources file declares (validated at start-up, secrets loaded)."""
    from ragstream.connector import declared_sources

    return {src.source_id: src for src in declared_sources(settings) if src.kind == "webhook"}


def create_app(settings: Settings, *, services: Services | None = None) -> FastAPI:
    svc = services or Services(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        svc.close()

    app = FastAPI(title="ragstream retrieval API", version="1", lifespan=lifespan,
                  description="ACL-filtered search over the ragstream index, with admin endpoints for "
                              "data-subject requests and dead letters.")
    app.state.services = svc

    def request_id(request: Request) -> str:
        return getattr(request.state, "request_id", "-")

    def error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "request_id": request_id(request)}, status_code=status,
                            headers={"X-Request-ID": request_id(request), **(headers or {})})

    def client_of(request: Request) -> str:
        # The TCP peer, or what a trusted proxy says (uvicorn rewrites the client only for
        # the proxies in api_trusted_proxies; see serve()).
        return request.client.host if request.client else "-"

    def limited(key: str) -> None:
        if not svc.limiter.hit(svc.limit, key):
            raise HTTPException(429, "rate limit exceeded; retry later", headers={"Retry-After": "60"})

    async def identify(request: Request) -> None:
        """Authenticate from the headers alone, before any body is read; a caller without
        valid credentials is limited per client address here, so whatever it sends (malformed
        JSON included) costs it a hit."""
        request.state.identity, request.state.auth_error = None, None
        authorization, api_key = request.headers.get("authorization"), request.headers.get("x-api-key")
        if authorization or api_key:
            bearer = None
            if authorization:
                scheme, _, value = authorization.partition(" ")
                if scheme.lower() != "bearer" or not value.strip():
                    request.state.auth_error = "use 'Authorization: Bearer <token>'"
                bearer = value.strip()
            if request.state.auth_error is None:
                try:
                    request.state.identity = await run_in_threadpool(svc.auth.authenticate, bearer, api_key)
                except AuthError as exc:
                    request.state.auth_error = str(exc)
        if request.state.identity is None and request.url.path not in UNLIMITED:
            limited(f"anon:{client_of(request)}")

    @app.middleware("http")
    async def with_request_id(request: Request, call_next: Callable) -> Response:
        incoming = request.headers.get("x-request-id", "")
        rid = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.state.request_id = rid
        clear_contextvars()
        bind_contextvars(request_id=rid)
        t0 = time.monotonic()
        try:
            await identify(request)
            response = await call_next(request)
        except HTTPException as exc:
            response = error(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))
        except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a 500
            log.error("request failed", path=printable(request.url.path), error_type=type(exc).__name__)
            response = error(request, 500, "internal error; quote the request id when reporting it")
        response.headers["X-Request-ID"] = rid
        log.info("request", method=request.method, path=printable(request.url.path), status=response.status_code,
                 ms=round((time.monotonic() - t0) * 1000, 1))
        return response

    # Added last, so outermost: bodies are bounded before any other layer runs.
    app.add_middleware(RequestGuard, max_body=settings.api_max_body_bytes, timeout_s=settings.api_body_timeout_s)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error(request, 422, f"invalid request: {problems}")

    def require(permission: str) -> Callable[..., Identity]:
        # The header parameters only document the credentials in the OpenAPI spec; the
        # front door (identify) has already checked them.
        def dependency(request: Request, authorization: Annotated[str | None, Header()] = None,
                       x_api_key: Annotated[str | None, Header()] = None) -> Identity:
            who = getattr(request.state, "identity", None)
            if who is None:
                message = getattr(request.state, "auth_error", None) or \
                    "authentication required: send 'Authorization: Bearer <token>' or 'X-API-Key'"
                raise HTTPException(401, message, {"WWW-Authenticate": "Bearer"})
            bind_contextvars(subject=who.subject)
            limited(who.subject)
            if not svc.auth.rbac.allows(who.roles, permission):
                svc.audit(who.subject, "auth.denied", request.url.path,
                          {"permission": permission, "roles": list(who.roles), "provider": who.provider,
                           "request_id": request_id(request)})
                raise HTTPException(403, f"permission {permission} is required")
            return who
        dependency.__name__ = f"require_{permission.replace(':', '_').replace('*', 'any')}"
        return dependency

    # -- webhooks (authenticated by their signature, not by a caller's credentials) --------------
    @app.post("/v1/webhooks/{source_id}", tags=["webhooks"], status_code=202, response_model=WebhookAccepted,
              responses={401: ERRORS[401], 404: {"model": ErrorBody}, 409: {"model": ErrorBody},
                         422: {"model": ErrorBody}, 429: ERRORS[429], 503: {"model": ErrorBody}})
    async def webhook(request: Request, source_id: Annotated[str, Path(pattern=f"^{SOURCE_ID}$")]) -> WebhookAccepted:
        """Receive one signed ChangeEvent from a system that pushes (see producers/webhook):
        ``X-Ragstream-Timestamp`` and ``X-Ragstream-Signature: v1=<HMAC-SHA256>``; optional
        ``Idempotency-Key``. 202 once the broker acknowledged it; refused requests publish nothing."""
        from producers.webhook import WebhookRefused

        source = svc.webhooks.get(source_id)
        if source is None:
            raise HTTPException(404, f"no webhook source {source_id!r} is declared")
        body = await request.body()
        try:
            event = await run_in_threadpool(source.receive, body, dict(request.headers))
        except WebhookRefused as exc:
            log.warning("webhook refused", source=source_id, status=exc.status, reason=str(exc))
            svc.audit(f"webhook:{source_id}", "webhook.refused", source_id,
                      {"status": exc.status, "reason": str(exc)[:200], "client": client_of(request),
                       "request_id": request_id(request)})
            raise HTTPException(exc.status, str(exc), {"Retry-After": "5"} if exc.status == 503 else None) from None
        return WebhookAccepted(event_id=event.event_id, doc_id=event.doc_id, version=event.version, op=str(event.op))

    @app.get("/v1/admin/status", tags=["admin"], responses=ERRORS)
    def admin_status(_: Annotated[Identity, Depends(require("system:monitor"))],
                     window: Annotated[float, Query(ge=1, le=60)] = 5.0) -> dict[str, Any]:
        """Per stage lag, throughput, busy share, errors, dead letters, time to drain, the
        index size, and recommendations computed from them (``ragstream status``)."""
        from ragstream.status import collect

        return collect(svc.settings, window_s=window).to_dict()

    @app.get("/v1/webhooks/schema", tags=["webhooks"])
    def webhook_schema() -> dict[str, Any]:
        """The JSON Schema of the payload a webhook accepts (a ChangeEvent)."""
        from schemas.events import ChangeEvent

        return ChangeEvent.model_json_schema(mode="validation")

    # -- probes ----------------------------------------------------------------------------------
    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    ready = {"at": -math.inf, "ok": False}
    ready_lock = threading.Lock()

    @app.get("/readyz", tags=["probes"], responses={429: ERRORS[429], 503: {"model": ErrorBody}})
    def readyz(request: Request) -> Any:
        """Readiness: the index answered within the last few seconds (one cheap query per
        READY_TTL_S at most, whoever asks; rate-limited per client like any anonymous call)."""
        with ready_lock:
            if time.monotonic() - ready["at"] > READY_TTL_S:
                try:
                    svc.index.first_rows('chunk_id == ""', ["chunk_id"], limit=1)
                    ready["ok"] = True
                except Exception as exc:  # noqa: BLE001 - not ready, whatever the reason
                    log.warning("not ready", error_type=type(exc).__name__)
                    ready["ok"] = False
                ready["at"] = time.monotonic()
        if not ready["ok"]:
            return error(request, 503, "the index is not reachable")
        return {"status": "ready"}

    @app.get("/metrics", tags=["probes"], responses=ERRORS, response_class=Response)
    def metrics(_: Annotated[Identity, Depends(require("system:monitor"))]) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # -- auth ------------------------------------------------------------------------------------
    def session_response(who: Identity) -> SessionResponse:
        token, refresh = svc.auth.sessions.open(who)
        return SessionResponse(token=token, expires_in=svc.auth.sessions.ttl_s, refresh_token=refresh,
                               subject=who.subject, roles=list(who.roles))

    @app.post("/v1/auth/login", tags=["auth"], response_model=SessionResponse,
              responses={401: ERRORS[401], 404: {"model": ErrorBody}, 429: ERRORS[429], 503: {"model": ErrorBody}})
    def login(request: Request, body: LoginRequest) -> SessionResponse:
        """LDAP / Active Directory bind; returns a short-lived session token."""
        limited(f"login:{client_of(request)}")
        if svc.auth.ldap is None:
            raise HTTPException(404, "no directory is configured for password login")
        try:
            who = svc.auth.ldap.login(body.username, body.password)
        except AuthError as exc:
            svc.audit(f"user:{printable(body.username.strip().lower()[:64])}", "auth.login_failed", "/v1/auth/login",
                      {"provider": "ldap", "request_id": request_id(request)})
            raise HTTPException(401, str(exc)) from None
        except ConnectionError as exc:
            raise HTTPException(503, str(exc)) from None
        return session_response(who)

    @app.post("/v1/auth/saml/acs", tags=["auth"], response_model=SessionResponse,
              responses={401: ERRORS[401], 404: {"model": ErrorBody}, 429: ERRORS[429]})
    def saml_acs(request: Request, SAMLResponse: Annotated[str, Form(max_length=200_000)]) -> SessionResponse:  # noqa: N803
        """SAML 2.0 assertion consumer (HTTP-POST binding); returns a short-lived session token."""
        limited(f"login:{client_of(request)}")
        if svc.auth.saml is None:
            raise HTTPException(404, "no SAML identity provider is configured")
        try:
            who = svc.auth.saml.login(SAMLResponse)
        except AuthError as exc:
            svc.audit("anonymous", "auth.login_failed", "/v1/auth/saml/acs",
                      {"provider": "saml", "request_id": request_id(request)})
            raise HTTPException(401, str(exc)) from None
        return session_response(who)

    @app.post("/v1/auth/refresh", tags=["auth"], response_model=SessionResponse,
              responses={401: ERRORS[401], 429: ERRORS[429]})
    def refresh(request: Request, body: RefreshRequest) -> SessionResponse:
        """Trade a refresh token (good once) for a new access token and refresh token."""
        limited(f"login:{client_of(request)}")
        try:
            token, new_refresh, s = svc.auth.sessions.refresh(body.refresh_token)
        except AuthError as exc:
            raise HTTPException(401, str(exc)) from None
        return SessionResponse(token=token, expires_in=svc.auth.sessions.ttl_s, refresh_token=new_refresh,
                               subject=s.subject, roles=list(s.roles))

    @app.post("/v1/auth/logout", tags=["auth"], response_model=Revoked, responses=ERRORS)
    def logout(who: Annotated[Identity, Depends(require("self:read"))]) -> Revoked:
        """End the caller's session (its access and refresh tokens stop working at once)."""
        sid = who.claims.get("sid") if who.provider.startswith("session:") else None
        return Revoked(revoked=svc.auth.sessions.revoke(sid=sid) if sid else 0)

    @app.get("/v1/auth/whoami", tags=["auth"], response_model=WhoAmI, responses=ERRORS)
    def whoami(who: Annotated[Identity, Depends(require("self:read"))]) -> WhoAmI:
        return WhoAmI(subject=who.subject, provider=who.provider, roles=list(who.roles),
                      principals=list(who.principals), permissions=sorted(svc.auth.rbac.permissions(who.roles)))

    # -- search and documents ------------------------------------------------------------------
    @app.post("/v1/search", tags=["search"], response_model=SearchResponse,
              responses={**ERRORS, 409: {"model": ErrorBody, "description": "the index cannot apply this filter "
                                                                           "(made before it): rebuild it"},
                         422: {"model": ErrorBody, "description": "invalid request"}})
    def search(request: Request, body: SearchRequest,
               who: Annotated[Identity, Depends(require("search:query"))]) -> SearchResponse:
        from consumers.milvus import DEFAULT_MODE, IndexSchemaError, SearchFilters
        from ragstream.snippets import snippet

        requested = body.mode or DEFAULT_MODE
        if not who.principals:
            return SearchResponse(results=[], mode=requested, request_id=request_id(request))  # fail closed
        after, before = _epoch(body.modified_after), _epoch(body.modified_before)
        if after is not None and before is not None and after >= before:
            raise HTTPException(422, "modified_after must be earlier than modified_before")
        filters = SearchFilters(sources=tuple(body.sources or ()), classifications=tuple(body.classifications or ()),
                                modified_after=after, modified_before=before)
        mode = svc.index.effective_mode(requested)
        vector = svc.embedder.embed([body.query])[0] if mode != "lexical" else None
        try:
            hits = svc.index.search(vector, who.principals, limit=body.limit, query=body.query, mode=mode,
                                    filters=filters)
        except IndexSchemaError as exc:
            raise HTTPException(409, str(exc)) from None
        results = []
        for h in hits:
            snip, spans = snippet(h.text, body.query)
            results.append(SearchHit(doc_id=h.doc_id, chunk_id=h.chunk_id, source=h.source, title=h.title or "",
                                     uri=h.uri or "", heading=h.heading or "", score=h.score, text=h.text,
                                     snippet=snip, highlights=spans))
        return SearchResponse(request_id=request_id(request), mode=mode, results=results)

    @app.get("/v1/documents/{doc_id:path}", tags=["documents"], response_model=DocumentInfo,
             responses={**ERRORS, 404: {"model": ErrorBody, "description": "not found, or not visible to you"}})
    def document(doc_id: Annotated[str, Path(min_length=3, max_length=2048, pattern=DOC_ID)],
                 who: Annotated[Identity, Depends(require("documents:read"))]) -> DocumentInfo:
        from consumers.milvus import acl_filter, escape_literal

        rows = []
        if who.principals:
            rows = svc.index.rows(f'doc_id == "{escape_literal(doc_id)}" and {acl_filter(who.principals)}',
                                  ["doc_id", "source", "source_kind", "title", "uri", "version", "classification"])
        if not rows:  # the same answer for "absent" and "not yours": existence does not leak
            raise HTTPException(404, "no such document visible to you")
        r = rows[0]
        return DocumentInfo(doc_id=r["doc_id"], source=r["source"], source_kind=r["source_kind"], title=r["title"],
                            uri=r["uri"], version=r["version"], classification=r["classification"], chunks=len(rows))

    # -- admin -----------------------------------------------------------------------------------
    @app.post("/v1/admin/dsr", tags=["admin"], status_code=202, response_model=DsrAccepted,
              responses={**ERRORS, 422: {"model": ErrorBody}})
    def dsr_submit(body: DsrSubmit, who: Annotated[Identity, Depends(require("dsr:submit"))]) -> DsrAccepted:
        from schemas.events import DsrKind
        from streams.dsr import submit, subject_refs_for
        from streams.policy import KeyRing

        given = {"name": body.name, "email": body.email, "phone": body.phone}
        from streams.dsr import UnknownTenant
        from streams.policy import load_policy

        try:
            refs = set(subject_refs_for(KeyRing(settings.home / "keys"), body.tenant, given,
                                        tenants=load_policy(settings.policy_file).tenants)) | set(body.subject_refs)
        except UnknownTenant as exc:
            raise HTTPException(422, str(exc)) from None
        if not refs:
            raise HTTPException(422, "name the subject: name, email, phone or subject_refs")
        try:
            req = submit(settings, DsrKind(body.kind), tuple(sorted(refs)), framework=body.framework,
                         tenant=body.tenant, actor=who.subject)
        except ValueError as exc:
            raise HTTPException(422, str(exc).splitlines()[0]) from None
        return DsrAccepted(request_id=req.request_id, kind=req.kind.value, due_at=req.due_at,
                           subject_refs=list(req.subject_refs))

    @app.get("/v1/admin/dsr/{request_id}", tags=["admin"], responses={**ERRORS, 404: {"model": ErrorBody}})
    def dsr_receipt(request_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")],
                    _: Annotated[Identity, Depends(require("dsr:read"))]) -> dict[str, Any]:
        from streams.dsr import receipts

        found = receipts(settings).get(request_id)
        if found is None:
            raise HTTPException(404, "no receipt for this request yet (still open, or unknown id)")
        return found

    Stage = Literal["ingest", "normalize", "compliance", "chunk", "embed", "index", "graph", "dsr", "audit"]

    def readable(principals: tuple[str, ...], doc_ids: set[str]) -> set[str]:
        """Those of ``doc_ids`` the principals may read in the index (as GET /v1/documents)."""
        from consumers.milvus import acl_filter, escape_literal

        ids = sorted(d for d in doc_ids if re.match(DOC_ID, d) and len(d) <= 2048)
        out: set[str] = set()
        if not principals:
            return out
        for i in range(0, len(ids), 200):
            literal = ", ".join(f'"{escape_literal(d)}"' for d in ids[i:i + 200])
            out |= {r["doc_id"] for r in svc.index.first_rows(f"doc_id in [{literal}] and {acl_filter(principals)}",
                                                               ["doc_id"])}
        return out

    @app.get("/v1/admin/dlq/{stage}", tags=["admin"], response_model=list[DeadLetterInfo], responses=ERRORS)
    def dlq_list(stage: Stage, who: Annotated[Identity, Depends(require("dlq:read"))]) -> list[DeadLetterInfo]:
        """Dead letters of a stage. A letter names a document (its key, often its path in the
        error): it is listed only to callers who may read that document in the index, unless
        they hold ``dlq:read_all`` (admins) — so a listing does not reveal that a document exists."""
        from ragstream.dlq import list_letters

        letters = list_letters(settings, stage)
        if not svc.auth.rbac.allows(who.roles, "dlq:read_all"):
            visible = readable(who.principals, {item.key for item in letters if item.key})
            letters = [item for item in letters if item.key in visible]
        out = []
        for item in letters:
            lt = item.letter
            out.append(DeadLetterInfo(partition=item.partition, offset=item.offset, key=item.key,
                                      topic=lt.topic if lt else None, error_type=lt.error_type if lt else None,
                                      error_message=lt.error_message if lt else None,
                                      failed_at=lt.failed_at if lt else None))
        return out

    @app.post("/v1/admin/sessions/revoke", tags=["admin"], response_model=Revoked, responses=ERRORS)
    def sessions_revoke(request: Request, body: RevokeSessions,
                        who: Annotated[Identity, Depends(require("sessions:revoke"))]) -> Revoked:
        """End every session of a subject at once (their tokens stop working on the next call)."""
        n = svc.auth.sessions.revoke(subject=body.subject)
        svc.audit(who.subject, "admin.sessions.revoke", body.subject, {"revoked": n, "request_id": request_id(request)})
        return Revoked(revoked=n)

    @app.post("/v1/admin/dlq/{stage}/replay", tags=["admin"], response_model=ReplayResult, responses=ERRORS)
    def dlq_replay(request: Request, stage: Stage,
                   who: Annotated[Identity, Depends(require("dlq:replay"))]) -> ReplayResult:
        from ragstream.dlq import replay

        replayed, unreadable = replay(settings, stage)
        svc.audit(who.subject, "admin.dlq.replay", f"rag.dlq.{stage}",
                  {"replayed": replayed, "unreadable": unreadable, "request_id": request_id(request)})
        return ReplayResult(replayed=replayed, unreadable=unreadable)

    add_graph_routes(app, settings, require, request_id, svc)  # /v1/graph/* (ragstream/api_graph.py)
    return app


def header_timeout_protocol(timeout_s: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete
    ``timeout_s`` after it opened or after its previous response (uvicorn's keep-alive
    timer stops at the first byte, so a client sending headers slowly would hold the
    connection for ever)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.warning("connection closed", reason="request headers incomplete", timeout_s=timeout_s)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.IDLE:
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutH11


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve the API with uvicorn: loopback unless told otherwise, forwarded headers only
    from the configured proxies (uvicorn would trust 127.0.0.1 by default, so anything on
    the host could pick its own client address), header and body deadlines, a body limit."""
    import uvicorn

    proxies = [p.strip() for p in settings.api_trusted_proxies.split(",") if p.strip()]
    config = uvicorn.Config(create_app(settings), host=host or settings.api_host, port=port or settings.api_port,
                            log_config=None, access_log=False, proxy_headers=bool(proxies),
                            forwarded_allow_ips=proxies or [], http=header_timeout_protocol(settings.api_header_timeout_s),
                            timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024,
                            limit_concurrency=256, server_header=False)
    uvicorn.Server(config).run()
