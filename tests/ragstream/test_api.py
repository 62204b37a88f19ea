"""The retrieval API against the session's real Milvus and model, with a real JWKS server.

Identities come from three providers at once: OIDC bearer JWTs signed by RSA keys served
from a local JWKS endpoint (``http.server``, fetched by PyJWT's JWKS client), API keys, and
session tokens. Documents with known ACLs are written straight into the pipeline's
collection, embedded by the real model.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from ragstream.api import create_app
from ragstream.auth import DEFAULT_ROLES, Identity, Rbac, RbacConfig
from schemas.events import Acl, EmbeddedChunk, Op, SourceKind, VectorSet

pytestmark = pytest.mark.integration

AUDIENCE = "ragstream"
ROLES = tuple(DEFAULT_ROLES)


class Jwks:
    """An identity provider's JWKS endpoint; keys can be added (rotation) while it runs."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = json.dumps({"keys": [
                    {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())), "kid": kid, "use": "sig",
                     "alg": "RS256"} for kid, k in jwks.keys.items()]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.issuer = f"http://127.0.0.1:{self.server.server_port}/"
        self.url = f"{self.issuer}jwks.json"

    def add_key(self) -> str:
        kid = uuid.uuid4().hex[:8]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def token(self, kid: str | None = None, **claims: object) -> str:
        kid = kid or next(iter(self.keys))
        now = int(time.time())
        body = {"iss": self.issuer, "aud": AUDIENCE, "sub": "u-1", "preferred_username": "alice",
                "groups": ["matrix"], "roles": ["user"], "iat": now, "nbf": now, "exp": now + 300, **claims}
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def jwks():
    idp = Jwks()
    idp.add_key()
    yield idp
    idp.server.shutdown()


LDAP_ROLES = {"admins": "admin", "powers": "power_user", "users": "user", "readers": "readonly"}
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    """A real OpenLDAP server: one user per role (by group), all in group ``matrix``."""
    from infra.slapd import Directory

    d = Directory(tmp_path_factory.mktemp("slapd")).start()
    for group, role in LDAP_ROLES.items():
        d.add_user(f"ldap-{role}", PASSWORD)
        d.add_group(group, [f"ldap-{role}"])
    d.add_group("matrix", [f"ldap-{r}" for r in LDAP_ROLES.values()])
    yield d
    d.stop()


ACS = "http://testserver/v1/auth/saml/acs"
SP_ID = "http://ragstream.test/sp"


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    from tests.saml_idp import TestIdp

    return TestIdp(tmp_path_factory.mktemp("saml"), SP_ID, ACS)


def auth_file(tmp_path, jwks: Jwks, per_minute: int = 10_000, directory=None, idp=None):
    path = tmp_path / f"auth-{uuid.uuid4().hex[:6]}.toml"
    saml = "" if idp is None else f"""
[saml]
sp_entity_id = "{SP_ID}"
acs_url = "{ACS}"
idp_metadata_file = "{idp.metadata}"
names = "local"
group_roles = {{ {", ".join(f'{g} = "{r}"' for g, r in LDAP_ROLES.items())} }}
default_roles = []
"""
    ldap = "" if directory is None else f"""
[ldap]
url = "{directory.url}"
allow_cleartext = true
user_dn_template = "uid={{username}},ou=people,{directory.suffix}"
group_base = "ou=groups,{directory.suffix}"
group_roles = {{ {", ".join(f'{g} = "{r}"' for g, r in LDAP_ROLES.items())} }}
default_roles = []
"""
    path.write_text(saml + ldap + f"""
[oidc.test]
issuer = "{jwks.issuer}"
audience = "{AUDIENCE}"
jwks_url = "{jwks.url}"
algorithms = ["RS256"]
refresh_cooldown_s = 1
allowed_roles = ["admin", "power_user", "user", "readonly"]
names = "local"

[rate_limit]
per_minute = {per_minute}
""")
    return path


