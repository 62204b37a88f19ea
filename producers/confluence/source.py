"""The Confluence connector (see the package docstring)."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from producers.confluence.client import ConfluenceClient, ConfluenceUnavailable, Forbidden
from producers.confluence.config import ConfluenceConfig
from producers.confluence.permissions import Level, PrincipalMapper
from producers.confluence.storage import storage_to_text
from producers.extract import CONTENT_TYPES, ExtractionError, UnsupportedContent, content_type_for, extract
from ragstream.connector import Capability, Connector, ConnectorError, Cursor, Excluded, ListedDocument, UpdateStats
from ragstream.logging import get_logger
from ragstream.publisher import Publisher
from ragstream.settings import Settings
from schemas.events import Acl

log = get_logger(__name__)

_SUPPORTED_MEDIA = frozenset(CONTENT_TYPES.values())


def _when(content: dict) -> datetime | None:
    raw = (content.get("version") or {}).get("when")
    if not raw:
        return None
    try:
        dt = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _number(content: dict) -> int | None:
    n = (content.get("version") or {}).get("number")
    return int(n) if isinstance(n, (int, str)) and str(n).isdigit() else None


class ConfluenceSource(Connector):
    """One space of a Confluence Server / Data Center site. See :class:`ConfluenceConfig`."""

    Config = ConfluenceConfig
    kind = "confluence"
    capabilities = frozenset({Capability.full_listing, Capability.incremental, Capability.permission_sync,
                              Capability.deletes})

    def __init__(self, settings: Settings, config: ConfluenceConfig, source_id: str,
                 publisher: Publisher | None = None, client: ConfluenceClient | None = None) -> None:
        self.config = config
        self.client = client or ConfluenceClient(config, source_id, settings.retry_budget_s)
        self.mapper = PrincipalMapper(config.directory, config.anonymous_is_public)
        self.tz = ZoneInfo(config.timezone)
        self._reset_caches()
        super().__init__(settings, source_id, {"url": config.url, "space": config.space}, publisher)
        # What verify, DLQ replay and DSR need to reopen this source when the sources file
        # does not declare it: names of variables and files, never a secret.
        self.cursor.config.clear()
        self.cursor.config.update(config.model_dump(mode="json"))

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings, source_id: str, identity: dict, publisher: Publisher | None = None
             ) -> ConfluenceSource:
        saved = Cursor(settings, source_id, cls.kind, identity).config
        try:
            config = ConfluenceConfig.model_validate(saved)
        except ValidationError:
            raise ConnectorError(f"the Confluence source {source_id!r} ({identity.get('url')}, space "
                                 f"{identity.get('space')}) has no usable saved configuration in its cursor: "
                                 "declare it in the sources file (RAGSTREAM_SOURCES_FILE)") from None
        return cls(settings, config, source_id, publisher=publisher)

    @classmethod
    def from_config(cls, settings: Settings, source_id: str, config: ConfluenceConfig,
                    publisher: Publisher | None = None) -> ConfluenceSource:
        return cls(settings, config, source_id, publisher=publisher)

    def test_connection(self) -> str:
        budget = min(self.settings.retry_budget_s, 15.0)  # a test answers quickly
        space = self.client.space(budget_s=budget)
        if space is None:
            raise ConnectorError(f"source {self.source_id!r}: space {self.config.space!r} does not exist at "
                                 f"{self.config.url}, or the account ({self.config.credential_origin()}) may not "
                                 "see it")
        found = self.client.call("search", lambda api: api.cql(self._cql(), limit=1, excerpt="none"), budget_s=budget)
        total = (found or {}).get("totalSize", (found or {}).get("size", "?"))
        perms = self.client.space_permissions()
        return (f"space {self.config.space} ({space.get('name', '?')}) at {self.config.url}: {total} "
                f"{'/'.join(self.config.content_types)}(s); {len(perms)} space permission(s) readable; "
                f"signed in with {self.config.credential_origin()}")

    # -- ids and queries -------------------------------------------------------------------
    def _scope(self) -> dict[str, Any]:
        c = self.config
        return {"url": c.url, "space": c.space, "types": list(c.content_types), "attachments": c.attachments}

    def _cql(self, since: datetime | None = None, attachments: bool = False) -> str:
        types = list(self.config.content_types) + (["attachment"] if attachments else [])
        q = f'space = "{self.config.space}" and type in ({", ".join(types)})'
        if since is not None:
            # minute precision, in the site's time zone
            q += f' and lastmodified >= "{since.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")}"'
            return q + " order by lastmodified asc"
        return q + " order by created asc"

    def _uri(self, content: dict) -> str | None:
        webui = (content.get("_links") or {}).get("webui")
        return f"{self.config.url}{webui}" if webui else None

    def _attachments_of(self, page_id: str) -> set[str]:
        """The attachments of a page this source published or skipped (native ids)."""
        out = set()
        for table in (self.cursor.items, self.cursor.skipped):
            out |= {nid for nid, e in table.items() if e.get("kind") == "attachment" and e.get("page") == page_id}
        return out

    # -- sync --------------------------------------------------------------------------------
    def _reset_caches(self) -> None:
        self._space_level: Level | None = None
        self._restrictions: dict[str, Level] = {}
        self._groups: dict[str, set[str]] = {}
        self._members: dict[str, list[str]] = {}
        self._users: dict[str, str | None] = {}
        self._seen: set[str] = set()
        #: Which incremental path the last sync took (tests, logs): "incremental", "reconcile", "ids".
        self.last_mode = ""

    def sync(self, native_ids: Iterable[str] | None = None, *, force: bool = False,
             progress: Callable[[int], None] | None = None,
             on_publish: Callable[[str, int], None] | None = None) -> UpdateStats:
        """Publish what changed. ``native_ids``: those items (page ids, ``<page>/<attachment>``
        ids) as they are now. Otherwise a **CQL query** for what changed since the cursor's
        position (``lastmodified`` minus the overlap window; results already published at
        the same (id, version) are not read again), or a **reconciliation** — the full listing,
        restrictions and space permissions read again, deletions found — when there is no
        valid position, one is due (``reconcile_interval_s``) or ``force``."""
        stats = UpdateStats()
        self._on_publish = on_publish
        self._reset_caches()
        try:
            if native_ids is not None:
                self.last_mode = "ids"
                for pid in sorted({nid.partition("/")[0] for nid in native_ids}):
                    self._page(pid, stats, force)
                    if progress:
                        progress(1)
            else:
                since = self._since()
                if since is None or force or self._reconcile_due():
                    self.last_mode = "reconcile"
                    self._reconcile(stats, force, progress)
                else:
                    self.last_mode = "incremental"
                    self._incremental(since, stats, progress)
        except BaseException:
            with contextlib.suppress(Exception):
                super().finish(UpdateStats())  # keep what was acknowledged before the failure
            raise
        return self.finish(stats)

    def reconcile(self, *, force: bool = False, progress: Callable[[int], None] | None = None) -> UpdateStats:
        """A reconciliation now, whatever the schedule (deletions, permission changes)."""
        self.cursor.position.pop("reconciled_at", None)
        return self.sync(force=force, progress=progress)

    def _since(self) -> datetime | None:
        """The incremental position, or None (then a reconciliation) if there is none or it
        does not fit: another space or selection, or not a time at all."""
        pos = self.cursor.position.get("cql")
        if pos is None:
            return None
        try:
            if not isinstance(pos, dict) or pos.get("scope") != self._scope():
                raise ValueError("another scope")
            since = datetime.fromisoformat(pos["since"])
            if since.tzinfo is None:
                raise ValueError("no time zone")
            return since
        except (KeyError, TypeError, ValueError):
            log.warning("incremental position invalid or of another selection; reconciling in full",
                        source=self.source_id)
            self.cursor.position.pop("cql", None)
            return None

    def _reconcile_due(self) -> bool:
        at = self.cursor.position.get("reconciled_at")
        try:
            last = datetime.fromisoformat(at)
        except (TypeError, ValueError):
            return True
        return (datetime.now(timezone.utc) - last).total_seconds() >= self.config.reconcile_interval_s

    def _same(self, native_id: str, number: int | None) -> bool:
        """(id, version) already published — or already skipped for good at this version."""
        prev = self.cursor.items.get(native_id) or self.cursor.skipped.get(native_id)
        return prev is not None and number is not None and prev.get("cf_version") == number \
            and prev.get("reason") != "unreadable"

    def _incremental(self, since: datetime, stats: UpdateStats, progress: Callable[[int], None] | None) -> None:
        high = since
        pages: dict[str, None] = {}
        for result in self.client.search(self._cql(since - timedelta(seconds=self.config.overlap_s),
                                                   attachments=self.config.attachments)):
            c = result.get("content") or {}
            when = _when(c)
            if when is not None:
                high = max(high, when)
            if c.get("type") == "attachment":
                pid = str((c.get("container") or {}).get("id") or "")
                if pid and not self._same(f"{pid}/{c['id']}", _number(c)):
                    pages.setdefault(pid)
            elif self._same(str(c.get("id")), _number(c)):
                stats.unchanged += 1  # seen again through the overlap window: not read again
            else:
                pages.setdefault(str(c["id"]))
        for pid in pages:
            self._page(pid, stats, False)
            if progress:
                progress(1)
        self.cursor.advance("cql", {"scope": self._scope(), "since": high.isoformat()})

    def _reconcile(self, stats: UpdateStats, force: bool, progress: Callable[[int], None] | None) -> None:
        started = datetime.now(timezone.utc)
        high: datetime | None = None
        listed: dict[str, dict] = {}
        for result in self.client.search(self._cql()):
            c = result.get("content") or {}
            listed[str(c["id"])] = c
            when = _when(c)
            if when is not None:
                high = when if high is None else max(high, when)
        acls: dict[str, Acl] = {}
        for pid, c in listed.items():
            prev, skip = self.cursor.items.get(pid), self.cursor.skipped.get(pid)
            if force or not self._same(pid, _number(c)):
                acls[pid] = self._page(pid, stats, force)
            elif skip is not None:
                stats.skip(skip.get("reason", "skipped"))
                self._seen.add(pid)
            else:
                self._seen.add(pid)
                try:
                    acl = acls[pid] = self._acl(c)
                except Forbidden as exc:
                    self._unreadable(pid, str(exc), stats)
                    continue
                self._acl_only(pid, prev, acl, stats)
                for nid in self._attachments_of(pid):
                    if nid in self.cursor.items:
                        self._acl_only(nid, self.cursor.items[nid], acl, stats)
            if progress:
                progress(1)
        if self.config.attachments:
            again: set[str] = set()
            for result in self.client.search(f'space = "{self.config.space}" and type = attachment order by created asc'):
                c = result.get("content") or {}
                pid = str((c.get("container") or {}).get("id") or "")
                nid = f"{pid}/{c.get('id')}"
                if pid not in listed or nid in self._seen:
                    continue
                if force or not self._same(nid, _number(c)):
                    again.add(pid)
                else:
                    self._seen.add(nid)
                    if nid in self.cursor.skipped:
                        stats.skip(self.cursor.skipped[nid].get("reason", "skipped"))
            for pid in sorted(again):
                if acls.get(pid) is not None:
                    self._attachments(pid, acls[pid], stats, force)
        # what was published or skipped before and is no longer there: deleted at the source
        for nid in sorted(set(self.cursor.items) | set(self.cursor.skipped)):
            if nid not in self._seen:
                self._gone(nid, stats)
        self.cursor.advance("cql", {"scope": self._scope(), "since": (high or started).isoformat()})
        self.cursor.advance("reconciled_at", started.isoformat())

    # -- one page ----------------------------------------------------------------------------
    def _page(self, pid: str, stats: UpdateStats, force: bool) -> Acl | None:
        """Read the page and its attachments; publish what changed. Returns its ACL (None if
        it is gone or its restrictions cannot be read)."""
        page = self.client.page(pid)
        c = self.config
        if (page is None or page.get("status", "current") != "current" or page.get("type") not in c.content_types
                or (page.get("space") or {}).get("key") != c.space):
            self._gone(pid, stats)
            for nid in self._attachments_of(pid):
                self._gone(nid, stats)
            return None
        self._seen.add(pid)
        try:
            acl = self._acl(page)
        except Forbidden as exc:
            self._unreadable(pid, str(exc), stats)
            return None
        number, title = _number(page), str(page.get("title") or pid)
        prev = self.cursor.items.get(pid)
        seen = {"cf_version": number, "kind": "page", "title": title}
        if not force and prev and prev.get("cf_version") == number:
            self._acl_only(pid, prev, acl, stats)
        else:
            storage = ((page.get("body") or {}).get("storage") or {}).get("value") or ""
            try:
                text = storage_to_text(storage, title)
            except (UnsupportedContent, ExtractionError, RecursionError) as exc:
                self.dead_letter(pid, storage.encode("utf-8"), exc, stats=stats)
                self.cursor.skipped[pid].update(seen)
                text = None
            if text is not None:
                self._publish(pid, text, acl, stats, force, seen, title=title, uri=self._uri(page),
                              when=_when(page), author=((page.get("version") or {}).get("by") or {}).get("displayName"),
                              content_type="text/markdown", extra={"page_id": pid})
        if c.attachments:
            self._attachments(pid, acl, stats, force)
        return acl

    def _publish(self, nid: str, text: str, acl: Acl, stats: UpdateStats, force: bool, seen: dict, *, title: str,
                 uri: str | None, when: datetime | None, author: str | None, content_type: str,
                 extra: dict[str, str], sha: str | None = None) -> None:
        prev = self.cursor.items.get(nid)
        sha = sha or hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
        if not force and prev and prev.get("sha256") == sha:
            prev["cf_version"] = seen["cf_version"]  # a new version with the same text (or bytes)
            self._acl_only(nid, prev, acl, stats)
            return
        size = len(text.encode("utf-8", errors="replace"))
        if size > self.settings.max_text_bytes:
            self._skip(nid, "text_too_large", f"its text is {size / 2**20:.1f} MiB, above RAGSTREAM_MAX_TEXT_BYTES",
                       stats, seen)
            return
        self.publish_upsert(nid, text, stats=stats, acl=acl, content_type=content_type, title=title, uri=uri,
                            author=author, changed_at=when,
                            # synced_at: a document published again unchanged (a lost cursor, a
                            # reread) must not look the same to the index stage, which otherwise
                            # keeps its rows at the old version
                            extra={"space": self.config.space, "cf_version": str(seen["cf_version"]), **extra,
                                   "synced_at": datetime.now(timezone.utc).isoformat()},
                            force=True, fingerprint=sha, remember=seen)

    def _attachments(self, pid: str, acl: Acl, stats: UpdateStats, force: bool) -> None:
        listed = set()
        for a in self.client.attachments(pid):
            nid = f"{pid}/{a['id']}"
            listed.add(nid)
            self._seen.add(nid)
            self._attachment(nid, pid, a, acl, stats, force)
        for nid in self._attachments_of(pid) - listed:
            self._gone(nid, stats)

    def _attachment(self, nid: str, pid: str, a: dict, acl: Acl, stats: UpdateStats, force: bool) -> None:
        number, title = _number(a), str(a.get("title") or nid)
        prev, was = self.cursor.items.get(nid), self.cursor.skipped.get(nid)
        if not force and prev and prev.get("cf_version") == number:
            self._acl_only(nid, prev, acl, stats)
            return
        if not force and was and was.get("cf_version") == number:
            stats.skip(was.get("reason", "skipped"))  # the same version as before; logged then
            return
        seen = {"cf_version": number, "kind": "attachment", "page": pid, "title": title}
        size = (a.get("extensions") or {}).get("fileSize")
        if isinstance(size, int) and size > self.settings.max_document_bytes:
            self._skip(nid, "too_large", f"{size / 2**20:.1f} MiB is above RAGSTREAM_MAX_DOCUMENT_BYTES", stats, seen)
            return
        media = str((a.get("extensions") or {}).get("mediaType") or a.get("mediaType") or "")
        ctype = content_type_for(title) or (media if media in _SUPPORTED_MEDIA else None)
        if ctype is None:
            self._skip(nid, "unsupported", f"attachment type {media or title.rpartition('.')[2]} is not indexed",
                       stats, seen)
            return
        link = (a.get("_links") or {}).get("download")
        data = self.client.download(link) if link else None
        if data is None:
            self._gone(nid, stats)  # deleted while we looked
            self._seen.discard(nid)
            return
        sha = hashlib.sha256(data).hexdigest()
        try:
            text = extract(data, ctype)
        except UnsupportedContent as exc:
            self._skip(nid, "unsupported", str(exc), stats, seen)
            return
        except RecursionError:
            self._skip(nid, "unsupported", "the document is nested too deeply to extract its text", stats, seen)
            return
        except ExtractionError as exc:
            if nid in self.cursor.items:
                self.publish_delete(nid, stats=stats)  # its indexed text is of an older version
            self.dead_letter(nid, data, exc, stats=stats, sha256=sha)
            self.cursor.skipped[nid].update(seen)
            return
        self._publish(nid, text, acl, stats, force, seen, title=title, uri=self._uri(a), when=_when(a),
                      author=((a.get("version") or {}).get("by") or {}).get("displayName"), content_type=ctype,
                      extra={"page_id": pid, "attachment_id": str(a["id"])}, sha=sha)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _acl_only(self, nid: str, prev: dict | None, acl: Acl, stats: UpdateStats) -> None:
        """Same content; publish the ACL alone to rag.acl if it changed (nothing re-embedded)."""
        if prev is None:
            return
        if prev.get("acl") == list(acl.principals):
            stats.unchanged += 1
            return
        self.publish_acl(nid, acl, stats=stats)

    def _skip(self, nid: str, reason: str, detail: str, stats: UpdateStats, seen: dict) -> None:
        if nid in self.cursor.items:
            self.publish_delete(nid, stats=stats)  # skipped now: its indexed version is stale
        self.record_skip(nid, reason, detail, stats=stats, **seen)

    def _unreadable(self, pid: str, detail: str, stats: UpdateStats) -> None:
        """Restrictions that cannot be read: fail closed — the page and its attachments are
        not (any longer) searchable; tried again at each pass."""
        self._seen.add(pid)
        self._skip(pid, "unreadable", f"{detail}: without them nobody may be granted the page", stats,
                   {"kind": "page"})
        for nid in self._attachments_of(pid):
            self._seen.add(nid)
            self._skip(nid, "unreadable", f"the restrictions of its page {pid} cannot be read", stats,
                       {"kind": "attachment", "page": pid})

    def _gone(self, nid: str, stats: UpdateStats) -> None:
        self.cursor.skipped.pop(nid, None)
        if nid in self.cursor.items:
            self.publish_delete(nid, stats=stats)

    # -- permissions ---------------------------------------------------------------------------
    def _acl(self, content: dict) -> Acl:
        """The page's readers: space permissions ∩ its and its ancestors' read restrictions."""
        ids = [str(a["id"]) for a in content.get("ancestors") or [] if a.get("id")] + [str(content["id"])]
        levels = [self._restriction(cid) for cid in ids]
        return Acl(principals=self.mapper.effective(self._space(), levels, groups_of=self._groups_of,
                                                    members_of=self._members_of))

    def _uid(self, user: dict) -> str | None:
        """A user's identifier as ``user_id`` says, looked up by userKey when absent."""
        uid = user.get(self.config.user_id)
        if uid:
            return str(uid)
        key = user.get("userKey")
        if key and self.config.user_id == "username":
            if key not in self._users:
                try:
                    found = self.client.user_by_key(key)
                except Forbidden:
                    found = None
                self._users[key] = (found or {}).get("username")
            if self._users[key]:
                return self._users[key]
        log.warning("a Confluence user without a usable id left out (fail closed)", source=self.source_id,
                    user_id=self.config.user_id, user_key=key)
        return None

    def _restriction(self, cid: str) -> Level:
        if cid in self._restrictions:
            return self._restrictions[cid]
        read = (self.client.read_restrictions(cid).get("read") or {}).get("restrictions") or {}
        level = Level(origin=f"content {cid}")
        for kind in ("user", "group"):
            block = read.get(kind) or {}
            results = list(block.get("results") or [])
            if isinstance(block.get("size"), int) and block["size"] > len(results):
                results = list(self.client.restriction_subjects(cid, kind))  # truncated: read them all
            for subject in results:
                if kind == "group":
                    if subject.get("name"):
                        level.groups.add(str(subject["name"]))
                elif (uid := self._uid(subject)) is not None:
                    level.users.add(uid)
        self._restrictions[cid] = level
        return level

    def _space(self) -> Level:
        if self._space_level is None:
            level = Level(origin="space")
            for perm in self.client.space_permissions():
                op = perm.get("operation") or {}
                key = op.get("operationKey") or op.get("operation") or op.get("key")
                target = op.get("targetType") or op.get("target")
                if key != "read" or target != "space":
                    continue
                subject = perm.get("subject") or {}
                kind = subject.get("type")
                if kind == "group" and subject.get("name"):
                    level.groups.add(str(subject["name"]))
                elif kind == "user" and (uid := self._uid(subject)) is not None:
                    level.users.add(uid)
                elif kind == "anonymous" and self.config.anonymous_is_public:
                    level.anyone = True
            self._space_level = level
        return self._space_level

    def _groups_of(self, user: str) -> set[str]:
        if user not in self._groups:
            try:
                self._groups[user] = {str(g["name"]) for g in self.client.groups_of(user) if g.get("name")}
            except Forbidden as exc:  # fail closed: the user passes only where named directly
                log.warning("a user's groups cannot be read; only direct grants count", source=self.source_id,
                            error=str(exc))
                self._groups[user] = set()
        return self._groups[user]

    def _members_of(self, group: str) -> list[str]:
        if group not in self._members:
            try:
                self._members[group] = [uid for u in self.client.members(group) if (uid := self._uid(u))]
            except Forbidden as exc:  # fail closed: its members are granted only through other paths
                log.warning("a group's members cannot be read; they are not granted through it",
                            source=self.source_id, error=str(exc))
                self._members[group] = []
        return self._members[group]

    # -- full listing (ragstream verify) -------------------------------------------------------
    def full_listing(self) -> Iterator[ListedDocument | Excluded]:
        """What the space holds now, with the ACL it grants now, against what was published."""
        self._reset_caches()
        acls: dict[str, tuple[str, ...] | None] = {}
        for result in self.client.search(self._cql()):
            c = result.get("content") or {}
            pid = str(c["id"])
            try:
                acls[pid] = self._acl(c).principals
            except Forbidden:
                acls[pid] = None
            yield self._listed(pid, _number(c), acls[pid])
        if self.config.attachments:
            for result in self.client.search(f'space = "{self.config.space}" and type = attachment order by created asc'):
                c = result.get("content") or {}
                pid = str((c.get("container") or {}).get("id") or "")
                if pid in acls:
                    yield self._listed(f"{pid}/{c['id']}", _number(c), acls[pid])

    def _listed(self, nid: str, number: int | None, acl: tuple[str, ...] | None) -> ListedDocument | Excluded:
        doc_id, prev, skip = self.doc_id(nid), self.cursor.items.get(nid), self.cursor.skipped.get(nid)
        if skip is not None and (skip.get("cf_version") == number or skip.get("reason") == "unreadable"):
            kind = "dead_lettered" if skip.get("reason") == "extraction_failed" else "skipped"
            return Excluded(doc_id, kind, f"{skip.get('reason')}: {skip.get('detail', '')}")
        if acl is None:
            return Excluded(doc_id, "skipped", "unreadable: its restrictions cannot be read")
        if prev is None:
            return ListedDocument(doc_id, None, acl, changed_since_published=True)
        return ListedDocument(doc_id, prev["version"], tuple(prev.get("acl", acl)),
                              changed_since_published=prev.get("cf_version") != number or list(acl) != prev.get("acl"))

    # -- live ------------------------------------------------------------------------------------
    def watch(self, stop: threading.Event, on_sync: Callable[[UpdateStats], None] | None = None,
              interval_s: float = 30.0) -> None:
        """A sync every ``interval_s`` (CQL since the cursor's position; a reconciliation every
        ``reconcile_interval_s``) until ``stop``. Throttling or an outage beyond the retry
        budget is logged and tried again at the next interval; refused credentials stop it."""
        while not stop.is_set():
            try:
                stats = self.sync()
            except ConfluenceUnavailable as exc:
                log.error("Confluence sync deferred", source=self.source_id, error=str(exc))
            else:
                if on_sync and stats.published:
                    on_sync(stats)
            stop.wait(interval_s)
