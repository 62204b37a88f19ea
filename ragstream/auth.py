"""Authentication and authorization for the retrieval API.

Several providers at once, configured in one TOML file (``RAGSTREAM_AUTH_FILE``)::

    [oidc.corp]                         # any number of OpenID Connect issuers
    issuer = "https://login.example.com/"
    audience = "ragstream"
    jwks_url = "https://login.example.com/.well-known/jwks.json"
    algorithms = ["RS256"]              # allow-list; "none" and HS* are never accepted
    username_claim = "preferred_username"
    groups_claim = "groups"
    roles_claim = "roles"

    [ldap]                              # LDAP / Active Directory: POST /v1/auth/login
    url = "ldap://dc.example.com:389"
    user_dn_template = "uid={username},ou=people,dc=example,dc=com"
    group_base = "ou=groups,dc=example,dc=com"
    group_filter = "(&(objectClass=groupOfNames)(member={user_dn}))"
    group_roles = { admins = "admin", engineers = "power_user" }
    default_roles = ["user"]

    [session]
    ttl_s = 900                         # signed session tokens issued after a login

    [rate_limit]
    per_minute = 120                    # per identity

    [rbac.roles]                        # replaces the defaults below when given
    admin = ["*"]

Every request resolves to an :class:`Identity`: who (``subject``), how (``provider``),
its roles and its *principals* (``user:<name>``, ``group:<name>``), the same strings the
producers write into document ACLs. RBAC (:class:`Rbac`) maps roles to ``resource:action``
permissions with ``resource:*`` and ``*`` wildcards; ACLs then filter the search inside
Milvus (:func:`consumers.milvus.acl_filter`).

API keys (service accounts) are random 32-byte secrets shown once; only their SHA-256 is
stored (``<home>/keys/api_keys.json``, mode 0600) — a high-entropy secret needs no slow
hash — and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from pydantic import BaseModel, ConfigDict, Field, field_validator

SESSION_ISSUER = "ragstream"
SESSION_AUDIENCE = "ragstream-session"
API_KEY_PREFIX = "rsk_"
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})

DEFAULT_ROLES: dict[str, tuple[str, ...]] = {
    "admin": ("*",),
    "power_user": ("self:read", "search:*", "documents:*", "dsr:read", "dlq:read"),
    "user": ("self:read", "search:query", "documents:read"),
    "readonly": ("self:read", "documents:read"),
}


class AuthError(Exception):
    """Not authenticated (HTTP 401). The message is safe to show: it names no secret."""


class Forbidden(Exception):
    """Authenticated, not allowed (HTTP 403)."""


class AuthConfigError(SystemExit):
    pass


# -- configuration -------------------------------------------------------------------------------


class OidcConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    jwks_url: str = Field(pattern=r"^https?://")
    algorithms: tuple[str, ...] = ("RS256",)
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    roles_claim: str = "roles"
    leeway_s: float = Field(30, ge=0, le=300)
    refresh_cooldown_s: float = Field(30, ge=0, le=3600, description="an unknown kid refetches the JWKS at most "
                                      "this often (rotation arrives within it; random kids cannot flood the IdP)")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in v if a not in ASYMMETRIC]
        if bad or not v:
            raise ValueError(f"algorithms must be asymmetric signatures ({', '.join(sorted(ASYMMETRIC))}); "
                             f"refused: {bad or 'an empty list'}")
        return v


class LdapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^ldaps?://")
    user_dn_template: str = Field(pattern=r"\{username\}")
    group_base: str
    group_filter: str = "(&(objectClass=groupOfNames)(member={user_dn}))"
    group_name_attribute: str = "cn"
    group_roles: dict[str, str] = Field(default_factory=dict)
    default_roles: tuple[str, ...] = ("user",)
    timeout_s: float = Field(5, gt=0)


class SamlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sp_entity_id: str = Field(min_length=1, description="this service's SAML entity id")
    acs_url: str = Field(pattern=r"^https?://", description="where the IdP posts: <base>/v1/auth/saml/acs")
    idp_metadata_file: Path = Field(description="the identity provider's SAML metadata (XML)")
    username_attribute: str = "uid"
    groups_attribute: str = "isMemberOf"
    group_roles: dict[str, str] = Field(default_factory=dict)
    default_roles: tuple[str, ...] = ("user",)
    xmlsec_binary: str = "/usr/bin/xmlsec1"
    accepted_time_diff_s: int = Field(60, ge=0, le=600)

    @field_validator("idp_metadata_file")
    @classmethod
    def _exists(cls, v: Path) -> Path:
        if not v.is_file():
            raise ValueError(f"{v} does not exist: download the IdP's metadata XML there")
        return v


class SessionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ttl_s: int = Field(900, ge=30, le=86400)


class RateLimitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    per_minute: int = Field(120, ge=1)


class RbacConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: dict[str, tuple[str, ...]] = Field(default_factory=lambda: dict(DEFAULT_ROLES))

    @field_validator("roles")
    @classmethod
    def _permission_shape(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for role, perms in v.items():
            for p in perms:
                if p != "*" and (p.count(":") != 1 or not all(p.split(":"))):
                    raise ValueError(f"role {role!r}: permission {p!r} must be 'resource:action', "
                                     "'resource:*' or '*'")
        return v


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    oidc: dict[str, OidcConfig] = Field(default_factory=dict)
    ldap: LdapConfig | None = None
    saml: SamlConfig | None = None
    session: SessionConfig = Field(default_factory=SessionConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    rbac: RbacConfig = Field(default_factory=RbacConfig)


def load_auth_config(path: Path | None) -> AuthConfig:
    from ragstream.configfile import load_toml

    return AuthConfig() if path is None else load_toml(path, AuthConfig, "auth file", "RAGSTREAM_AUTH_FILE",
                                                       AuthConfigError)


# -- identities and RBAC -------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    subject: str  # "user:alice", "service:indexer-bot"
    provider: str  # "oidc:corp", "ldap", "api_key", "session"
    roles: tuple[str, ...]
    principals: tuple[str, ...]  # what document ACLs are matched against
    claims: dict[str, Any] = field(default_factory=dict, compare=False)


def principals_of(username: str, groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """ACL principals of an authenticated caller: themselves, their groups, and ``public``."""
    return tuple(sorted({"public", f"user:{username}", *(f"group:{g}" for g in groups if g)}))


class Rbac:
    def __init__(self, config: RbacConfig) -> None:
        self.roles = config.roles

    def permissions(self, roles: tuple[str, ...]) -> set[str]:
        return {p for r in roles for p in self.roles.get(r, ())}

    def allows(self, roles: tuple[str, ...], permission: str) -> bool:
        resource = permission.split(":", 1)[0]
        perms = self.permissions(roles)
        return "*" in perms or permission in perms or f"{resource}:*" in perms


# -- API keys ------------------------------------------------------------------------------------


class ApiKeyStore:
    """Service-account keys: ``rsk_<id>_<secret>``; the file holds id → sha256(secret)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def create(self, name: str, roles: tuple[str, ...], groups: tuple[str, ...] = ()) -> str:
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self._lock:
            keys = self._load()
            keys[key_id] = {"name": name, "roles": list(roles), "groups": list(groups),
                            "sha256": hashlib.sha256(secret.encode()).hexdigest(), "created_at": int(time.time())}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(keys, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        return f"{API_KEY_PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            keys = self._load()
            if keys.pop(key_id, None) is None:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(keys, fh, indent=1, sort_keys=True)
            return True

    def authenticate(self, key: str) -> Identity:
        try:
            key_id, secret = key.removeprefix(API_KEY_PREFIX).split("_", 1)
        except ValueError:
            raise AuthError("malformed API key") from None
        entry = self._load().get(key_id)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if entry is None or not hmac.compare_digest(digest, entry["sha256"]):
            raise AuthError("unknown or revoked API key")
        name = entry["name"]
        return Identity(subject=f"service:{name}", provider="api_key", roles=tuple(entry["roles"]),
                        principals=principals_of(name, entry["groups"]))


# -- sessions ------------------------------------------------------------------------------------


class Sessions:
    """Short-lived HS256 tokens this service signs after a login (key in ``<home>/keys``)."""

    def __init__(self, key_path: Path, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        if not key_path.exists():
            key_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        self._key = key_path.read_bytes()

    def issue(self, identity: Identity) -> str:
        now = int(time.time())
        return jwt.encode({"iss": SESSION_ISSUER, "aud": SESSION_AUDIENCE, "sub": identity.subject,
                           "via": identity.provider, "roles": list(identity.roles),
                           "principals": list(identity.principals), "iat": now, "nbf": now,
                           "exp": now + self.ttl_s, "jti": uuid.uuid4().hex}, self._key, algorithm="HS256")

    def verify(self, token: str) -> Identity:
        try:
            c = jwt.decode(token, self._key, algorithms=["HS256"], audience=SESSION_AUDIENCE, issuer=SESSION_ISSUER,
                           options={"require": ["exp", "iat", "sub", "aud", "iss"]})
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid session token: {exc}") from None
        return Identity(subject=c["sub"], provider=f"session:{c.get('via', '?')}", roles=tuple(c.get("roles", ())),
                        principals=tuple(c.get("principals", ())), claims=c)


# -- OIDC ----------------------------------------------------------------------------------------


class OidcProvider:
    """Bearer JWTs from one issuer, checked against its JWKS (keys cached; an unknown
    ``kid`` refetches the set, at most once per ``refresh_cooldown_s``: that is how key
    rotation arrives, and why random kids cannot make us hammer the provider)."""

    def __init__(self, name: str, config: OidcConfig) -> None:
        self.name = name
        self.config = config
        self.jwks = jwt.PyJWKClient(config.jwks_url, cache_keys=True, lifespan=300, timeout=5,
                                    cooldown_duration=config.refresh_cooldown_s)

    def verify(self, token: str) -> Identity:
        c = self.config
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in c.algorithms:
                raise AuthError(f"token algorithm {header.get('alg')!r} is not allowed (allowed: {', '.join(c.algorithms)})")
            key = self.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=list(c.algorithms), audience=c.audience, issuer=c.issuer,
                                leeway=c.leeway_s, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.PyJWKClientConnectionError:
            raise AuthError("the identity provider's keys cannot be fetched right now") from None
        except jwt.PyJWKClientError as exc:
            raise AuthError(f"token signing key not found: {exc}") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        username = str(claims.get(c.username_claim) or claims["sub"])
        groups = claims.get(c.groups_claim) or []
        roles = claims.get(c.roles_claim) or []
        if not isinstance(groups, list) or not isinstance(roles, list):
            raise AuthError(f"claims {c.groups_claim!r} and {c.roles_claim!r} must be lists")
        return Identity(subject=f"user:{username}", provider=f"oidc:{self.name}", roles=tuple(map(str, roles)),
                        principals=principals_of(username, [str(g) for g in groups]), claims=claims)


# -- LDAP / Active Directory ---------------------------------------------------------------------


class LdapProvider:
    """Simple bind as the user, then the groups whose member is the user's DN."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config

    def login(self, username: str, password: str) -> Identity:
        import ldap3
        from ldap3.core.exceptions import LDAPBindError, LDAPException, LDAPInvalidCredentialsResult
        from ldap3.utils.conv import escape_filter_chars
        from ldap3.utils.dn import escape_rdn

        c = self.config
        if not username or not password:
            raise AuthError("username and password are required")  # an empty password would be an anonymous bind
        user_dn = c.user_dn_template.format(username=escape_rdn(username))
        server = ldap3.Server(c.url, connect_timeout=c.timeout_s)
        try:
            conn = ldap3.Connection(server, user=user_dn, password=password, auto_bind=True,
                                    receive_timeout=c.timeout_s, raise_exceptions=True)
        except (LDAPBindError, LDAPInvalidCredentialsResult):
            raise AuthError("invalid username or password") from None
        except LDAPException as exc:
            raise ConnectionError(f"directory unavailable: {type(exc).__name__}") from None
        try:
            conn.search(c.group_base, c.group_filter.format(user_dn=escape_filter_chars(user_dn)),
                        attributes=[c.group_name_attribute])
            groups = sorted(str(e[c.group_name_attribute].value) for e in conn.entries)
        finally:
            conn.unbind()
        roles = tuple(sorted({c.group_roles[g] for g in groups if g in c.group_roles} | set(c.default_roles)))
        return Identity(subject=f"user:{username}", provider="ldap", roles=roles,
                        principals=principals_of(username, groups))


# -- SAML 2.0 ------------------------------------------------------------------------------------


class SamlProvider:
    """IdP-initiated or SP-initiated Web SSO, HTTP-POST binding, through pysaml2: the
    response must carry a signed assertion from the configured IdP (its metadata), meant
    for this SP (audience), within its validity window; attributes give name and groups."""

    def __init__(self, config: SamlConfig) -> None:
        from saml2 import BINDING_HTTP_POST
        from saml2.client import Saml2Client
        from saml2.config import SPConfig

        self.config = config
        sp = SPConfig()
        sp.load({
            "entityid": config.sp_entity_id,
            "xmlsec_binary": config.xmlsec_binary,
            "metadata": {"local": [str(config.idp_metadata_file)]},
            "accepted_time_diff": config.accepted_time_diff_s,
            "service": {"sp": {
                "endpoints": {"assertion_consumer_service": [(config.acs_url, BINDING_HTTP_POST)]},
                "allow_unsolicited": True,  # IdP-initiated logins carry no request id
                "allow_unknown_attributes": True,  # group attributes are rarely in the standard maps
                "want_assertions_signed": True,
                "want_response_signed": False,
                "authn_requests_signed": False,
            }},
        })
        self.client = Saml2Client(config=sp)
        self._used: dict[str, float] = {}  # assertion id → when it may be forgotten
        self._lock = threading.Lock()

    def login(self, saml_response: str) -> Identity:
        from saml2 import BINDING_HTTP_POST

        c = self.config
        try:
            resp = self.client.parse_authn_request_response(saml_response, BINDING_HTTP_POST)
        except Exception as exc:  # noqa: BLE001 - pysaml2 raises many types; all mean "not accepted"
            raise AuthError(f"SAML response not accepted: {type(exc).__name__}") from None
        if resp is None or not resp.assertion:
            raise AuthError("SAML response not accepted: no valid assertion")
        now = time.time()
        with self._lock:  # an assertion is good for one login (no replay within its lifetime)
            self._used = {k: t for k, t in self._used.items() if t > now}
            if resp.assertion.id in self._used:
                raise AuthError("SAML response not accepted: assertion already used")
            self._used[resp.assertion.id] = now + 3600 + c.accepted_time_diff_s
        ava = resp.get_identity()
        names = ava.get(c.username_attribute) or [resp.get_subject().text]
        username = str(names[0])
        groups = [str(g) for g in ava.get(c.groups_attribute, [])]
        roles = tuple(sorted({c.group_roles[g] for g in groups if g in c.group_roles} | set(c.default_roles)))
        return Identity(subject=f"user:{username}", provider="saml", roles=roles,
                        principals=principals_of(username, groups))


# -- putting it together -------------------------------------------------------------------------


class Authenticator:
    def __init__(self, config: AuthConfig, home: Path) -> None:
        self.config = config
        self.rbac = Rbac(config.rbac)
        self.api_keys = ApiKeyStore(home / "keys" / "api_keys.json")
        self.sessions = Sessions(home / "keys" / "session.key", config.session.ttl_s)
        self.oidc = {c.issuer: OidcProvider(name, c) for name, c in config.oidc.items()}
        self.ldap = LdapProvider(config.ldap) if config.ldap else None
        self.saml = SamlProvider(config.saml) if config.saml else None

    def authenticate(self, bearer: str | None, api_key: str | None) -> Identity:
        if api_key:
            return self.api_keys.authenticate(api_key)
        if not bearer:
            raise AuthError("authentication required: send 'Authorization: Bearer <token>' or 'X-API-Key'")
        if bearer.startswith(API_KEY_PREFIX):
            return self.api_keys.authenticate(bearer)
        try:
            issuer = jwt.decode(bearer, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            raise AuthError("the bearer token is not a JWT") from None
        if issuer == SESSION_ISSUER:
            return self.sessions.verify(bearer)
        provider = self.oidc.get(issuer)
        if provider is None:
            raise AuthError("token issuer is not trusted")
        return provider.verify(bearer)