@pytest.fixture(scope="module")
def api(pipeline, jwks, directory, idp, tmp_path_factory):
    settings = pipeline.model_copy(update={"auth_file": auth_file(tmp_path_factory.mktemp("auth"), jwks,
                                                                  directory=directory, idp=idp)})
    app = create_app(settings)
    svc = app.state.services
    docs = {  # doc → ACL principals
        "apitest:public-handbook": ["public"],
        "apitest:matrix-plan": ["group:matrix"],
        "apitest:alice-notes": ["user:alice"],
        "apitest:finance-only": ["group:finance"],
        "apitest:unknown-acl": None,
    }
    texts = {d: f"Quarterly planning notes for {d.split(':')[1].replace('-', ' ')}." for d in docs}
    vectors = svc.embedder.embed(list(texts.values()))
    for (doc, principals), vec in zip(docs.items(), vectors):
        acl = Acl(principals=tuple(principals), known=True) if principals is not None else Acl.unknown()
        svc.index.apply(VectorSet(
            source="apitest", source_kind=SourceKind.filesystem, doc_id=doc, op=Op.upsert, version=1,
            changed_at=datetime.now(timezone.utc), acl=acl, chunker="test", model="test", dim=len(vec),
            chunks=(EmbeddedChunk(chunk_id=f"apitest-{doc}", ordinal=0, text=texts[doc], tokens=8,
                                  vector=tuple(vec)),)))
    with TestClient(app) as client:
        yield client, svc, settings


def credentials(client, svc, jwks: Jwks, provider: str, role: str, idp=None) -> dict[str, str]:
    if provider == "saml":
        group = next(g for g, r in LDAP_ROLES.items() if r == role)
        r = client.post("/v1/auth/saml/acs", data={"SAMLResponse": idp.response(f"saml-{role}", [group, "matrix"])})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}
    if provider == "ldap":
        r = client.post("/v1/auth/login", json={"username": f"ldap-{role}", "password": PASSWORD})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}
    if provider == "oidc":
        return {"Authorization": f"Bearer {jwks.token(roles=[role])}"}
    if provider == "api_key":
        return {"X-API-Key": svc.auth.api_keys.create(f"svc-{role}", (role,), ("matrix",))}
    who = Identity(subject="user:alice", provider="ldap", roles=(role,), principals=("group:matrix", "user:alice"))
    return {"Authorization": f"Bearer {svc.auth.sessions.issue(who)}"}


#: (method, path, body, permission, status when allowed)
ENDPOINTS = [
    ("GET", "/v1/auth/whoami", None, "self:read", 200),
    ("POST", "/v1/search", {"query": "planning notes", "limit": 5}, "search:query", 200),
    ("GET", "/v1/documents/apitest:matrix-plan", None, "documents:read", 200),
    ("POST", "/v1/admin/dsr", {"kind": "access", "subject_refs": ["person:00000000000000ff"]}, "dsr:submit", 202),
    ("GET", f"/v1/admin/dsr/{'0' * 32}", None, "dsr:read", 404),
    ("GET", "/v1/admin/dlq/graph", None, "dlq:read", 200),
    ("POST", "/v1/admin/dlq/graph/replay", None, "dlq:replay", 200),
    ("POST", "/v1/admin/sessions/revoke", {"subject": "user:nobody"}, "sessions:revoke", 200),
    ("GET", "/metrics", None, "system:monitor", 200),
]


def test_401_403_matrix_across_endpoints_roles_and_providers(api, jwks, idp):
    client, svc, _ = api
    rbac = Rbac(RbacConfig())
    seen = set()
    for provider in ("oidc", "ldap", "saml", "api_key", "session"):
        for role in ROLES:
            headers = credentials(client, svc, jwks, provider, role, idp)
            for method, path, body, permission, ok in ENDPOINTS:
                r = client.request(method, path, json=body, headers=headers)
                expected = ok if rbac.allows((role,), permission) else 403
                assert r.status_code == expected, (provider, role, path, r.status_code, r.text)
                assert r.headers["X-Request-ID"] and "Traceback" not in r.text
                seen.add(r.status_code)
    for method, path, body, _, _ in ENDPOINTS:
        for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic YWxpY2U6eA=="},
                        {"X-API-Key": "rsk_deadbeef_nope"}):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.json()["request_id"] == r.headers["X-Request-ID"]
    assert {200, 202, 403, 404} <= seen


