"""The S3 connector (see the package docstring)."""

from __future__ import annotations

import bisect
import contextlib
import fnmatch
import hashlib
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any, Callable, Iterable, Iterator

from pydantic import ValidationError

from producers.extract import ExtractionError, UnsupportedContent, content_type_for, extract
from producers.s3 import notifications
from producers.s3.acl import AclMapping
from producers.s3.client import GONE, Client, ObjectAccessDenied, QueueMissing, S3Unavailable, error_code
from producers.s3.config import S3Config
from ragstream.connector import Capability, Connector, ConnectorError, Cursor, Excluded, ListedDocument, UpdateStats
from ragstream.logging import get_logger
from ragstream.metrics import SOURCE_SKIPPED
from ragstream.publisher import Publisher
from ragstream.settings import Settings
from schemas import topics
from schemas.events import Acl

log = get_logger(__name__)

_TITLE = re.compile(r"^#\s+(.+)$", re.MULTILINE)


@dataclass(frozen=True)
class S3Object:
    """One object as a listing or HEAD sees it (its latest version on a versioned bucket)."""

    key: str
    etag: str
    version_id: str | None
    size: int
    last_modified: datetime


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


class S3Source(Connector):
    """A bucket (under a prefix). See :class:`producers.s3.config.S3Config` for the settings."""

    Config = S3Config

    kind = "s3"
    capabilities = frozenset({Capability.full_listing, Capability.incremental, Capability.permission_sync,
                              Capability.deletes})

    #: Longest SQS long poll per receive (seconds): how fast watch() notices ``stop``.
    poll_wait_s = 2

    def __init__(self, settings: Settings, config: S3Config, source_id: str,
                 publisher: Publisher | None = None) -> None:
        self.config = config
        self.client = Client(config, source_id, settings.retry_budget_s)
        self.acls = AclMapping(config)
        self._versioned: bool | None = None
        super().__init__(settings, source_id, {"bucket": config.bucket, "endpoint": config.endpoint_url or "aws"},
                         publisher)
        # What verify, DLQ replay and DSR need to reopen this source when the sources file does
        # not declare it (names of variables and files, never credentials); saved with the
        # cursor's next commit.
        self.cursor.config.clear()
        self.cursor.config.update(config.model_dump(mode="json"))

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings, source_id: str, identity: dict, publisher: Publisher | None = None
             ) -> S3Source:
        """From the configuration its cursor recorded (:func:`ragstream.connector.open_source`
        prefers the sources file's section when there is one)."""
        saved = Cursor(settings, source_id, cls.kind, identity).config
        try:
            config = S3Config.model_validate(saved)
        except ValidationError:
            raise ConnectorError(f"the S3 source {source_id!r} ({identity.get('bucket')}) has no usable saved "
                                 "configuration in its cursor: declare it in the sources file "
                                 "(RAGSTREAM_SOURCES_FILE)") from None
        return cls(settings, config, source_id, publisher=publisher)

    @classmethod
    def from_config(cls, settings: Settings, source_id: str, config: S3Config,
                    publisher: Publisher | None = None) -> S3Source:
        return cls(settings, config, source_id, publisher=publisher)

    def test_connection(self) -> str:
        c = self.config
        budget = min(self.settings.retry_budget_s, 15.0)  # a test answers quickly
        page = self.client.s3_call("list_objects_v2", budget_s=budget, Bucket=c.bucket, Prefix=c.prefix,
                                   MaxKeys=c.page_size)
        selected = sum(1 for o in page.get("Contents", []) if self.selected(o["Key"]))
        status = self.client.s3_call("get_bucket_versioning", budget_s=budget, Bucket=c.bucket).get("Status") or "off"
        out = (f"s3://{c.bucket}/{c.prefix} at {self.client.endpoint}: {selected}{'+' if page.get('IsTruncated') else ''} "
               f"object(s) selected in the first listing page; versioning {status.lower()}")
        if c.sqs_queue_url:
            attrs = self.client.sqs_call("get_queue_attributes", budget_s=budget, QueueUrl=c.sqs_queue_url,
                                         AttributeNames=["ApproximateNumberOfMessages"]).get("Attributes", {})
            out += f"; notifications from {c.sqs_queue_url} ({attrs.get('ApproximateNumberOfMessages', '?')} waiting)"
        else:
            out += f"; no notification queue: changes are found by listing every {c.reconcile_interval_s:.0f} s"
        return out

    # -- selection ---------------------------------------------------------------------------
    def selected(self, key: str) -> bool:
        if not key.startswith(self.config.prefix) or key.endswith("/"):  # "folder" placeholders
            return False

        def m(patterns: tuple[str, ...]) -> bool:
            return any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(key, p.removeprefix("**/"))
                       for p in patterns)

        return m(self.config.include) and not m(self.config.exclude)

    @property
    def versioned(self) -> bool:
        """The bucket keeps versions (enabled or suspended): list and read by version id."""
        if self._versioned is None:
            status = self.client.s3_call("get_bucket_versioning", Bucket=self.config.bucket).get("Status")
            self._versioned = status in ("Enabled", "Suspended")
        return self._versioned

    def _scope(self) -> dict[str, Any]:
        c = self.config
        return {"bucket": c.bucket, "prefix": c.prefix, "include": list(c.include), "exclude": list(c.exclude)}

    # -- listing -----------------------------------------------------------------------------
    def pages(self, after: str | None = None) -> Iterator[tuple[list[S3Object], str | None]]:
        """The bucket's current objects under the prefix, in key order, one listing page at a
        time, starting after the key ``after``: ``(objects, last key covered)``, the last key
        None on the last page. A versioned bucket is listed with its versions (the latest of
        each key; a key whose latest is a delete marker is absent)."""
        c = self.config
        kwargs: dict[str, Any] = {"Bucket": c.bucket, "Prefix": c.prefix, "MaxKeys": c.page_size}
        while True:
            if self.versioned:
                if after:
                    kwargs["KeyMarker"] = after
                r = self.client.s3_call("list_object_versions", **kwargs)
                objs = [S3Object(v["Key"], _etag(v.get("ETag")), v.get("VersionId"), int(v.get("Size", 0)),
                                 v["LastModified"]) for v in r.get("Versions", []) if v.get("IsLatest")]
                # versions of one key come newest first: the last key's latest was on this page
                hi = r.get("NextKeyMarker") if r.get("IsTruncated") else None
            else:
                if after:
                    kwargs["StartAfter"] = after
                r = self.client.s3_call("list_objects_v2", **kwargs)
                contents = r.get("Contents", [])
                objs = [S3Object(o["Key"], _etag(o.get("ETag")), None, int(o.get("Size", 0)), o["LastModified"])
                        for o in contents]
                hi = contents[-1]["Key"] if r.get("IsTruncated") and contents else None
            objs.sort(key=lambda o: o.key)
            yield objs, hi
            if hi is None:
                return
            after = hi

    def head(self, key: str) -> S3Object | None:
        try:
            r = self.client.s3_call("head_object", Bucket=self.config.bucket, Key=key)
        except ConnectorError:
            raise
        except Exception as exc:
            if error_code(exc) in GONE:
                return None
            raise
        return S3Object(key, _etag(r.get("ETag")), r.get("VersionId"), int(r.get("ContentLength", 0)),
                        r.get("LastModified") or datetime.now(timezone.utc))

    def tags(self, key: str, version_id: str | None) -> dict[str, str]:
        kwargs: dict[str, Any] = {"Bucket": self.config.bucket, "Key": key}
        if version_id and version_id != "null":
            kwargs["VersionId"] = version_id
        try:
            r = self.client.s3_call("get_object_tagging", **kwargs)
        except ConnectorError:
            raise
        except Exception as exc:
            if error_code(exc) in GONE:
                return {}  # gone meanwhile: its deletion is noticed by the next look at it
            raise
        return {t["Key"]: t["Value"] for t in r.get("TagSet", [])}

    def acl_for(self, key: str, version_id: str | None = None) -> Acl:
        return self.acls.acl_for(key, self.tags(key, version_id) if self.acls.needs_tags else None)

    # -- sync ---------------------------------------------------------------------------------
    def sync(self, native_ids: Iterable[str] | None = None, *, force: bool = False,
             progress: Callable[[int], None] | None = None,
             on_publish: Callable[[str, int], None] | None = None) -> UpdateStats:
        """Publish what changed among the keys ``native_ids`` (None: a reconciliation pass over
        the whole listing, deletions included; it resumes where an interrupted pass stopped)."""
        return self._run(native_ids, force=force, progress=progress, on_publish=on_publish)

    def _run(self, native_ids: Iterable[str] | None, *, force: bool = False,
             progress: Callable[[int], None] | None = None, on_publish: Callable[[str, int], None] | None = None,
             ack: str | None = None) -> UpdateStats:
        stats = UpdateStats()
        self._on_publish = on_publish
        try:
            if native_ids is None:
                self._full_pass(stats, force, progress)
            else:
                for key in sorted(set(native_ids)):
                    obj = self.head(key) if self.selected(key) else None
                    if obj is None:
                        self._gone(key, stats)
                    elif not self._consider(obj, stats, force) and key in self.cursor.items:
                        self.publish_delete(key, stats=stats)  # skipped now: its indexed version is stale
                    if progress:
                        progress(1)
            if ack is not None:
                self.cursor.advance("notifications", ack)
        except BaseException:
            with contextlib.suppress(Exception):
                super().finish(UpdateStats())  # keep what was acknowledged before the failure
            raise
        return self.finish(stats)

    def _resume_point(self) -> str | None:
        """Where an interrupted pass stopped (None: from the start). A position that does not
        belong to this listing (another prefix or selection, or not a position at all) is
        dropped with a warning: the pass starts over, and nothing is published twice since
        unchanged objects are recognised by their ETag."""
        pos = self.cursor.position.get("listing")
        if pos is None:
            return None
        if (not isinstance(pos, dict) or pos.get("scope") != self._scope()
                or not isinstance(pos.get("after"), (str, type(None)))):
            log.warning("listing position invalid or of another selection; reconciling from the start",
                        source=self.source_id)
            self.cursor.position.pop("listing", None)
            return None
        return pos.get("after")

    def _full_pass(self, stats: UpdateStats, force: bool, progress: Callable[[int], None] | None) -> None:
        self._versioned = None  # versioning may have been switched on since
        after = self._resume_point()
        known = sorted(set(self.cursor.items) | set(self.cursor.skipped))
        lo = after
        for objs, hi in self.pages(after):
            listed = set()
            for obj in objs:
                if not self.selected(obj.key):
                    continue
                listed.add(obj.key)
                if not self._consider(obj, stats, force) and obj.key in self.cursor.items:
                    self.publish_delete(obj.key, stats=stats)
                if progress:
                    progress(1)
            # what was published or skipped before and is no longer listed in (lo, hi]: gone
            start = 0 if lo is None else bisect.bisect_right(known, lo)
            end = len(known) if hi is None else bisect.bisect_right(known, hi)
            for key in known[start:end]:
                if key not in listed:
                    self._gone(key, stats)
            self.cursor.advance("listing", {"scope": self._scope(), "after": hi,
                                            **({} if hi else {"completed_at": datetime.now(timezone.utc).isoformat()})})
            super().finish(stats)  # one page at a time: a crash resumes after the last committed page
            lo = hi

    def _gone(self, key: str, stats: UpdateStats) -> None:
        self.cursor.skipped.pop(key, None)
        if key in self.cursor.items:
            self.publish_delete(key, stats=stats)

    def _consider(self, obj: S3Object, stats: UpdateStats, force: bool) -> bool:
        """Publish the object if it changed; False if it is skipped, dead-lettered or gone."""
        key, items, skipped = obj.key, self.cursor.items, self.cursor.skipped
        prev = items.get(key)
        try:
            if not force and prev and prev.get("etag") == obj.etag:
                if obj.version_id:
                    prev["version_id"] = obj.version_id  # same bytes, a new version (or re-read id)
                self._acl_only(key, prev, obj.version_id, stats)
                return True
            was = skipped.get(key, {})
            if not force and was.get("etag") == obj.etag:
                stats.skip(was.get("reason", "unreadable"))  # the same bytes as before; logged then
                return False
            seen = {"etag": obj.etag, "version_id": obj.version_id, "size": obj.size}
            if obj.size > self.settings.max_document_bytes:
                return self._skip(key, "too_large", f"{_mib(obj.size)} is above RAGSTREAM_MAX_DOCUMENT_BYTES "
                                  f"({_mib(self.settings.max_document_bytes)}); raise it to index this object",
                                  stats, seen)
            ctype = content_type_for(key)
            if ctype is None:  # not even downloaded
                return self._skip(key, "unsupported", f"file type {PurePosixPath(key).suffix or '(none)'} "
                                  "is not indexed", stats, seen)
            got = self.client.get_bytes(key, obj.version_id if self.versioned else None)
            if got is None:
                self.cursor.skipped.pop(key, None)
                return False  # deleted while we looked: published as deleted by the caller
            data, resp = got
        except ObjectAccessDenied as exc:  # no ETag kept: tried again each pass (a policy may change)
            return self._skip(key, "unreadable", str(exc), stats, {"version_id": obj.version_id})
        etag, version_id = _etag(resp.get("ETag")) or obj.etag, resp.get("VersionId") or obj.version_id
        seen = {"etag": etag, "version_id": version_id, "size": len(data)}
        sha = hashlib.sha256(data).hexdigest()
        if not force and prev and prev.get("sha256") == sha:
            prev.update(etag=etag, version_id=version_id)  # rewritten with the same bytes
            self._acl_only(key, prev, version_id, stats)
            return True
        try:
            text = extract(data, ctype)
        except UnsupportedContent as exc:
            return self._skip(key, "unsupported", str(exc), stats, seen)
        except RecursionError:
            return self._skip(key, "unsupported", "the document is nested too deeply to extract its text",
                              stats, seen)
        except ExtractionError as exc:
            self._skip(key, "extraction_failed", str(exc), None, seen)
            stats.failed += 1
            self.publisher.dead_letter("ingest", topic=topics.CHANGES, partition=-1, offset=-1, key=self.doc_id(key),
                                       value=data if len(data) <= self.settings.inline_max_bytes else b"", error=exc)
            return False
        text_bytes = len(text.encode("utf-8", errors="replace"))
        if text_bytes > self.settings.max_text_bytes:
            return self._skip(key, "text_too_large", f"its text is {_mib(text_bytes)}, above RAGSTREAM_MAX_TEXT_BYTES "
                              f"({_mib(self.settings.max_text_bytes)}); raise it to index this object", stats, seen)
        try:
            acl = self.acl_for(key, version_id)
        except ObjectAccessDenied as exc:
            return self._skip(key, "unreadable", f"its tags cannot be read ({exc}); without them its ACL is "
                              "unknown", stats, seen)
        title = _TITLE.search(text)
        self.publish_upsert(key, text, stats=stats, acl=acl, content_type=ctype,
                            title=title.group(1).strip() if title else PurePosixPath(key).name,
                            uri=f"s3://{self.config.bucket}/{key}", changed_at=obj.last_modified,
                            # synced_at: an object published again unchanged (a lost cursor, a
                            # reread) must not look the same to the index stage, which otherwise
                            # keeps its rows at the old version (verify: "rows of version(s) ...")
                            extra={"bucket": self.config.bucket, "key": key, "etag": etag,
                                   "version_id": version_id or "", "size": str(len(data)),
                                   "synced_at": datetime.now(timezone.utc).isoformat()},
                            force=True, fingerprint=sha, remember=seen)
        return True

    def _acl_only(self, key: str, prev: dict, version_id: str | None, stats: UpdateStats) -> None:
        """Same content; if its ACL changed (tags, or the mapping in the config), publish only
        the new ACL to ``rag.acl``: the index rewrites the rows' ACL, nothing is re-embedded."""
        try:
            acl = self.acl_for(key, version_id)
        except ObjectAccessDenied:
            acl = Acl(principals=())  # cannot tell any more: fail closed
        if prev.get("acl") == list(acl.principals):
            stats.unchanged += 1
            return
        self.publish_acl(key, acl, stats=stats)

    def _skip(self, key: str, reason: str, detail: str, stats: UpdateStats | None, seen: dict) -> bool:
        SOURCE_SKIPPED.labels(self.source_id, reason).inc()
        log.warning("object skipped", doc_id=self.doc_id(key), reason=reason, detail=detail)
        # The ETag lets the next pass skip the same bytes without reading them again.
        self.cursor.skipped[key] = {"reason": reason, "detail": detail, **seen}
        if stats is not None:
            stats.skip(reason)
        return False

    # -- full listing (ragstream verify) -----------------------------------------------------
    def full_listing(self) -> Iterator[ListedDocument | Excluded]:
        """What the bucket holds now, against what this source last published. Reads no
        object (ETags say whether the content changed); reads tags if the ACL mapping uses them."""
        for objs, _ in self.pages():
            for obj in objs:
                if not self.selected(obj.key):
                    continue
                doc_id, prev, skip = self.doc_id(obj.key), self.cursor.items.get(obj.key), self.cursor.skipped.get(obj.key)
                if skip is not None and (skip.get("etag") == obj.etag or skip["reason"] == "unreadable"):
                    kind = "dead_lettered" if skip["reason"] == "extraction_failed" else "skipped"
                    yield Excluded(doc_id, kind, f"{skip['reason']}: {skip.get('detail', '')}")
                    continue
                try:
                    acl = list(self.acl_for(obj.key, obj.version_id).principals)
                except ObjectAccessDenied:
                    acl = []
                if prev is None:
                    yield ListedDocument(doc_id, None, tuple(acl), changed_since_published=True)
                    continue
                yield ListedDocument(doc_id, prev["version"], tuple(prev.get("acl", acl)),
                                     changed_since_published=prev.get("etag") != obj.etag or prev.get("acl") != acl)

    # -- live ---------------------------------------------------------------------------------
    def watch(self, stop: threading.Event, on_sync: Callable[[UpdateStats], None] | None = None,
              interval_s: float = 30.0) -> None:
        """Follow the bucket until ``stop`` is set.

        With ``sqs_queue_url``: a reconciliation pass first (changes made while nothing
        watched, or whose notifications expired), then the queue's notifications, each
        batch synced by key and its messages deleted only once every event it caused was
        acknowledged (otherwise they come back after the queue's visibility timeout); a
        reconciliation pass every ``reconcile_interval_s`` anyway, and at once after a
        message that could not be read. Without a queue, or if it does not exist: a
        reconciliation pass every ``interval_s``. Throttling or an outage that outlives the
        retry budget is logged and tried again; refused credentials stop the watch."""
        queue = self.config.sqs_queue_url
        next_pass = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_pass:
                self._guarded(self.sync, on_sync)
                next_pass = time.monotonic() + (self.config.reconcile_interval_s if queue else interval_s)
            if not queue:
                stop.wait(max(next_pass - time.monotonic(), 0.0))
                continue
            try:
                msgs = self.client.sqs_call("receive_message", QueueUrl=queue, MaxNumberOfMessages=10,
                                            WaitTimeSeconds=self.poll_wait_s).get("Messages", [])
            except QueueMissing as exc:
                log.error("notification queue missing; reconciling by listing only", source=self.source_id,
                          error=str(exc))
                queue, next_pass = None, time.monotonic() + interval_s
                continue
            except S3Unavailable as exc:
                log.error("notification queue unavailable; trying again", source=self.source_id, error=str(exc))
                stop.wait(min(interval_s, 5.0))
                continue
            if not msgs:
                continue
            parsed = notifications.parse([m.get("Body", "") for m in msgs], self.config.bucket)
            if parsed.unreadable:
                log.warning("unreadable notification(s); reconciling", source=self.source_id, count=parsed.unreadable)
                next_pass = 0.0
            self._guarded(lambda: self._notified(parsed.keys, msgs), on_sync)

    def _notified(self, keys: set[str], msgs: list[dict]) -> UpdateStats:
        token = uuid.uuid4().hex
        stats = self._run(keys, ack=token)
        if self.cursor.position.get("notifications") != token:
            log.warning("events not acknowledged; notifications left in the queue (redelivered)",
                        source=self.source_id, keys=len(keys))
            return stats
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]
        failed = self.client.sqs_call("delete_message_batch", QueueUrl=self.config.sqs_queue_url,
                                      Entries=entries).get("Failed", [])
        if failed:  # redelivered later and synced again: harmless
            log.warning("notifications not deleted", source=self.source_id, count=len(failed))
        return stats

    def _guarded(self, run: Callable[[], UpdateStats], on_sync: Callable[[UpdateStats], None] | None) -> None:
        try:
            stats = run()
        except S3Unavailable as exc:
            log.error("S3 sync deferred", source=self.source_id, error=str(exc))
            return
        if on_sync and stats.published:
            on_sync(stats)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
