"""The SharePoint document-library connector (see the package docstring)."""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from producers.extract import ExtractionError, UnsupportedContent, content_type_for, extract
from producers.sharepoint.auth import token_provider
from producers.sharepoint.client import InvalidChangeToken, SharePointClient
from producers.sharepoint.permissions import CLAIM_NS, SHAREPOINT_NS, PrincipalMapper
from ragstream.connector import (Capability, Connector, ConnectorError, Excluded, ListedDocument, UpdateStats)
from ragstream.failures import Transient
from ragstream.logging import get_logger
from ragstream.publisher import Publisher
from ragstream.settings import Settings
from schemas import topics
from schemas.events import Acl

log = get_logger(__name__)

#: Change types (SP.ChangeType) of the library itself that can change every item's
#: effective permissions: AssignmentAdd, AssignmentDelete, ScopeAdd, ScopeDelete.
LIBRARY_PERMISSION_CHANGES = frozenset({11, 12, 17, 18})
#: Keys that would put a secret in the sources file.
_SECRET_KEYS = ("client_secret", "access_token", "certificate_key", "certificate_passphrase", "password")


class SharePointConfig(BaseModel):
    """``[sources.<id>] kind = "sharepoint"`` in the sources file. Secrets are named, never
    written: ``*_env`` is an environment variable, ``*_file`` a file holding the secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_url: str = Field(description="the site, e.g. https://contoso.sharepoint.com/sites/eng")
    library: str = Field("Documents", min_length=1, description="the document library's title")
    auth: Literal["client_secret", "certificate", "access_token"]
    tenant: str | None = Field(None, description="app-only: the tenant (contoso.onmicrosoft.com or its id)")
    client_id: str | None = Field(None, description="app-only: the app registration's client id")
    authority: str | None = Field(None, description="app-only: the login authority (default "
                                                    "https://login.microsoftonline.com/<tenant>)")
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    certificate_key_file: Path | None = Field(None, description="PEM private key of the app's certificate")
    certificate_thumbprint: str | None = Field(None, pattern=r"^[0-9A-Fa-f]{40}$")
    certificate_passphrase_env: str | None = None
    access_token_env: str | None = Field(None, description="delegated: a token with the user's permissions")
    access_token_file: Path | None = None
    ca_bundle: Path | None = Field(None, description="CA certificates (PEM) to trust for the site and the login "
                                                     "authority (a private CA, a TLS-inspecting proxy)")
    directory: str = Field("entra", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                           description="the auth file's alias of the tenant's OIDC issuer ([oidc.<alias>])")
    everyone_is_public: bool = False
    page_size: int = Field(200, ge=1, le=5000)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in _SECRET_KEYS:
                    raise ValueError(f"{key}: never write a secret in the sources file; name it with "
                                     f"{key}_env (an environment variable) or {key}_file (a file)"
                                     if key != "certificate_key" else
                                     "certificate_key: name the PEM file with certificate_key_file")
        return data

    @field_validator("site_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be the site's http(s) URL, e.g. https://contoso.sharepoint.com/sites/eng")
        return v.rstrip("/")

    @field_validator("directory")
    @classmethod
    def _directory(cls, v: str) -> str:
        if v in (SHAREPOINT_NS, CLAIM_NS):
            raise ValueError(f"{v!r} is the namespace of SharePoint's own names; choose the OIDC issuer's alias")
        return v

    @model_validator(mode="after")
    def _auth_fields(self) -> SharePointConfig:
        def one_of(env: str, file: str) -> None:
            if (getattr(self, env) is None) == (getattr(self, file) is None):
                raise ValueError(f"auth = {self.auth!r} needs exactly one of {env} and {file}")

        if self.auth in ("client_secret", "certificate"):
            missing = [f for f in ("tenant", "client_id") if not getattr(self, f)]
            if missing and not (self.authority and self.client_id):
                raise ValueError(f"auth = {self.auth!r} needs {' and '.join(missing)}")
        if self.auth == "client_secret":
            one_of("client_secret_env", "client_secret_file")
        elif self.auth == "certificate":
            if self.certificate_key_file is None or self.certificate_thumbprint is None:
                raise ValueError("auth = 'certificate' needs certificate_key_file and certificate_thumbprint")
        else:
            one_of("access_token_env", "access_token_file")
        return self


class SharePointSource(Connector):
    """One document library of one SharePoint site."""

    kind = "sharepoint"
    capabilities = frozenset({Capability.full_listing, Capability.incremental, Capability.permission_sync,
                              Capability.deletes})
    Config = SharePointConfig

    def __init__(self, settings: Settings, config: SharePointConfig, source_id: str, *,
                 publisher: Publisher | None = None, client: SharePointClient | None = None) -> None:
        self.config = config
        self.mapper = PrincipalMapper(config.site_url, config.directory, config.everyone_is_public)
        self.client = client or SharePointClient(config.site_url, config.library, token_provider(config),
                                                 retry_budget_s=settings.retry_budget_s, page_size=config.page_size,
                                                 verify=str(config.ca_bundle) if config.ca_bundle else None)
        #: Full listings made by this instance (initial sync, expired token, force).
        self.full_syncs = 0
        super().__init__(settings, source_id, {"site_url": config.site_url, "library": config.library}, publisher)

    @classmethod
    def open(cls, settings: Settings, source_id: str, identity: dict, publisher: Publisher | None = None
             ) -> SharePointSource:
        """Re-open from the sources file: the cursor records where, never how to sign in."""
        import tomllib

        if settings.sources_file is None:
            raise ConnectorError(f"source {source_id!r} is a SharePoint library ({identity.get('site_url')}, "
                                 f"{identity.get('library')!r}); its sign-in settings are in the sources file: "
                                 "set RAGSTREAM_SOURCES_FILE")
        try:
            section = tomllib.loads(settings.sources_file.read_text(encoding="utf-8")).get("sources", {}).get(source_id)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConnectorError(f"cannot read the sources file {settings.sources_file}: {exc}") from None
        if not isinstance(section, dict) or section.get("kind") != cls.kind:
            raise ConnectorError(f"source {source_id!r} is not declared as a sharepoint source in {settings.sources_file}")
        from pydantic import ValidationError

        try:
            config = SharePointConfig.model_validate({k: v for k, v in section.items() if k != "kind"})
        except ValidationError as exc:
            raise ConnectorError(f"[sources.{source_id}] in {settings.sources_file} is invalid: "
                                 + "; ".join(f"{'.'.join(map(str, e['loc'])) or '(section)'}: {e['msg']}"
                                             for e in exc.errors())) from None
        return cls(settings, config, source_id, publisher=publisher)

    @classmethod
    def from_config(cls, settings: Settings, source_id: str, config: SharePointConfig,
                    publisher: Publisher | None = None) -> SharePointSource:
        return cls(settings, config, source_id, publisher=publisher)

    def test_connection(self) -> str:
        lib = self.client.library()
        return (f"{self.config.site_url}: library {lib['title']!r}, {lib['item_count']} item(s); "
                f"change log reachable (token {str(lib['change_token']).rsplit(';', 1)[-1]})")

    # -- sync -------------------------------------------------------------------------------------
    def sync(self, native_ids: Iterable[str] | None = None, *, force: bool = False,
             progress: Callable[[int], None] | None = None,
             on_publish: Callable[[str, int], None] | None = None) -> UpdateStats:
        """``native_ids`` (item ids): re-read those items. Otherwise follow the change log
        from the cursor's change token, or list the whole library when there is no token,
        when it expired, or with ``force``."""
        stats = UpdateStats()
        self._on_publish = on_publish
        self.client.reset()  # a token per sync: they expire
        try:
            if native_ids is not None:
                for nid in sorted(set(native_ids)):
                    self._refresh(nid, stats, force)
                    if progress:
                        progress(1)
            elif self.cursor.position.get("change_token") and not force:
                try:
                    self._incremental(self.cursor.position["change_token"], stats, progress)
                except InvalidChangeToken as exc:
                    log.warning("sharepoint change token refused: full resync", source=self.source_id,
                                reason=str(exc))
                    self._full(stats, False, progress)
            else:
                self._full(stats, force, progress)
        except BaseException:
            self.finish(stats)  # keep what was acknowledged; the change token did not move
            raise
        return self.finish(stats)

    def _full(self, stats: UpdateStats, force: bool, progress: Callable[[int], None] | None) -> None:
        """Every item, compared with the cursor: only what differs is published, items gone
        are deleted. The token is read before the listing, so nothing changed during the
        listing is missed (it is seen again, harmlessly, by the next incremental sync)."""
        self.full_syncs += 1
        token = self.client.library()["change_token"]
        listed = [it for it in self.client.items() if it["is_file"]]
        seen = set()
        for it in listed:
            nid = str(it["id"])
            seen.add(nid)
            self._consider(nid, it, stats, force)
            if progress:
                progress(1)
        for nid in sorted((set(self.cursor.items) | set(self.cursor.skipped)) - seen):
            self.cursor.skipped.pop(nid, None)
            if nid in self.cursor.items:
                self.publish_delete(nid, stats=stats)
        self.cursor.advance("change_token", token)

    def _incremental(self, token: str, stats: UpdateStats, progress: Callable[[int], None] | None) -> None:
        changes = [c for page in self.client.changes(token) for c in page]
        if not changes:
            return
        ids = list(dict.fromkeys(str(c["item_id"]) for c in changes if c["item_id"] is not None))
        for nid in ids:
            self._refresh(nid, stats, False)
            if progress:
                progress(1)
        if any(c["item_id"] is None and c["type"] in LIBRARY_PERMISSION_CHANGES for c in changes):
            # The library's permissions changed: every item inheriting them may read differently.
            for nid in sorted(set(self.cursor.items) - set(ids)):
                self._recheck_acl(nid, stats)
        self.cursor.advance("change_token", changes[-1]["token"])

    def _refresh(self, nid: str, stats: UpdateStats, force: bool) -> None:
        it = self.client.item(int(nid)) if nid.isdigit() else None
        if it is None or not it["is_file"]:
            self.cursor.skipped.pop(nid, None)
            if nid in self.cursor.items:
                self.publish_delete(nid, stats=stats)
            return
        self._consider(nid, it, stats, force)

    def _recheck_acl(self, nid: str, stats: UpdateStats) -> None:
        prev = self.cursor.items[nid]
        acl = self._acl(nid)
        if acl is None:
            self.publish_delete(nid, stats=stats)
        elif list(acl.principals) != prev.get("acl"):
            self.publish_acl(nid, acl, stats=stats)
        else:
            stats.unchanged += 1

    def _consider(self, nid: str, it: dict[str, Any], stats: UpdateStats, force: bool) -> None:
        """Publish the item if its content, name or permissions changed."""
        prev = self.cursor.items.get(nid)
        seen = {"etag": it["etag"], "ref": it["ref"]}
        if not force and prev and (prev.get("etag"), prev.get("ref")) == (it["etag"], it["ref"]):
            self._recheck_acl(nid, stats)  # same bytes, same name: the permissions may differ
            return
        skip = self.cursor.skipped.get(nid)
        if not force and skip and (skip.get("etag"), skip.get("ref")) == (it["etag"], it["ref"]):
            stats.skip(skip.get("reason", "unsupported"))  # logged when first seen
            return
        name = it["name"] or it["ref"].rsplit("/", 1)[-1]
        if it["length"] > self.settings.max_document_bytes:
            return self._skip(nid, "too_large", f"{it['length'] / 2**20:.1f} MiB is above RAGSTREAM_MAX_DOCUMENT_BYTES "
                                                f"({self.settings.max_document_bytes / 2**20:.1f} MiB)", stats, seen)
        ctype = content_type_for(name)
        if ctype is None:
            return self._skip(nid, "unsupported", f"file type {Path(name).suffix or '(none)'} is not indexed", stats, seen)
        data = self.client.content(int(nid))
        if data is None:  # deleted meanwhile
            return self._refresh(nid, stats, force)
        try:
            text = extract(data, ctype)
        except UnsupportedContent as exc:
            return self._skip(nid, "unsupported", str(exc), stats, seen)
        except RecursionError:
            return self._skip(nid, "unsupported", "the document is nested too deeply to extract its text", stats, seen)
        except ExtractionError as exc:
            self.record_skip(nid, "extraction_failed", str(exc), stats=UpdateStats(), **seen)
            stats.failed += 1
            self.publisher.dead_letter("ingest", topic=topics.CHANGES, partition=-1, offset=-1, key=self.doc_id(nid),
                                       value=data if len(data) <= self.settings.inline_max_bytes else b"", error=exc)
            if nid in self.cursor.items:
                self.publish_delete(nid, stats=stats)
            return
        if len(text.encode("utf-8", errors="replace")) > self.settings.max_text_bytes:
            return self._skip(nid, "text_too_large", "its text is above RAGSTREAM_MAX_TEXT_BYTES", stats, seen)
        acl = self._acl(nid)
        if acl is None:
            return self._refresh(nid, stats, force)
        sha = hashlib.sha256(data + b"\0" + it["ref"].encode()).hexdigest()  # a rename republishes title and uri
        if prev and prev.get("sha256") == sha and not force:
            prev.update(seen)  # same bytes under a new ETag (e.g. a metadata-only save)
        origin = urlsplit(self.config.site_url)
        self.publish_upsert(nid, text, stats=stats, acl=acl, content_type=ctype, title=name,
                            uri=f"{origin.scheme}://{origin.netloc}{quote(it['ref'])}",
                            changed_at=_when(it["modified"]),
                            extra={"path": it["ref"], "library": self.config.library, "etag": str(it["etag"])},
                            force=force, fingerprint=sha, remember=seen)

    def _skip(self, nid: str, reason: str, detail: str, stats: UpdateStats, seen: dict[str, Any]) -> None:
        self.record_skip(nid, reason, detail, stats=stats, **seen)
        if nid in self.cursor.items:  # indexed before: what is searchable is never older than the source
            self.publish_delete(nid, stats=stats)

    def _acl(self, nid: str) -> Acl | None:
        assignments = self.client.role_assignments(int(nid))
        if assignments is None:
            return None
        return Acl(principals=self.mapper.principals(assignments))

    # -- full listing (ragstream verify) -------------------------------------------------------
    def full_listing(self) -> Iterator[ListedDocument | Excluded]:
        """What the library holds now (one listing, and each item's permissions), against
        what this source last published."""
        for it in self.client.items():
            if not it["is_file"]:
                continue
            nid = str(it["id"])
            prev, skip = self.cursor.items.get(nid), self.cursor.skipped.get(nid)
            if skip and (skip.get("etag"), skip.get("ref")) == (it["etag"], it["ref"]):
                kind = "dead_lettered" if skip["reason"] == "extraction_failed" else "skipped"
                yield Excluded(self.doc_id(nid), kind, f"{skip['reason']}: {skip.get('detail', '')}")
                continue
            acl = self._acl(nid)
            if acl is None:
                continue  # deleted while listing
            if prev is None:
                yield ListedDocument(self.doc_id(nid), None, acl.principals, changed_since_published=True)
                continue
            changed = (prev.get("etag"), prev.get("ref")) != (it["etag"], it["ref"]) or list(acl.principals) != prev.get("acl")
            yield ListedDocument(self.doc_id(nid), prev["version"], tuple(prev.get("acl", ())),
                                 changed_since_published=changed)

    # -- live -----------------------------------------------------------------------------------
    def watch(self, stop: threading.Event, on_sync: Callable[[UpdateStats], None] | None = None,
              interval_s: float = 30.0) -> None:
        """Follow the change log every ``interval_s`` until ``stop``; a throttled or
        unreachable site, or refused credentials (a token file being renewed), is logged and
        tried again at the next round."""
        while not stop.is_set():
            try:
                stats = self.sync()
            except Transient as exc:
                log.warning("sharepoint sync postponed", source=self.source_id, reason=str(exc))
            except ConnectorError as exc:  # refused credentials: say so every round, keep watching
                log.error("sharepoint sync failed", source=self.source_id, reason=str(exc))
            else:
                if on_sync and stats.published:
                    on_sync(stats)
            stop.wait(interval_s)


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}T", value):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None