def test_ldap_login_gives_a_session_with_directory_groups(api, directory):
    client, _, _ = api
    r = client.post("/v1/auth/login", json={"username": "ldap-user", "password": PASSWORD})
    assert r.status_code == 200 and r.json()["roles"] == ["user"]
    me = client.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {r.json()['token']}"}).json()
    assert me["provider"] == "session:ldap"
    assert me["principals"] == ["group:matrix", "group:users", "public", "user:ldap-user"]
    for user, password in (("ldap-user", "wrong"), ("nobody", PASSWORD), ("ldap-user)(uid=*", PASSWORD),
                           ("*", PASSWORD)):
        bad = client.post("/v1/auth/login", json={"username": user, "password": password})
        assert bad.status_code == 401 and bad.json()["error"] == "invalid username or password", user
    directory.stop()
    try:
        down = client.post("/v1/auth/login", json={"username": "ldap-user", "password": PASSWORD})
        assert down.status_code == 503 and "Traceback" not in down.text
    finally:
        directory.start()
        for group, role in LDAP_ROLES.items():
            directory.add_user(f"ldap-{role}", PASSWORD)
            directory.add_group(group, [f"ldap-{role}"])
        directory.add_group("matrix", [f"ldap-{r}" for r in LDAP_ROLES.values()])


def test_saml_assertions_are_checked(api, idp, tmp_path):
    from tests.saml_idp import TestIdp

    client, _, _ = api
    good = idp.response("saml-alice", ["users", "engineers"])
    r = client.post("/v1/auth/saml/acs", data={"SAMLResponse": good})
    assert r.status_code == 200, r.text
    me = client.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {r.json()['token']}"}).json()
    assert me["provider"] == "session:saml" and me["roles"] == ["user"]
    assert me["principals"] == ["group:engineers", "group:users", "public", "user:saml-alice"]
    stranger = TestIdp(tmp_path / "evil", SP_ID, ACS, name="evil")  # same entity id, its own key
    # The same IdP and key, but the assertion's audience is another service provider.
    other_sp = TestIdp(tmp_path / "other", "http://someone-else.test/sp", ACS, name="other", keys=idp.keys)
    bad = {
        "replayed": good,
        "unsigned": idp.response("mallory", ["admins"], sign=False),
        "signed by another IdP key": stranger.response("mallory", ["admins"]),
        "for another service provider": other_sp.response("mallory", ["admins"]),
        "not XML": "bm90IHhtbA==",
    }
    for what, response in bad.items():
        r = client.post("/v1/auth/saml/acs", data={"SAMLResponse": response})
        assert r.status_code == 401, (what, r.text)
        assert "Traceback" not in r.text


def test_forged_and_stale_jwts_are_rejected(api, jwks):
    client, _, _ = api
    good = jwks.token()
    assert client.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    kid = next(iter(jwks.keys))
    public_pem = jwks.keys[kid].public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    claims = {"iss": jwks.issuer, "aud": AUDIENCE, "sub": "u-1", "preferred_username": "mallory",
              "roles": ["admin"], "groups": [], "iat": now, "exp": now + 300}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    import hmac as _hmac
    import hashlib
    import base64

    def b64(d: bytes) -> str:
        return base64.urlsafe_b64encode(d).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64(json.dumps(claims).encode())
    confused = f"{head}.{payload}." + b64(_hmac.new(public_pem, f"{head}.{payload}".encode(), hashlib.sha256).digest())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = {
        "alg none": unsigned,
        "HS256 with the RSA public key": confused,
        "expired": jwks.token(exp=now - 120, iat=now - 600, nbf=now - 600),
        "not yet valid": jwks.token(nbf=now + 600),
        "wrong audience": jwks.token(aud="someone-else"),
        "wrong issuer": jwks.token(iss="https://evil.example/"),
        "unknown kid": jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "nope"}),
        "right kid, wrong key": jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": kid}),
        "no expiry": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, jwks.keys[kid], algorithm="RS256",
                                headers={"kid": kid}),
    }
    for what, token in forged.items():
        r = client.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (what, r.text)
        assert "Traceback" not in r.text


def test_key_rotation_is_picked_up(api, jwks):
    client, _, _ = api
    new_kid = jwks.add_key()  # the provider publishes a new key after the API cached the old set
    time.sleep(1.1)  # an unknown kid refetches at most once per refresh_cooldown_s (1 s here)
    r = client.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {jwks.token(kid=new_kid)}"})
    assert r.status_code == 200, r.text


