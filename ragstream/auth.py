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

    allowed_roles = ["user"]            # roles this issuer may grant (others in a token are dropped)
    names = "issuer"                    # principals user:corp/<name>, group:corp/<g>; "local": bare names

    [ldap]                              # LDAP / Active Directory: POST /v1/auth/login
    url = "ldaps://dc.example.com:636"  # ldap:// only with start_tls = true (or allow_cleartext, tests)
    username_attribute = "uid"          # the canonical name is the directory's own (sAMAccountName on AD)
    user_dn_template = "uid={username},ou=people,dc=example,dc=com"
    group_base = "ou=groups,dc=example,dc=com"
    group_filter = "(&(objectClass=groupOfNames)(member={user_dn}))"
    group_roles = { admins = "admin", engineers = "power_user" }
    default_roles = ["user"]

    [session]
    ttl_s = 900                         # access tokens issued after a login (refreshable)
    refresh_ttl_s = 3600                # a refresh token lapses after this long unused
    max_age_s = 28800                   # a session ends after this long: log in again

    [identity_map]                      # the same person at two providers (optional)
    "partner/alice@example.com" = "alice"

    [rate_limit]
    per_minute = 120                    # per identity

    [rbac.roles]                        # replaces the defaults below when given
    admin = ["*"]

Every request resolves to an :class:`Identity`: who (``subject``), how (``provider``),
its roles and its *principals* (``user:<name>``, ``group:<name>``), the same strings the
producers write into document ACLs, made by :class:`schemas.principals.Principal` (names
validated here, :func:`valid_name`, are written as they are: ``Principal.as_is``). Names from the local directory (LDAP) are the host's
names, as the file-system producer writes them; an OIDC issuer's or SAML IdP's names are
qualified by its alias (``user:corp/alice``) unless it is declared ``names = "local"`` or
``[identity_map]`` maps a name to a local one, so two providers' users never collide. An
issuer grants only the roles its ``allowed_roles`` lists. Service accounts (API keys) are
``service:<name>`` with only the groups the operator gave them. RBAC (:class:`Rbac`) maps roles to ``resource:action``
permissions with ``resource:*`` and ``*`` wildcards; ACLs then filter the search inside
Milvus (:func:`consumers.milvus.acl_filter`).

API keys (service accounts) are random 32-byte secrets shown once; only their SHA-256 is
stored (``<home>/keys/auth.db``, mode 0600, :mod:`ragstream.store`) — a high-entropy secret
needs no slow hash — and compared in constant time. Sessions live in the same store: an
access token is good for ``ttl_s`` and names a server-side session that can be refreshed
(one-time refresh tokens), revoked, and that ends after ``max_age_s``.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import jwt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ragstream.keyfile import create_key_file
from ragstream.store import API_KEY_PREFIX, AuthStore, Session, StoreError
from schemas.principals import PUBLIC, Principal

SESSION_ISSUER = "ragstream"
SESSION_AUDIENCE = "ragstream-session"
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
    allowed_roles: tuple[str, ...] = Field(("user", "readonly"), description="roles this issuer may grant; a token's "
                                           "other roles are dropped (an issuer is trusted with no more than this)")
    default_roles: tuple[str, ...] = ()
    names: Literal["issuer", "local"] = Field("issuer", description="'issuer': principals are user:<alias>/<name> "
                                              "and group:<alias>/<group>; 'local': this issuer's names are the "
                                              "host's own (the file-system producer's user:<login>)")

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
    start_tls: bool = Field(False, description="upgrade an ldap:// connection with StartTLS before binding")
    allow_cleartext: bool = Field(False, description="accept ldap:// without StartTLS: passwords cross the network "
                                  "in clear (only for a test directory on loopback)")
    ca_file: Path | None = Field(None, description="CA certificates to verify the directory's TLS certificate "
                                 "(default: the system's)")
    username_attribute: str = Field("uid", description="the attribute holding the canonical user name "
                                    "(sAMAccountName on Active Directory)")
    case_insensitive: bool = Field(True, description="the directory compares names ignoring case (OpenLDAP's uid "
                                   "and AD's sAMAccountName do): names are case-folded")
    user_dn_template: str = Field(pattern=r"\{username\}")
    group_base: str
    group_filter: str = "(&(objectClass=groupOfNames)(member={user_dn}))"
    group_name_attribute: str = "cn"
    group_roles: dict[str, str] = Field(default_factory=dict)
    default_roles: tuple[str, ...] = ("user",)
    timeout_s: float = Field(5, gt=0)

    @model_validator(mode="after")
    def _encrypted(self) -> "LdapConfig":
        if self.url.startswith("ldap://") and not (self.start_tls or self.allow_cleartext):
            raise ValueError("ldap:// sends passwords in clear: use ldaps://, or start_tls = true "
                             "(allow_cleartext = true only for a test directory)")
        return self


class SamlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sp_entity_id: str = Field(min_length=1, description="this service's SAML entity id")
    acs_url: str = Field(pattern=r"^https?://", description="where the IdP posts: <base>/v1/auth/saml/acs")
    idp_metadata_file: Path = Field(description="the identity provider's SAML metadata (XML)")
    username_attribute: str = "uid"
    groups_attribute: str = "isMemberOf"
    group_roles: dict[str, str] = Field(default_factory=dict)
    default_roles: tuple[str, ...] = ("user",)
    names: Literal["issuer", "local"] = Field("issuer", description="'issuer': principals user:saml/<name>, "
                                              "group:saml/<group>; 'local': the IdP's names are the host's own")
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

    ttl_s: int = Field(900, ge=30, le=3600, description="lifetime of an access token (then refresh)")
    refresh_ttl_s: int = Field(3600, ge=60, le=86400, description="a refresh token lapses after this long unused")
    max_age_s: int = Field(28800, ge=60, le=86400, description="a session ends this long after its login")


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
    identity_map: dict[str, str] = Field(default_factory=dict, description="'<provider alias>/<name>' = '<local "
                                         "name>': the same person at another provider (OIDC alias, or 'saml')")

    @field_validator("oidc")
    @classmethod
    def _aliases(cls, v: dict[str, OidcConfig]) -> dict[str, OidcConfig]:
        for alias in v:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", alias) or alias == "saml":
                raise ValueError(f"issuer alias {alias!r}: letters, digits, '.', '_', '-' (not 'saml'); it "
                                 "qualifies the issuer's user and group names")
        return v

    @model_validator(mode="after")
    def _roles_are_defined_and_trusted(self) -> "AuthConfig":
        """Every role a provider may grant is an RBAC role (a typo would grant nothing, or a
        role defined later would be granted unseen), and an issuer's ``default_roles`` are
        among its ``allowed_roles`` (its trust bounds what it gives everyone, too)."""
        defined = set(self.rbac.roles)
        named: list[tuple[str, str, Iterable[str]]] = []
        for alias, c in self.oidc.items():
            named += [(f"oidc.{alias}", "allowed_roles", c.allowed_roles), (f"oidc.{alias}", "default_roles", c.default_roles)]
            beyond = sorted(set(c.default_roles) - set(c.allowed_roles))
            if beyond:
                raise ValueError(f"oidc.{alias}: default_roles {beyond} are not in its allowed_roles "
                                 f"{list(c.allowed_roles)}: an issuer grants no role it is not trusted with")
        for section, c in (("ldap", self.ldap), ("saml", self.saml)):
            if c is not None:
                named += [(section, "group_roles", c.group_roles.values()), (section, "default_roles", c.default_roles)]
        for where, key, roles in named:
            unknown = sorted(set(roles) - defined)
            if unknown:
                raise ValueError(f"{where}.{key}: unknown role(s) {unknown}; the roles are "
                                 f"{sorted(defined)} ([rbac.roles])")
        return self

    @field_validator("identity_map")
    @classmethod
    def _mapping(cls, v: dict[str, str]) -> dict[str, str]:
        for external, local in v.items():
            alias, _, name = external.partition("/")
            if not alias or not name or not valid_local_name(local):
                raise ValueError(f"{external!r} = {local!r}: keys are '<alias>/<name>', values a local user name")
        return v


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


