"""The retrieval API (FastAPI): search, documents, data-subject requests and dead letters.

``ragstream api`` serves it; the OpenAPI document is at ``/openapi.json`` (``/docs`` for
people). Every endpoint but ``/healthz`` and ``/readyz`` authenticates
(:mod:`ragstream.auth`: OIDC bearer JWTs, session tokens, API keys; LDAP through
``POST /v1/auth/login``), is rate-limited per identity, and checks one RBAC permission;
denials are audited. Search filters by the caller's principals inside Milvus (pre-filter):
no principals, no results.

Errors are JSON ``{"error": ..., "request_id": ...}`` with no stack trace or internal
detail; every response carries ``X-Request-ID`` and every log line of the request has it.
"""

# No `from __future__ import annotations`: FastAPI resolves the endpoint annotations,
# which refer to names local to create_app().

import re
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, AsyncIterator, Callable, Literal

from fastapi import Depends, FastAPI, Form, Header, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, Field
from structlog.contextvars import bind_contextvars, clear_contextvars

from ragstream.auth import AuthError, Authenticator, Identity, load_auth_config
from ragstream.logging import get_logger
from ragstream.settings import Settings

log = get_logger(__name__)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


# -- models (the published contract) -------------------------------------------------------------


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=2000, description="natural-language query")
    limit: int = Field(10, ge=1, le=50)


class SearchHit(BaseModel):
    doc_id: str
    chunk_id: str
    source: str
    title: str
    uri: str
    heading: str
    score: float
    text: str