def test_search_and_documents_see_only_what_the_acl_allows(api, jwks):
    client, _, _ = api

    def search(token: str) -> set[str]:
        r = client.post("/v1/search", json={"query": "quarterly planning notes", "limit": 50},
                        headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return {h["doc_id"] for h in r.json()["results"] if h["doc_id"].startswith("apitest:")}

    alice = jwks.token(preferred_username="alice", groups=["matrix"])
    bob = jwks.token(preferred_username="bob", groups=["finance"])
    assert search(alice) == {"apitest:public-handbook", "apitest:matrix-plan", "apitest:alice-notes"}
    assert search(bob) == {"apitest:public-handbook", "apitest:finance-only"}
    hdr = {"Authorization": f"Bearer {bob}"}
    assert client.get("/v1/documents/apitest:finance-only", headers=hdr).status_code == 200
    hidden = client.get("/v1/documents/apitest:alice-notes", headers=hdr)
    absent = client.get("/v1/documents/apitest:no-such-doc", headers=hdr)
    assert hidden.status_code == absent.status_code == 404 and hidden.json()["error"] == absent.json()["error"]
    assert client.get("/v1/documents/apitest:unknown-acl",
                      headers={"Authorization": f"Bearer {jwks.token(roles=['admin'])}"}).status_code == 404


def test_rate_limit_is_per_identity(pipeline, jwks, tmp_path):
    settings = pipeline.model_copy(update={"auth_file": auth_file(tmp_path, jwks, per_minute=3)})
    with TestClient(create_app(settings)) as client:
        a = {"Authorization": f"Bearer {jwks.token(preferred_username='rl-a')}"}
        b = {"Authorization": f"Bearer {jwks.token(preferred_username='rl-b')}"}
        codes = [client.get("/v1/auth/whoami", headers=a).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/v1/auth/whoami", headers=a)
        assert limited.headers["Retry-After"] and limited.json()["request_id"]
        assert client.get("/v1/auth/whoami", headers=b).status_code == 200


def test_request_id_is_echoed_and_failures_reveal_nothing(api, jwks):
    client, svc, _ = api
    hdr = {"Authorization": f"Bearer {jwks.token()}", "X-Request-ID": "trace-12345678"}
    r = client.get("/v1/auth/whoami", headers=hdr)
    assert r.headers["X-Request-ID"] == "trace-12345678"
    assert client.get("/v1/auth/whoami", headers={**hdr, "X-Request-ID": "bad id\n"}).headers["X-Request-ID"] != "bad id\n"

    class Broken:
        def embed(self, texts: list[str]) -> list[list[float]]:
            raise RuntimeError("secret internal detail: /srv/models/x.bin")

    saved, svc._embedder = svc._embedder, Broken()
    try:
        r = TestClient(client.app, raise_server_exceptions=False).post(
            "/v1/search", json={"query": "x"}, headers=hdr)
    finally:
        svc._embedder = saved
    assert r.status_code == 500
    assert "secret" not in r.text and "Traceback" not in r.text and r.json()["request_id"] == "trace-12345678"


def test_ldap_subject_is_the_directory_s_own_name(api):
    client, _, _ = api
    seen = set()
    for typed in ("ldap-user", "LDAP-USER", " ldap-user", "ldap-user ", "Ldap-User"):
        r = client.post("/v1/auth/login", json={"username": typed, "password": PASSWORD})
        assert r.status_code == 200, (typed, r.text)
        me = client.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {r.json()['token']}"}).json()
        seen.add((r.json()["subject"], me["subject"], tuple(me["principals"])))
    assert seen == {("user:ldap-user", "user:ldap-user", ("group:matrix", "group:users", "public", "user:ldap-user"))}


def test_a_second_issuer_gets_only_the_trust_it_is_given(api, jwks, tmp_path):
    client, svc, settings = api
    partner = Jwks()
    partner.add_key()
    path = auth_file(tmp_path, jwks)
    path.write_text(path.read_text() + f"""
[oidc.partner]
issuer = "{partner.issuer}"
audience = "{AUDIENCE}"
jwks_url = "{partner.url}"
algorithms = ["RS256"]

[identity_map]
"partner/alice.smith" = "alice"
""")
    app = create_app(settings.model_copy(update={"auth_file": path}))
    app.state.services._embedder = svc.embedder  # the model once per process is enough
    try:
        with TestClient(app) as other:
            # The partner's "alice" with "admin" is not our alice and not an admin.
            hdr = {"Authorization": f"Bearer {partner.token(preferred_username='alice', roles=['admin', 'user'])}"}
            me = other.get("/v1/auth/whoami", headers=hdr).json()
            assert me["subject"] == "user:partner/alice" and me["roles"] == ["user"]
            assert me["principals"] == ["group:partner/matrix", "public", "user:partner/alice"]
            assert other.post("/v1/admin/dlq/graph/replay", headers=hdr).status_code == 403
            assert other.get("/v1/documents/apitest:alice-notes", headers=hdr).status_code == 404
            assert other.get("/v1/documents/apitest:matrix-plan", headers=hdr).status_code == 404
            assert other.get("/v1/documents/apitest:public-handbook", headers=hdr).status_code == 200
            # The same person at both providers, because the mapping says so.
            mapped = {"Authorization": f"Bearer {partner.token(preferred_username='alice.smith', groups=[])}"}
            assert other.get("/v1/auth/whoami", headers=mapped).json()["subject"] == "user:alice"
            assert other.get("/v1/documents/apitest:alice-notes", headers=mapped).status_code == 200
            # Our own issuer is unchanged: its alice is the host's alice.
            ours = {"Authorization": f"Bearer {jwks.token(preferred_username='alice', roles=['admin'])}"}
            assert other.get("/v1/auth/whoami", headers=ours).json()["subject"] == "user:alice"
    finally:
        partner.server.shutdown()


def test_the_401_403_matrix_per_issuer_follows_each_issuer_s_trust(api, jwks, tmp_path):
    """Two issuers of different trust, every role a token may claim: the roles granted are the
    claimed ones the issuer is trusted with (``allowed_roles``) plus its ``default_roles``,
    and every endpoint answers by those alone. Our issuer may grant anything; the partner only
    power_user and readonly, readonly to everyone."""
    client, svc, settings = api
    partner = Jwks()
    partner.add_key()
    path = auth_file(tmp_path, jwks)
    path.write_text(path.read_text() + f"""
[oidc.partner]
issuer = "{partner.issuer}"
audience = "{AUDIENCE}"
jwks_url = "{partner.url}"
algorithms = ["RS256"]
allowed_roles = ["power_user", "readonly"]
default_roles = ["readonly"]
""")
    app = create_app(settings.model_copy(update={"auth_file": path}))
    app.state.services._embedder = svc.embedder
    rbac = Rbac(RbacConfig())
    issuers = {"test": (jwks, set(ROLES), set()), "partner": (partner, {"power_user", "readonly"}, {"readonly"})}
    try:
        with TestClient(app) as other:
            for name, (issuer, trusted, default) in issuers.items():
                for claimed in ([], *([r] for r in ROLES), list(ROLES)):
                    granted = tuple(sorted((set(claimed) & trusted) | default))
                    headers = {"Authorization": f"Bearer {issuer.token(roles=claimed)}"}
                    me = other.get("/v1/auth/whoami", headers=headers)
                    if granted:
                        assert me.json()["roles"] == list(granted), (name, claimed, me.text)
                    for method, url, body, permission, ok in ENDPOINTS:
                        if name == "partner" and url.startswith("/v1/documents/"):
                            ok = 404  # the partner's group:partner/matrix is not our group:matrix
                        r = other.request(method, url, json=body, headers=headers)
                        expected = ok if rbac.allows(granted, permission) else 403
                        assert r.status_code == expected, (name, claimed, url, r.status_code, r.text)
            # Names cannot cross namespaces: our issuer's names are local ones, so it cannot
            # spell the partner's alice; the partner's own names may hold '/'.
            spoof = {"Authorization": f"Bearer {jwks.token(preferred_username='partner/alice', roles=['user'])}"}
            assert other.get("/v1/auth/whoami", headers=spoof).status_code == 401
            slash = {"Authorization": f"Bearer {partner.token(preferred_username='x/y', groups=['a/b'])}"}
            me = other.get("/v1/auth/whoami", headers=slash).json()
            assert me["subject"] == "user:partner/x/y" and "group:partner/a/b" in me["principals"]
    finally:
        partner.server.shutdown()


def test_dead_letter_listing_shows_only_documents_the_caller_may_read(api, jwks):
    from ragstream.publisher import Publisher

    client, _, settings = api
    docs = ("apitest:alice-notes", "apitest:finance-only", "apitest:never-indexed")
    with Publisher(settings, client_id="test-dlq") as pub:
        for doc in docs:
            pub.dead_letter("normalize", topic="rag.changes", partition=0, offset=1, key=doc, value=b"{}",
                            error=ValueError(f"cannot read /srv/share/{doc.split(':')[1]}.pdf"))
        pub.flush()

    def listed(**claims: object) -> set[str]:
        r = client.get("/v1/admin/dlq/normalize", headers={"Authorization": f"Bearer {jwks.token(**claims)}"})
        assert r.status_code == 200, r.text
        return {item["key"] for item in r.json() if (item["key"] or "").startswith("apitest:")}

    assert listed(preferred_username="bob", groups=["finance"], roles=["power_user"]) == {"apitest:finance-only"}
    assert listed(preferred_username="alice", groups=["matrix"], roles=["power_user"]) == {"apitest:alice-notes"}
    assert listed(preferred_username="eve", groups=[], roles=["power_user"]) == set()
    assert listed(preferred_username="ops", groups=[], roles=["admin"]) == set(docs)  # dlq:read_all


def test_odd_bytes_in_path_parameters_are_client_errors(api, jwks):
    from urllib.parse import quote

    from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

    client, _, _ = api
    hdr = {"Authorization": f"Bearer {jwks.token()}"}
    for path in ("abc%0Ddef", "apitest:x%0Dy", "apitest:%00", "apitest:%0A", "apitest:%22%20or%20true",
                 "apitest:%5C", "apitest:%E2%80%A8", "apitest:%FF%FE", "x" * 3000, "%7F"):
        r = client.get(f"/v1/documents/{path}", headers=hdr)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)

    @hsettings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.text(min_size=1, max_size=60), st.sampled_from(["apitest:", "", "a:"]))
    def no_5xx(text: str, prefix: str) -> None:
        r = client.get("/v1/documents/" + quote(prefix + text, safe=""), headers=hdr)
        assert r.status_code < 500, (prefix + text, r.status_code, r.text)

    no_5xx()