#: A name inside a principal: no separator of the stored ACL encoding (``|``), no blanks or
#: control characters (they would make two spellings of one name, or break a filter).
NAME_FORBIDDEN = frozenset("|") | {chr(c) for c in range(0x21)} | {"\x7f"}


def valid_name(name: str) -> bool:
    return bool(name) and len(name) <= 256 and not (set(name) & NAME_FORBIDDEN)


def valid_local_name(name: str) -> bool:
    """A name of the local directory (the host's, LDAP's, a ``names = "local"`` provider's):
    no ``/`` either, which would read as another provider's qualified name (``corp/alice``)."""
    return valid_name(name) and "/" not in name


def principals_of(username: str, groups: list[str] | tuple[str, ...], namespace: str = "",
                  kind: str = "user") -> tuple[str, ...]:
    """ACL principals of an authenticated caller: themselves, their groups, and ``public``.

    ``namespace`` qualifies names that come from a provider other than the local directory
    (``user:corp/alice``). A group name that could not be a principal is left out; a user
    name that could not be one is refused. Unqualified user and group names are local ones:
    a ``/`` in them would impersonate a provider's namespace (an LDAP uid ``corp/alice``
    is not issuer corp's alice), so such a user is refused and such a group left out."""
    ns = namespace or None
    valid = valid_local_name if not namespace and kind == "user" else valid_name
    if not valid(username):
        raise AuthError("the identity provider sent a user name that cannot be a principal")
    # Validated names are written as they are (Principal.as_is), as they always were.
    return tuple(sorted({PUBLIC.text, Principal.as_is(kind, username, ns).text,  # type: ignore[arg-type]
                         *(Principal.as_is("group", g, ns).text for g in groups if valid(g))}))


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


class ApiKeys:
    """Service-account keys ``rsk_<id>_<secret>`` (:class:`ragstream.store.AuthStore`).

    A service account is ``service:<name>``: it is nobody's user, so ``apikey create root``
    cannot read root's files; its groups are exactly those the operator gave."""

    def __init__(self, store: AuthStore) -> None:
        self.store = store

    def create(self, name: str, roles: tuple[str, ...], groups: tuple[str, ...] = ()) -> str:
        if not valid_name(name) or any(not valid_name(g) for g in groups):
            raise ValueError("names and groups may not hold '|', blanks or control characters")
        return self.store.create_key(name, tuple(roles), tuple(groups))

    def revoke(self, key_id: str) -> bool:
        return self.store.revoke_key(key_id)

    def authenticate(self, key: str) -> Identity:
        try:
            k = self.store.check_key(key)
        except StoreError as exc:
            raise AuthError(str(exc)) from None
        principals = principals_of(k.name, k.groups, kind="service")
        return Identity(subject=Principal.as_is("service", k.name).text, provider="api_key", roles=k.roles,
                        principals=principals)


# -- sessions ------------------------------------------------------------------------------------


