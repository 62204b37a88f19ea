"""`ragstream search`: search what you may see."""

from __future__ import annotations

from typing import Any

import click

from ragstream.cli.app import cli, friendly, record_admin_action, say, settings, UserError
from ragstream.settings import Settings
from schemas.principals import Principal, is_principal


# ------------------------------------------------------------------------------ search
@cli.command()
@click.argument("query")
@click.option("--limit", "-n", default=5, show_default=True, help="How many results.")
@click.option("--as", "principals", multiple=True, metavar="PRINCIPAL",
              help="Search as user:<id> / group:<id> / public (repeatable). Default: you and your groups. "
                   "Principals that are not yours need --key with an admin key.")
@click.option("--key", envvar="RAGSTREAM_API_KEY", default=None, metavar="API_KEY",
              help="An API key whose role grants principals:assume (admin): lets --as name anyone. "
                   "Read from RAGSTREAM_API_KEY when not given.")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "lexical"]), default=None,
              help="hybrid: words (BM25), meaning (vectors) and verbatim identifiers, fused by rank (default); "
                   "dense: meaning only; lexical: words and identifiers only.")
@click.option("--source", "sources", multiple=True, metavar="SOURCE", help="Only this source (repeatable).")
@click.option("--classification", "classifications", multiple=True,
              type=click.Choice(["public", "internal", "confidential", "restricted"]),
              help="Only documents of this classification (repeatable).")
@click.option("--modified-after", type=click.DateTime(), default=None, metavar="DATE",
              help="Only documents modified at or after this date/time (UTC), e.g. 2026-01-31.")
@click.option("--modified-before", type=click.DateTime(), default=None, metavar="DATE",
              help="Only documents modified before this date/time (UTC).")
@friendly
def search(query: str, limit: int, principals: tuple[str, ...], key: str | None, mode: str | None,
           sources: tuple[str, ...], classifications: tuple[str, ...], modified_after: Any,
           modified_before: Any) -> None:
    """Search the index; only documents the principals may read are considered.

    \b
    Who is trusted with what: you search as yourself (your login and your groups, as the
    file-system producer names them). --as with any other principal is impersonation: it
    needs an API key of a role with principals:assume (admin), checked against the key
    store in RAGSTREAM_HOME. This check is the CLI's; the Kafka broker and milvus-lite of
    the local stack do not yet authenticate clients (see docs/security.md).
    """
    from datetime import timezone

    from consumers.milvus import DEFAULT_MODE, IndexSchemaError, MilvusIndex, SearchFilters
    from ragstream.snippets import snippet
    from streams.embedding import make_embedder, model_dim

    bad = [p for p in principals if not is_principal(p)]
    if bad:  # one holding "|" would match across the stored ACL's separators
        raise UserError(f"--as {', '.join(map(repr, bad))}: not a principal; use user:<id>, group:<id>, "
                        "service:<id> or public (no blanks or '|')")
    s = settings()
    own = _local_principals()
    who = list(principals) or own
    _may_search_as(s, who, own, key)
    epoch = (lambda d: None if d is None else int(d.replace(tzinfo=timezone.utc).timestamp()))
    filters = SearchFilters(sources=sources, classifications=classifications,
                            modified_after=epoch(modified_after), modified_before=epoch(modified_before))
    index = MilvusIndex(s.resolved_milvus_uri, s.collection, model_dim(s), acl_refresh_s=s.acl_refresh_s,
                        search_consistency=s.search_consistency)
    mode = index.effective_mode(mode or DEFAULT_MODE)
    vector = make_embedder(s).embed([query])[0] if mode != "lexical" else None
    try:
        hits = index.search(vector, who, limit=limit, query=query, mode=mode, filters=filters)
    except IndexSchemaError as exc:
        raise UserError(str(exc)) from None
    if not hits:
        say(f"no results visible to {', '.join(who)}")
        return
    for rank, h in enumerate(hits, 1):
        click.echo(f"{rank}. [{h.score:.3f}] {h.title}  ({h.source})")
        click.echo(f"   {h.uri}" + (f"  § {h.heading}" if h.heading else ""))
        text, spans = snippet(h.text, query, width=200)
        marked, at = [], 0
        for start, end in spans:
            marked += [text[at:start], click.style(text[start:end], bold=True)]
            at = end
        click.echo("   " + "".join([*marked, text[at:]]))


def _may_search_as(s: Settings, who: list[str], own: list[str], key: str | None) -> None:
    """Raise unless ``who`` are the caller's own principals or ``key`` may assume any."""
    foreign = sorted(set(who) - set(own) - {"public"})
    if not foreign:
        return
    if not key:
        raise UserError(f"--as {', '.join(foreign)}: not your principal(s) (yours: {', '.join(own)}, public); "
                        "searching as someone else needs --key with an admin API key (principals:assume)")
    from ragstream.auth import AuthError, Authenticator, load_auth_config

    auth = Authenticator(load_auth_config(s.auth_file), s.home)
    try:
        caller = auth.api_keys.authenticate(key)
    except AuthError as exc:
        raise UserError(f"--key: {exc}") from None
    if not auth.rbac.allows(caller.roles, "principals:assume"):
        raise UserError(f"--key: {caller.subject} may not search as others (its roles lack principals:assume)")
    record_admin_action(s, "admin.search.as", ",".join(foreign), {"by": caller.subject})


def _local_principals() -> list[str]:
    """You, as the file-system producer names principals (same owner/group mapping)."""
    import os

    from producers.filesystem import group_name, user_name

    groups = {group_name(g) for g in os.getgroups()} | {group_name(os.getgid())}
    return [Principal.as_is("user", user_name(os.getuid())).text,
            *sorted(Principal.as_is("group", g).text for g in groups)]