def test_search_modes_filters_and_snippets(api, jwks):
    client, _, _ = api
    hdr = {"Authorization": f"Bearer {jwks.token(preferred_username='alice', groups=['matrix'])}"}
    visible = {"apitest:public-handbook", "apitest:matrix-plan", "apitest:alice-notes"}

    def search(**body) -> dict:
        r = client.post("/v1/search", json={"query": "matrix plan", "limit": 50, "sources": ["apitest"], **body},
                        headers=hdr)
        assert r.status_code == 200, r.text
        return r.json()

    assert search()["mode"] == "hybrid"  # the default, by bench/search_quality.py
    for mode in ("hybrid", "dense", "lexical"):
        out = search(mode=mode)
        assert out["mode"] == mode
        docs = {h["doc_id"] for h in out["results"]}
        assert docs <= visible, f"{mode}: leaked {docs - visible}"
        assert mode == "lexical" or docs == visible, "vectors rank every visible document"
    top = search(mode="lexical")["results"]
    assert [h["doc_id"] for h in top] == ["apitest:matrix-plan"], "only it holds the words"
    assert [top[0]["snippet"][s:e] for s, e in top[0]["highlights"]] == ["planning", "matrix", "plan"]
    assert search(classifications=["confidential"])["results"] == []
    assert search(modified_after="2999-01-01T00:00:00Z")["results"] == []
    assert {h["doc_id"] for h in search(sources=["someother"])["results"]} == set()
    for bad in ({"mode": "semantic"}, {"sources": ['x" or source != "']},
                {"modified_after": "2026-02-01T00:00:00Z", "modified_before": "2026-01-01T00:00:00Z"}):
        r = client.post("/v1/search", json={"query": "matrix plan", **bad}, headers=hdr)
        assert r.status_code == 422, (bad, r.text)