class Sessions:
    """Sessions after a login: a short-lived HS256 access token this service signs (key in
    ``<home>/keys``) naming a server-side session, and a one-time refresh token. Every use
    of an access token checks the session is live, so revocation is immediate; roles and
    principals come from the session record, fixed at login for at most ``max_age_s``."""

    def __init__(self, key_path: Path, config: SessionConfig, store: AuthStore) -> None:
        self.config = config
        self.ttl_s = config.ttl_s
        self.store = store
        if not key_path.exists():
            create_key_file(key_path)
        self._key = key_path.read_bytes()
        if len(self._key) != 32:
            raise RuntimeError(f"{key_path} does not hold a 32-byte key: remove it and restart")

    def issue(self, identity: Identity) -> str:
        """A new session for ``identity``; returns its access token."""
        return self.open(identity)[0]

    def open(self, identity: Identity) -> tuple[str, str]:
        """A new session: (access token, refresh token)."""
        s, refresh = self.store.open_session(identity.subject, identity.provider, identity.roles,
                                             identity.principals, self.config.max_age_s, self.config.refresh_ttl_s)
        return self._access(s), refresh

    def refresh(self, refresh_token: str) -> tuple[str, str, Session]:
        try:
            s, refresh = self.store.refresh(refresh_token, self.config.refresh_ttl_s)
        except StoreError as exc:
            raise AuthError(str(exc)) from None
        return self._access(s), refresh, s

    def _access(self, s: Session) -> str:
        now = int(time.time())
        return jwt.encode({"iss": SESSION_ISSUER, "aud": SESSION_AUDIENCE, "sub": s.subject, "sid": s.sid,
                           "via": s.provider, "iat": now, "nbf": now, "exp": min(now + self.ttl_s, s.expires_at),
                           "jti": uuid.uuid4().hex}, self._key, algorithm="HS256")

    def verify(self, token: str) -> Identity:
        try:
            c = jwt.decode(token, self._key, algorithms=["HS256"], audience=SESSION_AUDIENCE, issuer=SESSION_ISSUER,
                           options={"require": ["exp", "iat", "sub", "aud", "iss", "sid"]})
            s = self.store.session(str(c["sid"]))
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid session token: {exc}") from None
        except StoreError as exc:
            raise AuthError(str(exc)) from None
        return Identity(subject=s.subject, provider=f"session:{s.provider}", roles=s.roles,
                        principals=s.principals, claims=c)

    def revoke(self, *, sid: str | None = None, subject: str | None = None) -> int:
        return self.store.revoke_sessions(sid=sid, subject=subject)


# -- OIDC ----------------------------------------------------------------------------------------


class OidcProvider:
    """Bearer JWTs from one issuer, checked against its JWKS (keys cached; an unknown
    ``kid`` refetches the set, at most once per ``refresh_cooldown_s``: that is how key
    rotation arrives, and why random kids cannot make us hammer the provider)."""

    def __init__(self, name: str, config: OidcConfig, identity_map: dict[str, str] | None = None) -> None:
        self.name = name
        self.config = config
        self.identity_map = identity_map or {}
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
        # An issuer grants only what it is trusted with; the rest of its claim is ignored.
        granted = tuple(sorted(({str(r) for r in roles} & set(c.allowed_roles)) | set(c.default_roles)))
        subject, principals = provider_principals(self.name, c.names, self.identity_map, username,
                                                  [str(g) for g in groups])
        return Identity(subject=subject, provider=f"oidc:{self.name}", roles=granted, principals=principals,
                        claims=claims)


def provider_principals(alias: str, names: str, identity_map: dict[str, str], username: str,
                        groups: list[str]) -> tuple[str, tuple[str, ...]]:
    """Subject and principals of a user of provider ``alias``: qualified by the alias
    (``user:corp/alice``, ``group:corp/eng``) unless the provider's names are the host's
    (``names = "local"``) or ``[identity_map]`` says ``corp/alice`` is local ``alice``."""
    if not valid_name(username):
        raise AuthError("the identity provider sent a user name that cannot be a principal")
    if names == "local":  # its names are the host's: no provider's namespace (no '/')
        principals = principals_of(username, groups)
        return Principal.as_is("user", username).text, principals
    local = identity_map.get(f"{alias}/{username}")  # a key of the map, not a principal
    user = Principal.as_is("user", local) if local is not None else Principal.as_is("user", username, alias)
    ps = {PUBLIC.text, user.text} | {Principal.as_is("group", g, alias).text for g in groups if valid_name(g)}
    return user.text, tuple(sorted(ps))


# -- LDAP / Active Directory ---------------------------------------------------------------------