class SearchResponse(BaseModel):
    results: list[SearchHit]
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
    subject: str
    roles: list[str]


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

    @property
    def index(self) -> Any:
        if self._index is None:
            from consumers.milvus import MilvusIndex
            from streams.embedding import model_dim

            idx = MilvusIndex(self.settings.resolved_milvus_uri, self.settings.collection, model_dim(self.settings),
                              acl_refresh_s=self.settings.acl_refresh_s)
            idx.ensure()
            self._index = idx
        return self._index

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from streams.embedding import make_embedder

            self._embedder = make_embedder(self.settings)
        return self._embedder

    def audit(self, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        from producers.publisher import Publisher
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
            self._publisher.flush(10)


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

    @app.middleware("http")
    async def with_request_id(request: Request, call_next: Callable) -> Response:
        incoming = request.headers.get("x-request-id", "")
        rid = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.state.request_id = rid
        clear_contextvars()
        bind_contextvars(request_id=rid)
        t0 = time.monotonic()
        try:
            response = await call_next(request)
        except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a 500
            log.error("request failed", path=request.url.path, error_type=type(exc).__name__)
            response = error(request, 500, "internal error; quote the request id when reporting it")
        response.headers["X-Request-ID"] = rid
        log.info("request", method=request.method, path=request.url.path, status=response.status_code,
                 ms=round((time.monotonic() - t0) * 1000, 1))
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error(request, 422, f"invalid request: {problems}")

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "-"

    def limited(key: str) -> None:
        if not svc.limiter.hit(svc.limit, key):
            raise HTTPException(429, "rate limit exceeded; retry later", headers={"Retry-After": "60"})

    def require(permission: str) -> Callable[..., Identity]:
        def dependency(request: Request, authorization: Annotated[str | None, Header()] = None,
                       x_api_key: Annotated[str | None, Header()] = None) -> Identity:
            bearer = None
            if authorization:
                scheme, _, value = authorization.partition(" ")
                if scheme.lower() != "bearer" or not value.strip():
                    raise HTTPException(401, "use 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
                bearer = value.strip()
            try:
                who = svc.auth.authenticate(bearer, x_api_key)
            except AuthError as exc:
                limited(f"anon:{client_of(request)}")
                raise HTTPException(401, str(exc), {"WWW-Authenticate": "Bearer"}) from None
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

    # -- probes ----------------------------------------------------------------------------------
    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], responses={503: {"model": ErrorBody}})
    def readyz(request: Request) -> Any:
        try:
            svc.index.rows('chunk_id == ""', ["chunk_id"])
        except Exception as exc:  # noqa: BLE001 - not ready, whatever the reason
            log.warning("not ready", error_type=type(exc).__name__)
            return error(request, 503, "the index is not reachable")
        return {"status": "ready"}

    @app.get("/metrics", tags=["probes"], responses=ERRORS, response_class=Response)
    def metrics(_: Annotated[Identity, Depends(require("system:monitor"))]) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # -- auth ------------------------------------------------------------------------------------
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
            svc.audit(f"user:{body.username[:64]}", "auth.login_failed", "/v1/auth/login",
                      {"provider": "ldap", "request_id": request_id(request)})
            raise HTTPException(401, str(exc)) from None
        except ConnectionError as exc:
            raise HTTPException(503, str(exc)) from None
        return SessionResponse(token=svc.auth.sessions.issue(who), expires_in=svc.auth.sessions.ttl_s,
                               subject=who.subject, roles=list(who.roles))

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
        return SessionResponse(token=svc.auth.sessions.issue(who), expires_in=svc.auth.sessions.ttl_s,
                               subject=who.subject, roles=list(who.roles))

    @app.get("/v1/auth/whoami", tags=["auth"], response_model=WhoAmI, responses=ERRORS)
    def whoami(who: Annotated[Identity, Depends(require("self:read"))]) -> WhoAmI:
        return WhoAmI(subject=who.subject, provider=who.provider, roles=list(who.roles),
                      principals=list(who.principals), permissions=sorted(svc.auth.rbac.permissions(who.roles)))

    # -- search and documents ------------------------------------------------------------------
    @app.post("/v1/search", tags=["search"], response_model=SearchResponse, responses=ERRORS)
    def search(request: Request, body: SearchRequest,
               who: Annotated[Identity, Depends(require("search:query"))]) -> SearchResponse:
        if not who.principals:
            return SearchResponse(results=[], request_id=request_id(request))  # fail closed
        vector = svc.embedder.embed([body.query])[0]
        hits = svc.index.search(vector, who.principals, limit=body.limit)
        return SearchResponse(request_id=request_id(request), results=[
            SearchHit(doc_id=h.doc_id, chunk_id=h.chunk_id, source=h.source, title=h.title or "", uri=h.uri or "",
                      heading=h.heading or "", score=h.score, text=h.text) for h in hits])

    @app.get("/v1/documents/{doc_id:path}", tags=["documents"], response_model=DocumentInfo,
             responses={**ERRORS, 404: {"model": ErrorBody, "description": "not found, or not visible to you"}})
    def document(doc_id: Annotated[str, Path(min_length=3, max_length=2048)],
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
        refs = set(subject_refs_for(KeyRing(settings.home / "keys"), body.tenant, given)) | set(body.subject_refs)
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

    @app.get("/v1/admin/dlq/{stage}", tags=["admin"], response_model=list[DeadLetterInfo], responses=ERRORS)
    def dlq_list(stage: Stage, _: Annotated[Identity, Depends(require("dlq:read"))]) -> list[DeadLetterInfo]:
        from ragstream.dlq import list_letters

        out = []
        for item in list_letters(settings, stage):
            lt = item.letter
            out.append(DeadLetterInfo(partition=item.partition, offset=item.offset, key=item.key,
                                      topic=lt.topic if lt else None, error_type=lt.error_type if lt else None,
                                      error_message=lt.error_message if lt else None,
                                      failed_at=lt.failed_at if lt else None))
        return out

    @app.post("/v1/admin/dlq/{stage}/replay", tags=["admin"], response_model=ReplayResult, responses=ERRORS)
    def dlq_replay(request: Request, stage: Stage,
                   who: Annotated[Identity, Depends(require("dlq:replay"))]) -> ReplayResult:
        from ragstream.dlq import replay

        replayed, unreadable = replay(settings, stage)
        svc.audit(who.subject, "admin.dlq.replay", f"rag.dlq.{stage}",
                  {"replayed": replayed, "unreadable": unreadable, "request_id": request_id(request)})
        return ReplayResult(replayed=replayed, unreadable=unreadable)

    return app


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
