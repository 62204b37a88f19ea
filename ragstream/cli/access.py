"""`ragstream api`, `apikey`: the retrieval API and its keys."""

from __future__ import annotations

import re

import click

from ragstream.cli.app import cli, friendly, record_admin_action, say, settings, UserError
from schemas.principals import PUBLIC, Principal


# --------------------------------------------------------------------------------- api
@cli.command()
@click.option("--host", default=None, help="Interface to listen on (default: RAGSTREAM_API_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: RAGSTREAM_API_PORT, 8800).")
@friendly
def api(host: str | None, port: int | None) -> None:
    """Serve the retrieval API: ACL-filtered search, documents, admin (OpenAPI at /docs).

    Authentication and roles come from RAGSTREAM_AUTH_FILE (OIDC issuers, LDAP, sessions,
    rate limit, RBAC); API keys from `ragstream apikey create`. See docs/api.md and
    docs/security.md. X-Forwarded-For is believed only from RAGSTREAM_API_TRUSTED_PROXIES.
    """
    from ragstream.api import serve

    s = settings()
    say(f"retrieval API on http://{host or s.api_host}:{port or s.api_port}  (OpenAPI: /openapi.json, docs: /docs)")
    serve(s, host or s.api_host, port or s.api_port)


@cli.group()
def apikey() -> None:
    """API keys for service accounts: shown once at creation, stored only as a hash."""


@apikey.command("create")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help="Role(s) of the account (repeatable).")
@click.option("--group", "groups", multiple=True, help="Group principal(s) for document ACLs (repeatable).")
@friendly
def apikey_create(name: str, roles: tuple[str, ...], groups: tuple[str, ...]) -> None:
    """Create a key for service account NAME and print it (the only time it is shown).

    The account is the principal service:NAME — never user:NAME, so `apikey create root`
    reads nothing of root's — and it reads documents of exactly the groups given with
    --group (and public ones). Keys live hashed in RAGSTREAM_HOME/keys/auth.db (0600).
    """
    from ragstream.auth import Authenticator, load_auth_config

    s = settings()
    auth = Authenticator(load_auth_config(s.auth_file), s.home)
    unknown = [r for r in roles if r not in auth.rbac.roles]
    if unknown:
        raise UserError(f"unknown role(s) {unknown}; roles are {', '.join(auth.rbac.roles)}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise UserError("NAME may hold letters, digits, '.', '_' and '-' (at most 64)")
    try:
        key = auth.api_keys.create(name, roles, groups)
    except ValueError as exc:
        raise UserError(f"ragstream: {exc}") from None
    account = Principal.as_is("service", name).text
    record_admin_action(s, "admin.apikey.create", account, {"roles": list(roles), "groups": list(groups),
                                                         "key_id": key.split("_")[1]})
    say(f"{account}: roles {', '.join(roles)}; reads documents of "
        + ", ".join([PUBLIC.text, *(Principal.as_is("group", g).text for g in groups)]))
    click.echo(key)


@apikey.command("list")
@friendly
def apikey_list() -> None:
    """List keys (id, account, roles, groups); never the secrets."""
    from ragstream.store import AuthStore

    keys = AuthStore(settings().home / "keys").keys()
    for k in keys:
        click.echo(f"{k.key_id}  {Principal.as_is('service', k.name).text:<32} roles={','.join(k.roles)}  "
                   f"groups={','.join(k.groups)}")
    say(f"{len(keys)} key(s)")


@apikey.command("revoke")
@click.argument("key_id")
@friendly
def apikey_revoke(key_id: str) -> None:
    """Revoke a key by its id (the part after 'rsk_', before the next '_')."""
    from ragstream.store import AuthStore

    s = settings()
    if not AuthStore(s.home / "keys").revoke_key(key_id):
        raise UserError(f"no key with id {key_id} (see `ragstream apikey list`)")
    record_admin_action(s, "admin.apikey.revoke", key_id, {})
    say(f"revoked {key_id}")