class LdapProvider:
    """Bind as the user over TLS (ldaps:// or StartTLS), read the user's entry for the
    directory's own name, then the groups whose member is the user's DN.

    The name typed at login only finds the entry: ``ALICE``, ``" alice"`` and ``alice``
    bind to the same entry in a directory that ignores case and surrounding blanks, so the
    subject is the entry's ``username_attribute`` (trimmed, and case-folded when the
    directory ignores case) — one person, one subject, one set of principals."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config

    def _server(self) -> Any:
        import ssl

        import ldap3

        c = self.config
        tls = None
        if c.url.startswith("ldaps://") or c.start_tls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                            ca_certs_file=str(c.ca_file) if c.ca_file else None)
        return ldap3.Server(c.url, connect_timeout=c.timeout_s, use_ssl=c.url.startswith("ldaps://"), tls=tls)

    def login(self, username: str, password: str) -> Identity:
        import ldap3
        from ldap3.core.exceptions import LDAPBindError, LDAPException, LDAPInvalidCredentialsResult
        from ldap3.utils.conv import escape_filter_chars
        from ldap3.utils.dn import escape_rdn

        c = self.config
        if not username.strip() or not password:
            raise AuthError("username and password are required")  # an empty password would be an anonymous bind
        user_dn = c.user_dn_template.format(username=escape_rdn(username))
        bind = ldap3.AUTO_BIND_TLS_BEFORE_BIND if c.start_tls else ldap3.AUTO_BIND_NO_TLS
        try:
            conn = ldap3.Connection(self._server(), user=user_dn, password=password, auto_bind=bind,
                                    receive_timeout=c.timeout_s, raise_exceptions=True)
        except (LDAPBindError, LDAPInvalidCredentialsResult):
            raise AuthError("invalid username or password") from None
        except LDAPException as exc:
            raise ConnectionError(f"directory unavailable: {type(exc).__name__}") from None
        try:
            conn.search(user_dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[c.username_attribute])
            if not conn.entries:
                raise AuthError("invalid username or password")
            entry = conn.entries[0]
            names = [str(v).strip() for v in entry[c.username_attribute].values] if c.username_attribute in entry \
                else []
            typed = username.strip().lower() if c.case_insensitive else username.strip()
            canonical = next((n for n in names if (n.lower() if c.case_insensitive else n) == typed),
                             names[0] if names else "")
            if c.case_insensitive:
                canonical = canonical.lower()
            if not canonical:
                raise AuthError(f"the directory entry has no {c.username_attribute}: ask its administrator")
            conn.search(c.group_base, c.group_filter.format(user_dn=escape_filter_chars(entry.entry_dn)),
                        attributes=[c.group_name_attribute])
            groups = sorted(str(e[c.group_name_attribute].value) for e in conn.entries)
        except LDAPException as exc:
            raise ConnectionError(f"directory unavailable: {type(exc).__name__}") from None
        finally:
            conn.unbind()
        roles = tuple(sorted({c.group_roles[g] for g in groups if g in c.group_roles} | set(c.default_roles)))
        principals = principals_of(canonical, groups)  # refuses a uid that cannot be a principal
        return Identity(subject=Principal.as_is("user", canonical).text, provider="ldap", roles=roles,
                        principals=principals)


# -- SAML 2.0 ------------------------------------------------------------------------------------


class SamlProvider:
    """IdP-initiated or SP-initiated Web SSO, HTTP-POST binding, through pysaml2: the
    response must carry a signed assertion from the configured IdP (its metadata), meant
    for this SP (audience), within its validity window; attributes give name and groups."""

    def __init__(self, config: SamlConfig, identity_map: dict[str, str] | None = None) -> None:
        from saml2 import BINDING_HTTP_POST
        from saml2.client import Saml2Client
        from saml2.config import SPConfig

        self.config = config
        self.identity_map = identity_map or {}
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
        subject, principals = provider_principals("saml", c.names, self.identity_map, username, groups)
        return Identity(subject=subject, provider="saml", roles=roles, principals=principals)


# -- putting it together -------------------------------------------------------------------------


class Authenticator:
    def __init__(self, config: AuthConfig, home: Path) -> None:
        self.config = config
        self.rbac = Rbac(config.rbac)
        self.store = AuthStore(home / "keys")
        self.api_keys = ApiKeys(self.store)
        self.sessions = Sessions(home / "keys" / "session.key", config.session, self.store)
        self.oidc = {c.issuer: OidcProvider(name, c, config.identity_map) for name, c in config.oidc.items()}
        self.ldap = LdapProvider(config.ldap) if config.ldap else None
        self.saml = SamlProvider(config.saml, config.identity_map) if config.saml else None

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
